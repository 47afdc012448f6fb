"""`elite-ros benchmark IN`: time the handler on a recording; prints JSON."""
from __future__ import annotations

import argparse
import json

from elite_ros.commands.options import add_params_options, open_run


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("benchmark", help="time the handler on a recording; prints JSON")
    p.add_argument("input")
    p.add_argument("--topic", action="append")
    p.add_argument("--repeat", type=int, default=1)
    add_params_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from elite_ros.evaluate import latency_stats
    from elite_ros.replay import replay

    recording, handler = open_run(args)
    runs = []
    for _ in range(args.repeat):
        summary = replay(recording, handler, output=None, topics=args.topic, outputs=("segmentation",),
                         progress=False)
        runs.append(summary.latencies_ms)
    all_ms = [value for latencies in runs for value in latencies]
    print(json.dumps({"input": str(recording.path), "frames": len(all_ms), "repeat": args.repeat,
                      "device": str(handler.segmenter.device), "backend": getattr(handler.segmenter, "backend", None),
                      "weights": "trained" if handler.trained else "untrained",
                      "total_ms": latency_stats(all_ms), "note": "shared CPU: pessimistic"}))
    return 0
