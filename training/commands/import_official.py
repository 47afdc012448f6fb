"""`elite-ros-train import-official`: an official ELiTe / 2DPASS checkpoint -> the student checkpoint the node loads."""
from __future__ import annotations

import argparse
from pathlib import Path

from elite_ros_training.commands.outputs import add_student_output, refuse_existing_output


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "import-official",
        help="convert official ELiTe / 2DPASS weights (4scale-64dimension) to a runtime .safetensors",
        description="Read an official ELiTe / 2DPASS Lightning .ckpt (student under model_3d.*) or a plain state "
                    "dict (.pt / .pth) without running anything from it, take exactly the student's tensors "
                    "(1x1x1 shortcut convolutions transposed from spconv's layout), and write them with their "
                    "metadata (trained, classes, learning map, voxel grid from the checkpoint's config, the "
                    "source's sha256), atomically. Another architecture is refused, naming the mismatch.")
    parser.add_argument("source", type=Path, metavar="SRC", help="official .ckpt, .pt or .pth")
    add_student_output(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from elite_ros_training.import_official import import_official

    refuse_existing_output(args)
    result = import_official(args.source, args.out)
    voxel = result.voxel
    ranges = " x ".join(f"[{lo:g}, {hi:g}]" for lo, hi in zip(voxel.min_bound, voxel.max_bound, strict=True))
    ignored = ", ".join(f"{group} {count}" for group, count in result.ignored.items()) or "nothing"
    print(f"took {result.tensors} student tensors ({result.parameters:,} parameters) from {args.source}; "
          f"{result.transposed} 1x1x1 shortcut convolutions transposed from spconv's layout")
    print(f"ignored tensors by group: {ignored}")
    if result.ignored_entries:
        print(f"ignored checkpoint entries: {', '.join(result.ignored_entries)}")
    print(f"voxel grid: {voxel.voxel_size:g} m over {ranges} m, scales {list(voxel.scales)} "
          f"(source: {result.voxel_source})")
    print(f"wrote {result.path} (trained, source sha256 {result.sha256[:16]}...)")
    return 0
