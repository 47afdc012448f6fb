"""elite_ros.config_loader: typed dataclasses from mappings, strict, errors naming the field."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from elite_ros.config_loader import ConfigError, dump_dataclass, load_dataclass


class Mode(str, enum.Enum):
    FAST = "fast"
    EXACT = "exact"


@dataclass(frozen=True)
class Inner:
    size: float = 0.1
    scales: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError(f"size must be > 0, got {self.size}")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    mode: Mode = Mode.FAST
    kind: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.0, 1.0)
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    folder: Path | None = None
    extra: Any = None
    flag: bool = False


def test_nested_round_trip_with_tuples_enums_literals_and_paths():
    config = load_dataclass(Outer, {
        "name": "x", "inner": {"size": 0.2, "scales": [1, 4]}, "mode": "exact", "kind": "b", "pair": [1, 2],
        "limit": 5.0, "tags": ["t"], "weights": {"car": 2}, "folder": "/tmp/a", "extra": {"any": [1]}, "flag": True})
    assert config == Outer(name="x", inner=Inner(0.2, (1, 4)), mode=Mode.EXACT, kind="b", pair=(1.0, 2.0), limit=5,
                           tags=["t"], weights={"car": 2.0}, folder=Path("/tmp/a"), extra={"any": [1]}, flag=True)
    assert isinstance(config.pair[0], float) and isinstance(config.limit, int)
    dumped = dump_dataclass(config)
    assert dumped["mode"] == "exact" and dumped["inner"]["scales"] == [1, 4] and dumped["folder"] == "/tmp/a"
    assert load_dataclass(Outer, dumped) == config


def test_defaults_fill_what_is_left_out_and_an_instance_passes_through():
    assert load_dataclass(Outer, {"name": "y"}) == Outer(name="y")
    inner = Inner(0.5)
    assert load_dataclass(Outer, {"name": "y", "inner": inner}).inner is inner
    assert load_dataclass(Outer, {"name": "y", "mode": "EXACT"}).mode is Mode.EXACT  # enum by name too


@pytest.mark.parametrize(("values", "path", "reason"), [
    ({"name": "x", "colour": 1}, "", "unknown key(s) for Outer: colour"),
    ({"name": "x", "inner": {"sise": 1}}, "inner", "unknown key(s) in inner: sise"),
    ({}, "", "missing required key(s): name"),
    ({"name": 3}, "name", "must be a string, got 3"),
    ({"name": "x", "flag": 1}, "flag", "must be true or false"),
    ({"name": "x", "limit": True}, "limit", "must be an integer, got True"),
    ({"name": "x", "limit": 64.5}, "limit", "must be an integer, got 64.5"),
    ({"name": "x", "limit": "64"}, "limit", "must be an integer, got '64'"),
    ({"name": "x", "pair": [1]}, "pair", "must hold 2 values, got 1"),
    ({"name": "x", "pair": [1, "b"]}, "pair[1]", "must be a number"),
    ({"name": "x", "inner": {"scales": [1, 2.5]}}, "inner.scales[1]", "must be an integer"),
    ({"name": "x", "inner": {"size": -1}}, "inner", "size must be > 0, got -1.0"),
    ({"name": "x", "inner": 3}, "inner", "must be a mapping of Inner fields"),
    ({"name": "x", "mode": "slow"}, "mode", "must be one of ['fast', 'exact'], got 'slow'"),
    ({"name": "x", "kind": "c"}, "kind", "must be one of ['a', 'b'], got 'c'"),
    ({"name": "x", "tags": "t"}, "tags", "must be a list"),
    ({"name": "x", "weights": {"car": "heavy"}}, "weights['car']", "must be a number"),
])
def test_errors_name_the_field_and_what_was_wrong(values, path, reason):
    with pytest.raises(ConfigError) as raised:
        load_dataclass(Outer, values)
    assert raised.value.path == path
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{path}: " if path else reason[:10])


def test_error_paths_start_at_the_given_prefix_and_non_dataclasses_are_refused():
    with pytest.raises(ConfigError, match=r"^student\.limit: must be an integer"):
        load_dataclass(Outer, {"name": "x", "limit": "a"}, path="student")
    with pytest.raises(TypeError, match="dataclass type"):
        load_dataclass(dict, {})
