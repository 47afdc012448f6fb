"""Atomic outputs: nothing half-written under the final name, no temporary sibling left behind."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from elite_ros.atomic import atomic_dir, atomic_file, new_file_mode


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_file_replaces_only_on_success(tmp_path: Path):
    target = tmp_path / "sub" / "weights.bin"
    with atomic_file(target) as temp:
        assert temp.parent == target.parent and temp != target
        temp.write_bytes(b"new")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_file(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"new"
    assert _siblings(target.parent) == ["weights.bin"]


def test_atomic_dir_creates_fills_and_cleans_up(tmp_path: Path):
    target = tmp_path / "report"
    with pytest.raises(ValueError), atomic_dir(target) as temp:
        (temp / "a.txt").write_text("half")
        raise ValueError("crash")
    assert _siblings(tmp_path) == []
    with atomic_dir(target) as temp:
        (temp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one" and _siblings(tmp_path) == ["report"]


def test_atomic_dir_refuses_a_non_empty_folder_unless_replacing(tmp_path: Path):
    target = tmp_path / "out"
    target.mkdir()
    with atomic_dir(target) as temp:  # an empty folder is taken over
        (temp / "a.txt").write_text("one")
    with pytest.raises(FileExistsError, match="out"), atomic_dir(target) as temp:
        (temp / "b.txt").write_text("two")
    assert _siblings(target) == ["a.txt"] and _siblings(tmp_path) == ["out"]
    with atomic_dir(target, replace=True) as temp:
        (temp / "b.txt").write_text("two")
    assert _siblings(target) == ["b.txt"] and _siblings(tmp_path) == ["out"]


WRITE_AND_HANG = """
import sys, time
from elite_ros.atomic import atomic_dir, atomic_file, new_file_mode
target = sys.argv[1]
writer = atomic_dir(target) if sys.argv[2] == "dir" else atomic_file(target)
with writer as temp:
    (temp / "half.txt").write_text("half") if sys.argv[2] == "dir" else temp.write_text("half")
    print("writing", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_the_leftover_of_a_killed_writer_is_removed_by_the_next_write(tmp_path: Path, kind: str):
    """kill -9 leaves the temporary sibling (nothing can remove it then); the next write of the same output
    removes it, and keeps the one of a writer that still runs."""
    target = tmp_path / ("out" if kind == "dir" else "weights.bin")
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_AND_HANG, str(target), kind], stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        assert len(_siblings(tmp_path)) == 2 and not target.exists()
        dead, alive = writers
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=30)
        assert len(_siblings(tmp_path)) == 2  # a killed process cleans nothing
        writer = atomic_dir(target) if kind == "dir" else atomic_file(target)
        with writer as temp:
            if kind == "dir":
                (temp / "a.txt").write_text("whole")
            else:
                temp.write_text("whole")
        left = [name for name in _siblings(tmp_path) if name != target.name]
        mark = f".partial-{alive.pid}@" if kind == "dir" else f".{alive.pid}@"
        assert len(left) == 1 and mark in left[0], left
    finally:
        for writer in writers:
            writer.kill()
            writer.wait(timeout=30)


def test_an_atomic_file_gets_the_mode_open_gives_under_the_umask(tmp_path):
    """mkstemp makes 0600 files: without care every output (reports, checkpoints, bags) is private to its writer."""
    previous = os.umask(0o027)
    new_file_mode.cache_clear()
    try:
        with atomic_file(tmp_path / "out.json") as temp:
            temp.write_text("{}")
    finally:
        os.umask(previous)
        new_file_mode.cache_clear()
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o640


def test_a_checkpoint_written_through_safetensors_gets_the_umask_mode_too(tmp_path):
    """safetensors' save_file replaces the file it is given with a 0600 one of its own."""
    import torch
    from safetensors.torch import save_file

    with atomic_file(tmp_path / "w.safetensors") as temp:
        save_file({"w": torch.zeros(2)}, str(temp))
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == new_file_mode()
