"""Atomic outputs: write into a temporary sibling, rename onto the final name only when complete.

A crash or an exception never leaves a half-written file or folder under the final name, and the
temporary sibling is removed. Siblings keep the final rename on one file system. Every writer of the
package uses these two helpers: checkpoints, pseudo-label maps, reports, synthetic sequences, bags.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"  # in the name of a folder being written: ".<name>.partial-XXXXXXXX"


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
def atomic_dir(path: str | Path, *, replace: bool = False, take_empty: bool = True,
               create: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill, ``<parent>/.<name>.partial-XXXXXXXX/<name>``; on a clean exit it
    becomes `path`. The yielded folder has the final name, for writers that name files after their folder.

    `path` may be absent, or (with `take_empty`) an empty folder. Anything else there raises
    FileExistsError naming it, unless `replace`: then the old one is moved aside, the new one moved in, and
    the old deleted. `create`: False leaves the yielded folder for the caller to create (for writers that
    refuse an existing folder). On error the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL_MARK}", dir=path.parent))
    temp = partial / path.name
    try:
        if create:
            temp.mkdir()
        yield temp
        if path.exists() or path.is_symlink():
            if replace:
                os.replace(path, partial / ".old")  # deleted with the partial folder below
            elif take_empty and path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise FileExistsError(f"refusing to overwrite {path}: it exists"
                                      + (" and is not an empty folder" if take_empty else ""))
        os.replace(temp, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
