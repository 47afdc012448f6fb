"""Typed dataclasses from plain mappings (YAML, JSON, checkpoint metadata), and back: one loader for all.

    config = load_dataclass(VoxelConfig, {"voxel_size": 0.1, "scales": [1, 2, 4]})
    values = dump_dataclass(config)          # {"voxel_size": 0.1, ..., "scales": [1, 2, 4]}

Every field is converted to its annotated type, strictly: an unknown key, a missing required field or a
value of the wrong type raises one `ConfigError` naming the field by its dotted path
(``optim.lr``, ``student.stage_scales[2]``) and saying what was expected and found. Supported
annotations: bool, int, float, str, `pathlib.Path`, enums (by value or name), `Literal`, `tuple[X, ...]`,
`tuple[X, Y]`, `list[X]`, `dict[K, V]`, unions with None (``X | None``), nested dataclasses and `Any`.
An int is a valid float; a float with an integral value (``5.0``) is a valid int; a bool is neither.
Errors raised by a dataclass's own ``__post_init__`` checks come back as a `ConfigError` with the path of
that dataclass.
"""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MAX_SHOWN = 60  # characters of an offending value quoted in an error


class ConfigError(ValueError):
    """A mapping that does not fit a config dataclass. `path` is the dotted field name ("" = the whole)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def load_dataclass(cls: type[T], values: Any, *, path: str = "") -> T:
    """An instance of the dataclass `cls` from a mapping of its fields (nested mappings for nested configs).

    Fields left out take their defaults. `path` prefixes the field names in errors (e.g. "student").
    An instance of `cls` itself is returned unchanged.
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"load_dataclass needs a dataclass type, got {cls!r}")
    return _convert(values, cls, path)


def dump_dataclass(instance: Any) -> Any:
    """Plain JSON/YAML values of a config: dataclasses -> dicts, tuples -> lists, enums -> their values,
    paths -> strings. The inverse of `load_dataclass` for every supported annotation."""
    if dataclasses.is_dataclass(instance) and not isinstance(instance, type):
        return {f.name: dump_dataclass(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, enum.Enum):
        return instance.value
    if isinstance(instance, Path):
        return str(instance)
    if isinstance(instance, (list, tuple)):
        return [dump_dataclass(v) for v in instance]
    if isinstance(instance, Mapping):
        return {k: dump_dataclass(v) for k, v in instance.items()}
    return instance


def field_names(cls: type) -> tuple[str, ...]:
    """The field names of a dataclass, in order."""
    return tuple(f.name for f in dataclasses.fields(cls))


# ------------------------------------------------------------------------------------------ internals
def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


@typing.no_type_check
def _convert(value: Any, annotation: Any, path: str) -> Any:
    """`value` converted to `annotation`, or ConfigError(path, ...)."""
    if annotation is Any or annotation is object:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin is typing.Union or origin is types.UnionType:
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(path, f"must be {_type_name(annotation)}, got None")
        problems = []
        for arm in args:
            if arm is type(None):
                continue
            try:
                return _convert(value, arm, path)
            except ConfigError as error:
                problems.append(error.reason)
        raise ConfigError(path, problems[0] if len(problems) == 1 else
                          f"must be {_type_name(annotation)}, got {_shown(value)}")
    if origin is typing.Literal:
        if value in args and not (isinstance(value, bool) and not any(isinstance(a, bool) for a in args)):
            return value
        raise ConfigError(path, f"must be one of {list(args)}, got {_shown(value)}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"must be a list, got {_shown(value)}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(path, f"must hold {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(path, f"must be a mapping, got {_shown(value)}")
        key_type, value_type = args if args else (Any, Any)
        return {_convert(k, key_type, f"{path}[{k!r}]"): _convert(v, value_type, f"{path}[{k!r}]")
                for k, v in value.items()}
    if annotation in (list, tuple):
        return _convert(value, annotation[Any, ...] if annotation is tuple else list[Any], path)

    if dataclasses.is_dataclass(annotation):
        return _dataclass(value, annotation, path)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if isinstance(value, annotation):
            return value
        for member in annotation:
            if value == member.value or (isinstance(value, str) and value == member.name):
                return member
        raise ConfigError(path, f"must be one of {[m.value for m in annotation]}, got {_shown(value)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"must be true or false, got {_shown(value)}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise ConfigError(path, f"must be an integer, got {_shown(value)}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(path, f"must be a number, got {_shown(value)}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"must be a string, got {_shown(value)}")
    if annotation is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(path, f"must be a path (string), got {_shown(value)}")
    raise TypeError(f"{path or 'config'}: unsupported annotation {_type_name(annotation)} in a config dataclass")


def _dataclass(value: Any, cls: type, path: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(path, f"must be a mapping of {cls.__name__} fields, got {_shown(value)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        where = f" in {path}" if path else f" for {cls.__name__}"
        raise ConfigError(path, f"unknown key(s){where}: {', '.join(unknown)} (known: {', '.join(fields)})")
    missing = sorted(name for name, f in fields.items() if name not in value
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(path, f"missing required key(s): {', '.join(missing)}")
    kwargs = {name: _convert(v, hints[name], _join(path, name)) for name, v in value.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:  # the dataclass's own __post_init__ checks
        raise ConfigError(path, str(error)) from None
