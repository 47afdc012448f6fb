#!/usr/bin/env python3
"""Where the node's heap in use grows: the handler in this process over the DDS soak's mixed stream.

The slow DDS soak (test/runtime/test_soak_node.py -m slow) measures the node's malloc'd bytes in use
(`elite_ros.heap.heap_in_use`) growing by some hundred bytes per cloud. This script takes DDS and the
node out of it: `SegmentationHandler.process` on the soak's clouds (test/runtime/dds_soak.py, no huge
ones), in one of two streams:

- ``fresh``: every cloud new (the soak's case);
- ``repeat``: the first `--distinct` clouds over and over (same shapes and contents).

It prints JSON: heap in use every `--every` clouds after the warm-up, the growth per cloud of each
interval, and (``--tracemalloc``) the Python allocations that grew most, so native growth (torch, glibc)
can be told from Python objects.

What it found: clouds of fresh sizes under 1,024 points grow the heap until numpy's cache of freed
sub-KiB data buffers is full (7 per size, 3.8 MB; see dds_soak.SMALL_POINTS), then stop. The soak's
clouds now start at 1,024 points; `--small-points 300 3000` gives the earlier stream, `--fill-numpy-cache`
fills that cache before the warm-up:

    .venv/bin/python benchmarks/heap_growth.py --clouds 1200 --every 300 --small-points 300 3000
    .venv/bin/python benchmarks/heap_growth.py --clouds 1200 --every 300 --small-points 300 3000 --fill-numpy-cache
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "runtime"))  # dds_soak: the soak's cloud stream

import dds_soak  # noqa: E402

from elite_ros.handler import SegmentationHandler  # noqa: E402
from elite_ros.heap import heap_in_use  # noqa: E402
from elite_ros.params import SegmentParams  # noqa: E402
from elite_ros.segmenter import Segmenter  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clouds", type=int, default=2000, help="clouds processed after the warm-up")
    parser.add_argument("--warmup", type=int, default=100, help="clouds processed first, not measured")
    parser.add_argument("--stream", choices=("fresh", "repeat"), default="fresh")
    parser.add_argument("--distinct", type=int, default=200, help="clouds of the repeat stream")
    parser.add_argument("--every", type=int, default=200, help="clouds between heap readings")
    parser.add_argument("--tracemalloc", action="store_true", help="also diff Python allocations")
    parser.add_argument("--small-points", type=int, nargs=2, default=dds_soak.SMALL_POINTS, metavar=("LOW", "HIGH"),
                        help=f"point counts [LOW, HIGH) of the small valid clouds (default {dds_soak.SMALL_POINTS})")
    parser.add_argument("--fill-numpy-cache", action="store_true",
                        help="fill numpy's cache of freed sub-KiB buffers first")
    args = parser.parse_args()
    if args.fill_numpy_cache:
        dds_soak.fill_numpy_small_buffer_cache()

    handler = SegmentationHandler(Segmenter.from_checkpoint(None, device="cpu"), SegmentParams())
    total = args.warmup + args.clouds
    count = args.distinct if args.stream == "repeat" else total
    clouds = [msg for _, msg in dds_soak.stream(count, seed=0, small_points=tuple(args.small_points))]
    readings, snapshot = [], None
    for index in range(total):
        handler.process(clouds[index % len(clouds)])
        done = index + 1 - args.warmup
        if done == 0 and args.tracemalloc:
            tracemalloc.start()
            snapshot = tracemalloc.take_snapshot()
        if done >= 0 and done % args.every == 0:
            gc.collect()
            readings.append(heap_in_use())
    result = {
        "stream": args.stream, "small_points": list(args.small_points),
        "numpy_cache_filled_first": args.fill_numpy_cache, "clouds": args.clouds, "warmup": args.warmup,
        "every": args.every,
        "heap_in_use_bytes": readings,
        "growth_bytes_per_cloud": [round((b - a) / args.every, 1) for a, b in zip(readings, readings[1:])],
        "mean_growth_bytes_per_cloud": round((readings[-1] - readings[0]) / args.clouds, 1),
    }
    if snapshot is not None:
        grown = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
        result["python_growth_bytes"] = sum(stat.size_diff for stat in grown)
        result["python_top"] = [str(stat) for stat in grown[:8]]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
