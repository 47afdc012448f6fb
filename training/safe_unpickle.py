"""Read torch checkpoint files (`.ckpt`, `.pt`, `.pth`) without executing anything from them.

`torch.save` (torch >= 1.6) writes a zip archive: ``<archive>/data.pkl`` is a pickle of the object tree,
and every tensor storage is one raw-bytes record ``<archive>/data/<key>`` that the pickle names through a
persistent id ``("storage", <dtype>Storage, key, location, numel)``. This module reads the archive with
`zipfile` and the pickle with `RestrictedUnpickler`, which resolves every global the pickle names
against a short allow-list and returns this module's own implementations, never the named object:

- plain containers and values (dict, list, tuple, str, numbers, bytes, set) need no global at all;
- tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` become a
  function that views the storage record (gradient flags and backward hooks from the file are
  dropped), the ``torch.*Storage`` names become dtype markers, ``torch.<dtype>``, ``torch.Size``,
  ``torch.device`` and ``collections.OrderedDict`` are values;
- data-only classes (`DATA_ONLY_CLASSES`: ``easydict.EasyDict``, Lightning's ``AttributeDict``,
  ``argparse.Namespace``) are read as plain dicts; the class is never imported, so ``easydict`` need not
  be installed;
- any other global (``os.system``, ``builtins.eval``, a model class, a numpy reconstructor ...) is refused
  with `UnsafeCheckpointError` naming it as ``module.qualname``, before anything could call it. A
  ``__reduce__`` payload can only call what `find_class` returns, so it never runs.

There is no fallback to ``torch.load(weights_only=False)``: this reader is used instead of torch.load.
Legacy (pre-1.6, non-zip) files and TorchScript archives are refused by name.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

PICKLE_RECORD = "data.pkl"  # torch.save: the object tree, beside data/<key> storage records
TORCHSCRIPT_RECORD = "constants.pkl"  # only torch.jit.save archives have it
READ_CHUNK_BYTES = 1 << 24  # storage records are copied into their tensors in 16 MiB reads

#: torch.save's storage class names -> element dtype
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}

#: classes whose instances are nothing but a mapping of config values: read as plain dicts
DATA_ONLY_CLASSES: frozenset[str] = frozenset({
    "easydict.EasyDict",  # the 2DPASS / ELiTe config (main.py), Lightning hyper_parameters
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "argparse.Namespace",  # its values are its attributes
})


class UnsafeCheckpointError(ValueError):
    """The file names something that could run code when loaded; the message names file and global."""


class CheckpointReadError(ValueError):
    """The file is not a readable torch zip checkpoint; the message names the file and why."""


#: torch.<dtype> globals (read from the module's namespace: no lazy torch submodule import by name)
TORCH_DTYPES: dict[str, torch.dtype] = {name: value for name, value in vars(torch).items()
                                        if isinstance(value, torch.dtype)}


class _StorageType(NamedTuple):
    """Marker for a ``torch.<Name>Storage`` global: only its dtype is used (immutable: BUILD cannot alter it)."""

    dtype: torch.dtype


class _LoadedStorage(NamedTuple):
    """One storage record, read into CPU memory. untyped: its bytes. dtype: its element type."""

    untyped: torch.UntypedStorage
    dtype: torch.dtype


class _Call(tuple):
    """An allow-listed function as the unpickler hands it out: immutable (a tuple, no ``__dict__``), so a
    pickle's BUILD cannot set attributes on it (or on the function behind it) for later loads."""

    __slots__ = ()

    def __new__(cls, function: Callable[..., Any]) -> _Call:
        return super().__new__(cls, (function,))

    def __call__(self, *args: Any) -> Any:
        return self[0](*args)


class _ItemsDict(dict):
    """A dict subclass whose data are its items (OrderedDict, EasyDict, AttributeDict).

    Pickle's BUILD hands it the instance attributes (a state dict's ``_metadata``, EasyDict's mirror of
    its items): they are dropped, the items arrive through SETITEMS.
    """

    def __setstate__(self, state: Any) -> None:
        pass


