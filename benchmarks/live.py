#!/usr/bin/env python3
"""The node as a car runs it: its own process, a 10 Hz publisher of 2 MB clouds and a subscriber, over DDS.

Three processes on this computer (DDS restricted to the loopback, a random domain, logs in a temp folder):

- the node: ``python -m elite_ros.node`` with the shipped params file, as segment.launch.py starts it:
  the shipped Fast DDS profile (config/fastdds.xml) in its environment (`--dds-profile`: both processes
  that publish large clouds, `publisher` only, or `none`: Fast DDS's defaults);
  `--output-depth N` overrides the outputs' history depth through the node's QoS-override parameters;
  `--tiny` gives it an 8-channel untrained student (same code path, a fraction of the network's work)
  so that outputs leave at several Hz even on a busy CPU: for measuring the transport and the QoS;
- a publisher: the KITTI seq-00 scan 000000 (124,668 points, x y z intensity float32 = 1.99 MB) at
  `--rate` Hz as a best-effort (sensor-data QoS) PointCloud2 stamped with the wall clock at publishing,
  with the same DDS profile (the writer's shared-memory segment is what carries a large sample);
- a subscriber: the three outputs (reliable, keep last 10, as RViz subscribes), /diagnostics, and the
  input clouds themselves (best effort), to count what the publisher's clouds lose in transport.

It runs `--seconds` of publishing, waits `--grace` seconds for the last outputs, and prints JSON: clouds
sent, and received by the subscriber; scans the node processed (its own count, from its last diagnostics
report) and received per output (distinct stamps), with `missing` = processed - received; end-to-end
latency per output (receive time - header stamp, ms: p50 / p95 / max); the diagnostics period while
scans ran (gaps between the node's reports as the subscriber received them: p50 / max, and how many
exceeded 1.5 s) and the levels and messages it reported; the machine's load average at start and end.

    .venv/bin/python benchmarks/live.py --seconds 60
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELITE_ROS_DATA", REPO.parent / "shared" / "data"))
DEFAULT_SCAN = DATA / "kitti_odometry" / "seq00" / "000000.bin"
INPUT_TOPIC = "/lidar/points"
OUTPUTS = ("segmentation", "visualization", "filtered")
NODE_NAME = "segment_node"
SUBSCRIBER_DEPTH = 10  # RViz's default queue for PointCloud2 displays
LATE_GAP_S = 1.5  # the diagnostics goal: never more than this apart


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    array = np.asarray(values)
    return {"p50": round(float(np.percentile(array, 50)), 1), "p95": round(float(np.percentile(array, 95)), 1),
            "max": round(float(array.max()), 1)}


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


# ------------------------------------------------------------------------------------------ roles
def run_publisher(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2

    from elite_ros.cloud import make_cloud

    rclpy.init()
    node = rclpy.create_node("live_publisher")
    publisher = node.create_publisher(PointCloud2, INPUT_TOPIC, qos_profile_sensor_data)
    points = np.fromfile(args.scan, dtype=np.float32).reshape(-1, 4)
    fields = {"x": points[:, 0], "y": points[:, 1], "z": points[:, 2], "intensity": points[:, 3]}
    msg = make_cloud(fields, PointCloud2().header, like=PointCloud2())
    msg.header.frame_id = "velodyne"
    deadline = time.monotonic() + 60.0
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    period = 1.0 / args.rate
    sent, start = 0, time.monotonic()
    next_time = start
    while time.monotonic() - start < args.seconds:
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
        publisher.publish(msg)
        sent += 1
        next_time += period
        rclpy.spin_once(node, timeout_sec=max(0.0, next_time - time.monotonic()))
    summary = {"sent": sent, "bytes_per_cloud": len(msg.data), "published_s": round(time.monotonic() - start, 2)}
    print(json.dumps(summary), flush=True)
    node.destroy_node()
    rclpy.shutdown()


def run_subscriber(args: argparse.Namespace) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import PointCloud2

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)  # stopped through a file, never half-way
    node = rclpy.create_node("live_subscriber")
    stamps: dict[str, set[int]] = {o: set() for o in OUTPUTS}
    latency_ms: dict[str, list[float]] = {o: [] for o in OUTPUTS}
    reports: list[dict] = []

    def on_output(name: str, msg) -> None:
        received = time.time_ns()
        stamp = stamp_ns(msg.header)
        stamps[name].add(stamp)
        latency_ms[name].append((received - stamp) / 1e6)

    def on_diagnostics(msg) -> None:
        for status in msg.status:
            if status.name.startswith(NODE_NAME):
                reports.append({"t": time.monotonic(), "level": int.from_bytes(status.level, "little")
                                if isinstance(status.level, bytes) else int(status.level),
                                "message": status.message, "values": {kv.key: kv.value for kv in status.values}})

    qos = QoSProfile(depth=SUBSCRIBER_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    subscriptions = [node.create_subscription(PointCloud2, f"/{NODE_NAME}/output/pointcloud/{o}",
                                              lambda m, o=o: on_output(o, m), qos) for o in OUTPUTS]
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    inputs: set[int] = set()
    node.create_subscription(PointCloud2, INPUT_TOPIC, lambda m: inputs.add(stamp_ns(m.header)),
                             qos_profile_sensor_data)
    stop = Path(args.result).with_suffix(".stop")  # the orchestrator creates it when the run is over
    deadline = time.monotonic() + 300.0  # the node loads its model before it spins and reports
    while not (reports and all(s.get_publisher_count() > 0 for s in subscriptions)) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    print("READY", flush=True)
    while not stop.exists():
        rclpy.spin_once(node, timeout_sec=0.1)
    Path(args.result).write_text(json.dumps({"stamps": {o: sorted(s) for o, s in stamps.items()},
                                             "latency_ms": latency_ms, "reports": reports, "inputs": len(inputs)}))
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------------------------------ orchestration
def ros_environment(log_dir: str, domain: int, profile: bool) -> dict[str, str]:
    from elite_ros.dds import PROFILE_ENVIRONMENT, default_profile, profile_environment

    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain), ROS_LOG_DIR=log_dir,
               PYTHONUNBUFFERED="1")
    for name in PROFILE_ENVIRONMENT:
        env.pop(name, None)
    if profile:
        env.update(profile_environment(default_profile()))
    return env


def node_command(args: argparse.Namespace) -> list[str]:
    from elite_ros.params import default_params_file

    command = [sys.executable, "-m", "elite_ros.node", "--ros-args", "--params-file", str(default_params_file()),
               "-r", f"~/input/pointcloud:={INPUT_TOPIC}", "-p", "device:=cpu", "-p", f"precision:={args.precision}"]
    if args.checkpoint is not None:
        command += ["-p", f"checkpoint:={args.checkpoint}"]
    if args.threads is not None:
        command += ["-p", f"threads:={args.threads}"]
    if args.output_depth is not None:
        for output in OUTPUTS:
            key = f"qos_overrides./{NODE_NAME}/output/pointcloud/{output}.publisher.depth"
            command += ["-p", f"{key}:={args.output_depth}"]
    return command


def tiny_checkpoint(folder: Path) -> Path:
    """An untrained student with 8 channels (as the node tests use), saved in `folder`."""
    import torch

    from elite_ros.checkpoint import make_metadata, save_checkpoint
    from elite_ros.student import Student, StudentConfig

    torch.manual_seed(0)
    model = Student(StudentConfig(hidden_channels=8, decoder_channels=8))
    return save_checkpoint(folder / "tiny.safetensors", model, make_metadata(model, trained=False))


def summarise(published: dict, received: dict, started_s: float) -> dict:
    reports = received["reports"]
    final = reports[-1]["values"] if reports else {}
    processed = int(final.get("processed", 0))
    outputs = {}
    for name in OUTPUTS:
        count = len(received["stamps"][name])
        outputs[name] = {"received": count, "missing": processed - count,
                         "end_to_end_ms": percentiles(received["latency_ms"][name])}
    during = [r for r in reports if r["t"] >= started_s and int(r["values"].get("processed", 0)) < processed] or reports
    gaps = np.diff([r["t"] for r in during]).tolist()
    levels: dict[str, int] = {}
    for r in (r for r in reports if int(r["values"].get("processed", 0)) >= 1):  # once scans came in
        key = ["OK", "WARN", "ERROR", "STALE"][r["level"]] + ": " + r["message"].split(":")[0]
        levels[key] = levels.get(key, 0) + 1
    return {
        "sent": published.get("sent"), "bytes_per_cloud": published.get("bytes_per_cloud"),
        "input_clouds_received_by_the_subscriber": received.get("inputs"),
        "processed": processed, "rejected": int(final.get("rejected", 0)), "failed": int(final.get("failed", 0)),
        "outputs": outputs,
        "every_output_of_every_processed_scan_arrived": all(o["missing"] == 0 for o in outputs.values()),
        "diagnostics_period_s": {"reports_while_scans_ran": len(during),
                                 "p50": round(float(np.median(gaps)), 3) if gaps else None,
                                 "max": round(max(gaps), 3) if gaps else None,
                                 f"gaps_over_{LATE_GAP_S}_s": sum(g > LATE_GAP_S for g in gaps)},
        "diagnostics_reports_after_the_first_scan": levels,
        "node_late_reports": int(final.get("late_reports", 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of publishing (default 60)")
    parser.add_argument("--rate", type=float, default=10.0, help="clouds per second (default 10)")
    parser.add_argument("--grace", type=float, default=8.0, help="seconds to wait for the last outputs")
    parser.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="KITTI .bin scan to publish")
    parser.add_argument("--precision", default="fp32", help="the node's precision parameter")
    parser.add_argument("--threads", type=int, default=None, help="the node's threads parameter (default: shipped)")
    parser.add_argument("--output-depth", type=int, default=None,
                        help="history depth of the node's outputs via QoS overrides (default: the node's)")
    parser.add_argument("--tiny", action="store_true",
                        help="an 8-channel untrained student: outputs at several Hz, for transport / QoS figures")
    parser.add_argument("--dds-profile", choices=("both", "publisher", "none"), default="both",
                        help="which processes get config/fastdds.xml (default both: node and publisher)")
    parser.add_argument("--role", choices=("publisher", "subscriber"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publisher":
        return run_publisher(args)
    if args.role == "subscriber":
        return run_subscriber(args)
    if not args.scan.is_file():
        parser.error(f"--scan: no such file {args.scan}")

    report: dict = {"seconds": args.seconds, "rate_hz": args.rate, "precision": args.precision, "tiny": args.tiny,
                    "threads": args.threads, "output_depth": args.output_depth,
                    "dds_profile": args.dds_profile, "cpu_count": os.cpu_count(),
                    "load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="elite_ros_live_") as tmp:
        args.checkpoint = tiny_checkpoint(Path(tmp)) if args.tiny else None
        domain = random.SystemRandom().randint(1, 101)
        env = ros_environment(tmp, domain, profile=args.dds_profile == "both")
        publisher_env = ros_environment(tmp, domain, profile=args.dds_profile != "none")
        script = [sys.executable, str(Path(__file__).resolve())]
        common = ["--seconds", str(args.seconds), "--rate", str(args.rate), "--scan", str(args.scan)]
        result = Path(tmp) / "subscriber.json"
        node_log = open(Path(tmp) / "node.log", "w")  # noqa: SIM115 - closed below
        node = subprocess.Popen(node_command(args), env=env, stdout=node_log, stderr=subprocess.STDOUT)
        subscriber = subprocess.Popen(script + ["--role", "subscriber", "--result", str(result)], env=env,
                                      stdout=subprocess.PIPE, text=True)
        try:
            ready = subscriber.stdout.readline().strip() if subscriber.stdout else ""
            if ready != "READY":
                raise SystemExit(f"subscriber never matched the node's outputs (node log: {node_log.name})")
            started_s = time.monotonic()
            published_text = subprocess.run(script + ["--role", "publisher"] + common, env=publisher_env, check=True,
                                            stdout=subprocess.PIPE, text=True).stdout
            time.sleep(args.grace)
        finally:
            result.with_suffix(".stop").touch()
            subscriber.wait(timeout=60)
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
            node_log.close()
        report.update(summarise(json.loads(published_text.strip().splitlines()[-1]), json.loads(result.read_text()),
                                started_s))
        log = (Path(tmp) / "node.log").read_text().splitlines()
        report["node_log_warnings"] = [line for line in log if "WARN" in line or "ERROR" in line][:10]
    report["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
