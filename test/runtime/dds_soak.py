"""The DDS soak's moving parts: the mixed stream of clouds, the publisher process and the figures.

    python test/runtime/dds_soak.py publish --count N --manifest FILE [--seed S] [--rate-hz 10] [--huge-every K]
                                            [--malformed-tail M]
    python test/runtime/dds_soak.py leaky-node LEAK_BYTES [segment_node arguments ...]

`publish` sends `stream(count)` to the node's input at `rate_hz` with sensor-data QoS (best effort, keep
last 1, as a LiDAR driver), each cloud's ``header.frame_id`` = ``soak:<index>:<kind>`` and its stamp = the
wall-clock time of publishing, and writes a JSON manifest (index, kind, valid, points, stamp) when done.
With `--malformed-tail M` the stream ends with M malformed clouds, TAIL_GAP_S apart: keep-last-1 drops every
cloud the node's callback is too busy to take, so under load the few malformed clouds of the stream can all be
dropped; the last cloud of a stream is never replaced, so at least the last of the tail reaches the callback.
`leaky-node` is segment_node with a leak of LEAK_BYTES per cloud: the control that shows the soak's RSS
bound catches such a leak. Both run in processes of their own; test/runtime/test_soak_node.py starts them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

INPUT_TOPIC = "/soak/points"
KINDS_VALID = ("small", "empty", "all-nan", "one-point", "huge", "big-endian", "empty-tall")
KINDS_MALFORMED = ("truncated", "no-z", "datatype-42", "overlap", "point_step-2**31", "point_step-max",
                   "count-max", "offset-max", "datatype-255", "row_step-max")
HUGE_POINTS = 300_000  # above the default point cap (200,000): the capped subsample runs the network
WARMUP_HUGE_AT = 10  # the first huge cloud comes early: the heap's high-water mark before the RSS fit
UINT32_MAX = 2**32 - 1
TAIL_GAP_S = 2.0  # seconds between the malformed clouds of the tail (longer than a small cloud's processing)
#: point counts [low, high) of the "small" valid clouds. From 1,024 points on, every per-point numpy buffer
#: of a cloud (the 1-byte masks the smallest) is at least 1 KiB, above numpy's small-buffer cache: numpy keeps
#: up to 7 freed data buffers of each size under 1 KiB for reuse (its allocator, numpy/_core/src/multiarray/
#: alloc.c: 1,024 buckets x 7; 3.8 MB when full, `fill_numpy_small_buffer_cache`). Clouds of fresh sizes
#: under that fill it over thousands of clouds: growth of the heap in use that ends, but that a slope over a
#: soak cannot tell from a leak (benchmarks/heap_growth.py over 1,200 fresh clouds: +1,009, 1,009, 784, 750 B
#: per cloud with 300-3,000 points; 44, 27, 17, 0 B with these). test_soak.py covers clouds under 1,024
#: points with the cache full.
SMALL_POINTS = (1024, 3000)
#: numpy's data cache (alloc.c): sizes under this many bytes are kept, up to NUMPY_CACHE_PER_SIZE each
NUMPY_CACHED_BELOW_BYTES = 1024
NUMPY_CACHE_PER_SIZE = 7


@dataclass(frozen=True)
class Sent:
    """One published cloud, as the manifest lists it."""

    index: int
    kind: str
    valid: bool
    points: int  # height * width of the message
    stamp_ns: int


def frame_id(index: int, kind: str) -> str:
    return f"soak:{index}:{kind}"


def parse_frame_id(value: str) -> tuple[int, str]:
    _, index, kind = value.split(":", 2)
    return int(index), kind


def kind_of(index: int, rng: np.random.Generator, huge_every: int) -> str:
    """The kind of cloud `index`: mostly small valid ones, every other kind a few percent."""
    if huge_every and (index == WARMUP_HUGE_AT or (index > WARMUP_HUGE_AT and index % huge_every == 0)):
        return "huge"
    roll = rng.random()
    if roll < 0.05:
        return str(rng.choice(KINDS_MALFORMED))
    others = [k for k in KINDS_VALID if k not in ("small", "huge")]
    if roll < 0.05 + 0.02 * len(others):
        return others[int((roll - 0.05) / 0.02)]
    return "small"


def fill_numpy_small_buffer_cache() -> None:
    """Fill numpy's cache of freed data buffers under 1 KiB (every size, to its limit), so that what a process
    allocates afterwards moves the heap in use only by what it keeps."""
    for size in range(1, NUMPY_CACHED_BELOW_BYTES):
        buffers = [np.empty(size, np.uint8) for _ in range(NUMPY_CACHE_PER_SIZE + 1)]
        del buffers


def xyz_in_grid(rng: np.random.Generator, n: int) -> np.ndarray:
    xyz = rng.uniform(-40, 40, (n, 3)).astype(np.float32)
    xyz[:, 2] = rng.uniform(-3, 1.5, n)  # inside the voxel grid
    return xyz


def build(kind: str, rng: np.random.Generator, small_points: tuple[int, int] = SMALL_POINTS) -> Any:
    """An rclpy PointCloud2 of `kind` (header left default); "small" ones have [low, high) `small_points`."""
    from sensor_msgs.msg import PointCloud2, PointField

    from elite_ros.cloud import make_cloud

    def cloud(n: int, *, intensity: bool = True, big_endian: bool = False, xyz: np.ndarray | None = None) -> Any:
        points = xyz_in_grid(rng, n) if xyz is None else xyz
        fields = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2]}
        if intensity:
            fields["intensity"] = rng.uniform(0, 1, n).astype(np.float32)
        return make_cloud(fields, PointCloud2().header, like=PointCloud2(), is_bigendian=big_endian)

    if kind == "small":
        return cloud(int(rng.integers(*small_points)))
    if kind == "huge":
        return cloud(HUGE_POINTS)
    if kind == "empty":
        return cloud(0)
    if kind == "all-nan":
        return cloud(64, xyz=np.full((64, 3), np.nan, np.float32))
    if kind == "one-point":
        return cloud(1, xyz=np.array([[5.0, 1.0, -1.0]], np.float32))
    if kind == "big-endian":
        return cloud(500, big_endian=True)
    good = cloud(40)
    fields = list(good.fields)

    def field(i: int, **changes: int) -> Any:
        f = fields[i]
        values = {"name": f.name, "offset": f.offset, "datatype": f.datatype, "count": f.count, **changes}
        return PointField(**values)

    if kind == "empty-tall":  # valid: 2**32 - 1 rows of no points
        good.height, good.width, good.row_step, good.data = UINT32_MAX, 0, 0, b""
    elif kind == "truncated":
        good.data = bytes(good.data)[:-7]
    elif kind == "no-z":
        good.fields = fields[:2]
    elif kind == "datatype-42":
        good.fields = [*fields[:2], field(2, datatype=42), fields[3]]
    elif kind == "overlap":
        good.point_step = 4
    elif kind == "point_step-2**31":
        good.point_step, good.width, good.row_step, good.data = 2**31, 0, 0, b""
    elif kind == "point_step-max":
        good.point_step, good.row_step = UINT32_MAX, UINT32_MAX
    elif kind == "count-max":
        good.fields = [*fields[:3], field(3, count=UINT32_MAX)]
    elif kind == "offset-max":
        good.fields = [*fields[:3], field(3, offset=UINT32_MAX)]
    elif kind == "datatype-255":
        good.fields = [field(0, datatype=255), *fields[1:]]
    elif kind == "row_step-max":
        good.row_step = UINT32_MAX
    else:
        raise ValueError(kind)
    return good


def stream(count: int, seed: int = 0, huge_every: int = 0,
           small_points: tuple[int, int] = SMALL_POINTS) -> Iterator[tuple[str, Any]]:
    """(kind, rclpy PointCloud2) for `count` clouds, the same for the same seed (and `small_points`)."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        kind = kind_of(index, rng, huge_every)
        yield kind, build(kind, rng, small_points)