class _AttributesDict(dict):
    """An object whose data are its attributes (argparse.Namespace): BUILD's state becomes the items."""

    def __setstate__(self, state: Any) -> None:
        attributes = state[0] if isinstance(state, tuple) and len(state) == 2 else state
        if isinstance(attributes, dict):
            self.update(attributes)


def _view_storage(storage: Any, offset: int, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """A tensor over a storage record: (storage, storage offset, size, stride[, requires_grad, hooks, ...]).

    Gradient flags, backward hooks and metadata from the file are ignored: the result is a plain tensor.
    """
    if not isinstance(storage, _LoadedStorage):
        raise CheckpointReadError(f"a tensor is rebuilt from {type(storage).__name__}, not a storage record")
    tensor = torch.empty((0,), dtype=storage.dtype)
    return tensor.set_(storage.untyped, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _parameter_data(data: Any, *_ignored: Any) -> torch.Tensor:
    """``_rebuild_parameter(data, requires_grad, hooks[, state])`` -> the plain data tensor."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointReadError(f"a parameter is rebuilt from {type(data).__name__}, not a tensor")
    return data


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes objects: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise CheckpointReadError(f"_codecs.encode with encoding {encoding!r}: only latin1 bytes are read")
    return text.encode("latin1")


#: allowed "module.qualname" -> what the unpickler returns for it (this module's stand-ins or immutable values;
#: the two dict classes define __setstate__, so BUILD on the class itself fails)
_ALLOWED: dict[str, Any] = {
    "torch._utils._rebuild_tensor_v2": _Call(_view_storage),
    "torch._utils._rebuild_tensor": _Call(_view_storage),
    "torch._utils._rebuild_parameter": _Call(_parameter_data),
    "torch._utils._rebuild_parameter_with_state": _Call(_parameter_data),
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "collections.OrderedDict": _ItemsDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.bytearray": bytearray,
    "_codecs.encode": _Call(_latin1_bytes),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles torch's ``data.pkl`` with only the allow-listed globals (see the module docstring).

    read_storage: key, dtype, element count -> that storage record in memory.
    """

    def __init__(self, file: io.BufferedIOBase, source: str,
                 read_storage: Callable[[str, torch.dtype, int], _LoadedStorage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self._read_storage = read_storage

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED:
            return _ALLOWED[qualname]
        if qualname in DATA_ONLY_CLASSES:
            return _AttributesDict if qualname == "argparse.Namespace" else _ItemsDict
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "torch" and name in TORCH_DTYPES:
            return TORCH_DTYPES[name]
        raise UnsafeCheckpointError(
            f"{self.source}: refusing to load: the file names {qualname}, which is not a tensor, a container "
            f"or a data-only class (loading it could run code from the file)")

    def persistent_load(self, pid: Any) -> _LoadedStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointReadError(f"{self.source}: unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise CheckpointReadError(f"{self.source}: malformed storage reference {str(pid)[:80]}")
        return self._read_storage(key, storage_type.dtype, numel)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names in protocol < 3 pickles (torch.save writes protocol 2: ``__builtin__.set``) -> Python 3's,
    as pickle's own find_class maps them."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def load_checkpoint_file(path: str | Path) -> Any:
    """The object tree of a torch zip checkpoint, every tensor on the CPU; nothing from the file runs.

    Data-only classes come back as plain dicts (also OrderedDict), tensors as plain tensors. Raises
    UnsafeCheckpointError when the file names any other global, CheckpointReadError for a file that is
    not a torch zip checkpoint (legacy format, TorchScript, truncated, big-endian).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {'not a file' if path.exists() else 'no such checkpoint file'}")
    if not zipfile.is_zipfile(path):
        raise CheckpointReadError(f"{path}: not a torch zip checkpoint (torch.save of torch >= 1.6); legacy "
                                  "pre-1.6 files are not read")
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive, source)
        _check_byte_order(archive, prefix, source)
        storages: dict[str, _LoadedStorage] = {}

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> _LoadedStorage:
            if key not in storages:
                storages[key] = _read_record(archive, f"{prefix}data/{key}", dtype, numel, source)
            return storages[key]

        pickled = io.BytesIO(archive.read(prefix + PICKLE_RECORD))
        unpickler = RestrictedUnpickler(pickled, source, read_storage)
        try:
            return plain(unpickler.load())
        except (UnsafeCheckpointError, CheckpointReadError):
            raise
        except Exception as error:  # noqa: BLE001 - a malformed pickle, whatever it trips over
            raise CheckpointReadError(f"{path}: unreadable pickle ({type(error).__name__}: {error})") from None


def plain(tree: Any) -> Any:
    """`tree` with every dict subclass turned into a plain dict (shared and cyclic parts kept shared)."""
    done: dict[int, Any] = {}

    def convert(node: Any) -> Any:
        if isinstance(node, dict):
            if id(node) in done:
                return done[id(node)]
            out: dict[Any, Any] = {}
            done[id(node)] = out
            for key, value in node.items():
                out[key] = convert(value)
            return out
        if type(node) is list:
            if id(node) in done:
                return done[id(node)]
            items: list[Any] = []
            done[id(node)] = items
            items.extend(convert(value) for value in node)
            return items
        if type(node) is tuple:
            return tuple(convert(value) for value in node)
        return node

    return convert(tree)


def _archive_prefix(archive: zipfile.ZipFile, source: str) -> str:
    """The archive folder holding data.pkl (``archive/``, or the file's stem for older torch)."""
    names = archive.namelist()
    folders = sorted({name.split("/")[0] + "/" for name in names if name.count("/") == 1
                      and name.endswith("/" + PICKLE_RECORD)})
    if any(name.endswith("/" + TORCHSCRIPT_RECORD) for name in names):
        raise CheckpointReadError(f"{source}: a TorchScript archive (torch.jit.save), not a checkpoint")
    if len(folders) != 1:
        raise CheckpointReadError(f"{source}: not a torch checkpoint archive ({len(folders)} '*/{PICKLE_RECORD}' "
                                  "records, expected 1)")
    return folders[0]


def _check_byte_order(archive: zipfile.ZipFile, prefix: str, source: str) -> None:
    name = prefix + "byteorder"  # absent in files of older torch: little-endian
    order = archive.read(name).decode().strip() if name in archive.namelist() else "little"
    if order != sys.byteorder:
        raise CheckpointReadError(f"{source}: tensors stored {order}-endian, this machine is {sys.byteorder}-endian")


def _read_record(archive: zipfile.ZipFile, name: str, dtype: torch.dtype, numel: int,
                 source: str) -> _LoadedStorage:
    """Copy one storage record into a fresh CPU storage (one copy, in READ_CHUNK_BYTES reads)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointReadError(f"{source}: storage record {name} is missing") from None
    itemsize = dtype.itemsize
    if info.file_size != numel * itemsize:
        raise CheckpointReadError(f"{source}: storage record {name} holds {info.file_size} bytes, its reference "
                                  f"says {numel} x {itemsize}")
    buffer = torch.empty(info.file_size, dtype=torch.uint8)
    view = buffer.numpy().data  # the tensor's bytes, written in place
    with archive.open(info) as handle:
        filled = 0
        while filled < info.file_size:
            count = handle.readinto(view[filled:filled + READ_CHUNK_BYTES])  # type: ignore[attr-defined]
            if not count:
                raise CheckpointReadError(f"{source}: storage record {name} is truncated")
            filled += count
    return _LoadedStorage(untyped=buffer.untyped_storage(), dtype=dtype)
