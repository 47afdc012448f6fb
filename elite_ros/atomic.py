"""Atomic outputs: write into a temporary sibling, rename onto the final name only when complete.

A crash or an exception never leaves a half-written file or folder under the final name, and the
temporary sibling is removed. Siblings keep the final rename on one file system.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on a clean exit it replaces `path`, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling folder to fill; on a clean exit it becomes `path`.

    `path` may be absent or an empty folder. An existing non-empty `path` raises FileExistsError naming
    it, unless `replace`: then the old folder is moved aside, the new one moved in, and the old deleted.
    On error the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temp
        if path.exists() and not replace:
            if not path.is_dir() or any(path.iterdir()):
                raise FileExistsError(f"refusing to overwrite {path}: it exists and is not an empty folder")
            path.rmdir()
        if path.exists():  # replace: move the old one aside, swap, then delete it
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(temp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