# -------------------------------------------------------------------------------------------- figures
@dataclass(frozen=True)
class Sample:
    """One look at the node: wall-clock ns, clouds its callback handled so far, resident bytes (RSS, read from
    outside), and malloc's bytes in use between scans (its /diagnostics `heap_in_use_bytes`)."""

    wall_ns: int
    handled: int
    rss: int
    heap: int


def least_squares_slope(samples: list[Sample], memory: str = "rss") -> float:
    """Ordinary least-squares slope of `memory` (a Sample field) over clouds handled (bytes per cloud)."""
    x = np.asarray([s.handled for s in samples], np.float64)
    y = np.asarray([getattr(s, memory) for s in samples], np.float64)
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def leak_slope(samples: list[Sample], busy: list[tuple[int, int]], memory: str = "rss") -> float:
    """Bytes of `memory` (a Sample field) per cloud handled: the median of the pairwise slopes between samples
    of the same stretch (Theil-Sen within stretches).

    `busy`: (start, end) wall-clock ns of each huge cloud, from its publication to shortly after its answer.
    A huge cloud raises the allocator's high-water mark once (a step, not a slope) and its temporaries swell
    RSS while it runs, so its window is left out and splits the samples into stretches; the median is
    robust to the rarer steps of the heap between them. A leak grows RSS with every cloud: every pair sees it.
    """
    stretches: list[list[Sample]] = [[]]
    windows = sorted(busy)
    for sample in sorted(samples, key=lambda s: s.wall_ns):
        while windows and sample.wall_ns >= windows[0][1]:
            windows.pop(0)
            stretches.append([])
        if windows and sample.wall_ns >= windows[0][0]:
            continue
        stretches[-1].append(sample)
    slopes = []
    for stretch in stretches:
        x = np.asarray([s.handled for s in stretch], np.float64)
        y = np.asarray([getattr(s, memory) for s in stretch], np.float64)
        i, j = np.triu_indices(x.size, k=1)
        moved = x[j] > x[i]
        slopes.append((y[j] - y[i])[moved] / (x[j] - x[i])[moved])
    pooled = np.concatenate(slopes) if slopes else np.zeros(0)
    return float(np.median(pooled)) if pooled.size else float("nan")


