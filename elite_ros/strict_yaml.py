"""YAML from files and command lines that nobody checked: safe types, no aliases, no duplicate keys.

`yaml.safe_load` never runs code, but it still accepts

- aliases (``*name``) and merge keys: a 0.5 KB file of nested aliases ("billion laughs") names 10**9 values,
  and walking them (validation, printing) takes minutes and gigabytes;
- a key given twice in one mapping: the last one silently wins.

`load` refuses both with a `yaml.MarkedYAMLError` (line and column in ``problem_mark``) like any other YAML
error, so callers report them the same way. Anchors that nothing refers to are harmless and allowed.
"""
from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (while composing) and duplicate keys (while constructing)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"found alias '*{event.anchor}': aliases and merge keys are refused "
                                            f"(a few of them can expand to gigabytes); write the values out",
                                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                continue  # a complex key: SafeLoader refuses the unhashable ones itself
            key = self.construct_object(key_node)
            if key in seen:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """The value of one YAML document, with SafeLoader's types; raises yaml.YAMLError (with ``problem`` and
    ``problem_mark`` for aliases and duplicate keys, as for syntax errors)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def describe(error: yaml.YAMLError) -> tuple[str, str]:
    """(where, problem) of a YAML error: ``" (line L, column C)"`` or "", and its one-line reason."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    return where, problem
