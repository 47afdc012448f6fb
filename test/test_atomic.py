"""Atomic outputs: nothing half-written under the final name, no temporary sibling left behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from elite_ros.atomic import atomic_dir, atomic_file


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