def percentiles_ms(latencies_ms: list[float]) -> dict[str, float]:
    if not latencies_ms:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {"p50_ms": float(np.percentile(latencies_ms, 50)), "p99_ms": float(np.percentile(latencies_ms, 99))}


# -------------------------------------------------------------------------------------------- processes
def publish(count: int, manifest: str, seed: int, rate_hz: float, huge_every: int, malformed_tail: int = 0) -> None:
    """Wait for the node's subscription, send the stream at `rate_hz` and then the malformed tail (see the
    module docstring), write the manifest."""
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("soak_publisher")
    publisher = node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    deadline = time.monotonic() + 120
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise SystemExit("soak publisher: the node never subscribed")
        time.sleep(0.05)
    time.sleep(1.0)  # discovery settles on both sides
    sent: list[Sent] = []
    period_s = 1.0 / rate_hz
    start = time.monotonic()

    def send(index: int, kind: str, msg: Any) -> None:
        stamp_ns = time.time_ns()
        msg.header.frame_id = frame_id(index, kind)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        publisher.publish(msg)
        sent.append(Sent(index, kind, kind in KINDS_VALID, int(msg.height) * int(msg.width), stamp_ns))

    for index, (kind, msg) in enumerate(stream(count, seed, huge_every)):
        next_at = start + index * period_s
        time.sleep(max(0.0, next_at - time.monotonic()))
        send(index, kind, msg)
    late_s = time.monotonic() - start - (count - 1) * period_s
    tail_rng = np.random.default_rng([seed, 1])
    for i in range(malformed_tail):
        time.sleep(TAIL_GAP_S)
        kind = KINDS_MALFORMED[i % len(KINDS_MALFORMED)]
        send(count + i, kind, build(kind, tail_rng))
    with open(manifest + ".tmp", "w") as out:
        json.dump({"sent": [asdict(s) for s in sent], "late_s": late_s, "rate_hz": rate_hz}, out)
    os.replace(manifest + ".tmp", manifest)
    time.sleep(1.0)  # let the last samples leave before the participant goes
    node.destroy_node()
    rclpy.shutdown()


def leaky_node(leak_bytes: int, args: list[str]) -> int:
    """segment_node, keeping `leak_bytes` of touched memory per cloud given to the handler."""
    from elite_ros import node
    from elite_ros.handler import SegmentationHandler

    kept: list[bytes] = []
    process = SegmentationHandler.process

    def leaking(self: SegmentationHandler, *a: Any, **k: Any) -> Any:
        kept.append(os.urandom(leak_bytes))
        return process(self, *a, **k)

    SegmentationHandler.process = leaking  # type: ignore[method-assign]
    return node.main(args)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dds_soak.py")
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish")
    pub.add_argument("--count", type=int, required=True)
    pub.add_argument("--manifest", required=True)
    pub.add_argument("--seed", type=int, default=0)
    pub.add_argument("--rate-hz", type=float, default=10.0)
    pub.add_argument("--huge-every", type=int, default=0)
    pub.add_argument("--malformed-tail", type=int, default=0)
    leak = commands.add_parser("leaky-node")
    leak.add_argument("leak_bytes", type=int)
    leak.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "publish":
        publish(args.count, args.manifest, args.seed, args.rate_hz, args.huge_every, args.malformed_tail)
        return 0
    return leaky_node(args.leak_bytes, ["segment_node", *args.rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
