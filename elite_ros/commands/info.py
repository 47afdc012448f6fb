"""`elite-ros info IN`: the topics of a recording; field layout and per-frame point counts of its clouds."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("info", help="topics of a bag; field layout and per-frame point counts of its clouds")
    p.add_argument("input", help="bag or KITTI folder")
    p.add_argument("--topic", action="append", help="only these PointCloud2 topics")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from elite_ros.cloud import DATATYPE_NAMES, decode
    from elite_ros.recording import Recording

    recording = Recording.open(args.input)
    print(f"{recording.path} ({recording.kind})")
    width = max(len(t) for t in recording.topics) if recording.topics else 5
    for topic, (msgtype, count) in recording.topics.items():
        print(f"  {topic:<{width}}  {msgtype}  x{count}")
    for topic in recording.select(args.topic) if recording.cloud_topics else []:
        print(f"\n{topic}:")
        for i, message in enumerate(recording.messages([topic])):
            msg = message.msg
            if i == 0:
                print(f"  frame_id {msg.header.frame_id!r}, point_step {msg.point_step}, row_step {msg.row_step}, "
                      f"{'big' if msg.is_bigendian else 'little'}-endian, is_dense {bool(msg.is_dense)}")
                print("  fields: " + ", ".join(
                    f"{f.name} {DATATYPE_NAMES.get(f.datatype, f.datatype)}@{f.offset}"
                    + (f"x{f.count}" if f.count != 1 else "") for f in msg.fields))
            try:
                finite = f"{len(decode(msg, intensity_field=None)):,} finite"
            except ValueError as error:
                finite = f"malformed: {error}"
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            count = msg.height * msg.width
            print(f"  [{i}] stamp {stamp:.6f}  {msg.height} x {msg.width} = {count:,} points ({finite})")
    return 0
