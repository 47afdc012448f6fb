"""Atomic outputs: write into a temporary sibling, rename onto the final name only when complete.

A crash or an exception never leaves a half-written file or folder under the final name, and the
temporary sibling is removed. Siblings keep the final rename on one file system. Every writer of the
package uses these two helpers: checkpoints, pseudo-label maps, reports, synthetic sequences, bags.

A sibling's name says which process writes it (``.<name>.partial-<pid>@<host>-XXXXXXXX`` for a folder,
``.<name>.<pid>@<host>-XXXXXXXX.tmp`` for a file). A process killed outright (SIGKILL, power loss) cannot
remove its sibling, so the next write of the same output removes the siblings of processes of this host
that no longer run (`remove_stale_siblings`). An output that cannot be written where asked (a parent that is
a file, a folder without write permission) raises one `OutputError` naming it.
"""
from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"  # in the name of a folder being written: ".<name>.partial-<pid>@<host>-XXXXXXXX"
TEMP_SUFFIX = ".tmp"  # end of the name of a file being written: ".<name>.<pid>@<host>-XXXXXXXX.tmp"
_RANDOM = "[a-z0-9_]{8}"  # tempfile's random part
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutputError(ValueError):
    """An output that cannot be written where it was asked for; the message names the path and why."""


def _writer_tag() -> str:
    """``<pid>@<host>``: who writes a temporary sibling (the host keeps shared folders apart)."""
    return f"{os.getpid()}@{_HOST_UNSAFE.sub('_', socket.gethostname()) or 'host'}"


def _running(pid: int) -> bool:
    """True when process `pid` of this host exists (or cannot be asked: then it is left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a pid the kernel cannot hold
        return True
    return True


def remove_stale_siblings(path: str | Path) -> list[Path]:
    """Remove the temporary siblings of `path` left by processes of this host that no longer run; return them.

    Siblings of running processes, of other hosts, and of this process are kept.
    """
    path = Path(path)
    name = re.escape(path.name)
    patterns = (re.compile(rf"\.{name}{re.escape(PARTIAL_MARK)}(\d+)@(.+)-{_RANDOM}"),
                re.compile(rf"\.{name}\.(\d+)@(.+)-{_RANDOM}{re.escape(TEMP_SUFFIX)}"))
    host = _writer_tag().split("@", 1)[1]
    removed: list[Path] = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:  # no parent yet, or not readable: nothing to clean
        return removed
    for sibling in siblings:
        match = next((m for m in (p.fullmatch(sibling.name) for p in patterns) if m), None)
        if match is None or match.group(2) != host:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _running(pid):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def _first_file_on_the_way(path: Path) -> Path | None:
    """The nearest ancestor of `path` (or `path`) that exists and is not a folder."""
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            return None if ancestor.is_dir() else ancestor
    return None


def _output_error(path: Path, error: OSError) -> OutputError:
    """One line for an OSError met while preparing to write `path`."""
    blocker = _first_file_on_the_way(path.parent)
    if blocker is not None:
        return OutputError(f"cannot write {path}: {blocker} is a file, not a folder")
    if isinstance(error, PermissionError) or error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        where = next((p for p in path.parents if p.exists()), path.parent)
        return OutputError(f"cannot write {path}: no permission to write in {where} ({error.strerror})")
    return OutputError(f"cannot write {path}: {error.strerror or error}")


def _prepare(path: Path) -> None:
    """Create `path`'s missing parents and remove stale siblings of dead writers; OutputError naming why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _output_error(path, error) from None
    remove_stale_siblings(path)


@functools.lru_cache(maxsize=1)
def new_file_mode() -> int:
    """The permission bits open() gives a new file in this process: 0o666 less the umask (read once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on a clean exit it replaces `path`, on error it is deleted."""
    path = Path(path)
    _prepare(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}-", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise _output_error(path, error) from None
    os.close(fd)
    temp = Path(name)
    try:
        yield temp
        # mkstemp makes 0600 files (and so do writers that replace the file, e.g. safetensors): an output
        # gets the mode open() would give it
        os.chmod(temp, new_file_mode())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False, take_empty: bool = True,
               create: bool = True) -> Iterator[Path]:
    """Yield a temporary folder to fill, ``<parent>/.<name>.partial-<pid>@<host>-XXXXXXXX/<name>``; on a clean
    exit it becomes `path`. The yielded folder has the final name, for writers that name files after their
    folder.

    `path` may be absent, or (with `take_empty`) an empty folder. Anything else there raises
    FileExistsError naming it, unless `replace`: then the old one is moved aside, the new one moved in, and
    the old deleted. `create`: False leaves the yielded folder for the caller to create (for writers that
    refuse an existing folder). On error the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    _prepare(path)
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{path.name}{PARTIAL_MARK}{_writer_tag()}-", dir=path.parent))
    except OSError as error:
        raise _output_error(path, error) from None
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
