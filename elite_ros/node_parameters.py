"""The node's ROS parameters: declared from the schema, typos refused, params files found on the command line.

- `declare_segment_parameters`: every property of schema/segment.param.schema.json declared read-only, typed,
  with its range and constraints (`parameter_descriptor`), returned as validated `SegmentParams`;
- `refuse_unknown_parameters`: an override the node never declared (a typo, another node's parameter, a
  QoS override naming a topic the node does not have) is a `ParameterError`;
- `params_files`: the ``--params-file`` paths of a command line, read strictly before rcl parses them.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from elite_ros.params import QOS_OVERRIDES_PREFIX, ParameterError, SegmentParams, parameter_schema, unknown_parameter

_SCHEMA_TYPES = {
    "string": ParameterType.PARAMETER_STRING, "boolean": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER, "number": ParameterType.PARAMETER_DOUBLE,
    "array": ParameterType.PARAMETER_STRING_ARRAY,
}


def _numbers(prop: dict[str, Any]) -> bool:
    """An array of numbers (e.g. camera.extrinsic), not of names."""
    return prop["type"] == "array" and prop.get("items", {}).get("type") == "number"


def parameter_descriptor(name: str, prop: dict[str, Any]) -> ParameterDescriptor:
    """A read-only ParameterDescriptor (type, description, range, constraints) from a schema property."""
    kind = ParameterType.PARAMETER_DOUBLE_ARRAY if _numbers(prop) else _SCHEMA_TYPES[prop["type"]]
    descriptor = ParameterDescriptor(name=name, type=kind, description=prop["description"], read_only=True)
    constraints = []
    if "enum" in prop:
        constraints.append("one of: " + ", ".join(map(str, prop["enum"])))
    if "pattern" in prop:
        constraints.append(f"matches {prop['pattern']}")
    if "items" in prop and "enum" in prop["items"]:
        constraints.append("items from: " + ", ".join(prop["items"]["enum"]))
    descriptor.additional_constraints = "; ".join(constraints)
    if prop["type"] == "array":  # an empty list has no element type (rclpy: BYTE_ARRAY / NOT_SET): the
        descriptor.dynamic_typing = True  # schema check in SegmentParams.from_dict enforces a list of names
    if prop["type"] == "number":  # 100 in a params file / launch arrives as INTEGER: accept it (dynamic
        descriptor.dynamic_typing = True  # typing), converted to float and range-checked by the schema
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(prop["minimum"]), to_value=float(prop["maximum"]), step=0.0)
        ]
    elif prop["type"] == "integer":
        descriptor.integer_range = [
            IntegerRange(from_value=int(prop["minimum"]), to_value=int(prop["maximum"]), step=1)
        ]
    return descriptor


def declare_segment_parameters(node: Node) -> SegmentParams:
    """Declare every parameter of the schema on `node` and return them validated.

    Raises ParameterError naming the parameter when a value has the wrong type, is out of range or fails
    the schema (enum, pattern, class names, min_range < max_range).
    """
    values: dict[str, Any] = {}
    for name, prop in parameter_schema().items():
        descriptor = parameter_descriptor(name, prop)
        default = list(prop["default"]) if prop["type"] == "array" else prop["default"]
        try:
            value = node.declare_parameter(name, default, descriptor).value
        except InvalidParameterValueException as error:
            raise ParameterError(name, str(error).split(": ", 1)[-1] if ": " in str(error) else str(error)) from None
        except InvalidParameterTypeException as error:
            raise ParameterError(name, f"wrong type: {error}") from None
        if prop["type"] == "number" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if prop["type"] == "array" and value is None:  # `[]` in a params file arrives untyped (NOT_SET)
            value = []
        if prop["type"] == "array" and (isinstance(value, (list, tuple)) or type(value).__name__ == "array"):
            value = [float(v) for v in value] if _numbers(prop) else list(value)
        values[name] = value
    return SegmentParams.from_dict(values)


def refuse_unknown_parameters(node: Node) -> None:
    """Raise ParameterError for an override (params file, ``-p``, `parameter_overrides`) the node never
    declared: a typo, a parameter of another node, or a QoS override for a topic the node does not have.

    rclpy keeps the overrides meant for this node in ``Node._parameter_overrides`` (no public accessor as
    of rclpy 9) and silently ignores the undeclared ones; call this after every subscription and publisher
    exists, as they declare their QoS-override parameters.
    """
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    for name in sorted(overrides):
        if node.has_parameter(name):
            continue
        if name.startswith(QOS_OVERRIDES_PREFIX + "."):
            topics = ", ".join(_qos_overridable_topics(node))
            raise ParameterError(name, f"no such topic on this node; QoS-override keys name the topic after "
                                       f"remapping, one of: {topics}")
        raise unknown_parameter(name)


def _qos_overridable_topics(node: Node) -> list[str]:
    """Topics whose QoS the node lets parameters override (the ones created with QoSOverridingOptions)."""
    names = node.get_parameters_by_prefix(QOS_OVERRIDES_PREFIX)  # "<topic>.<publisher|subscription>.<policy>"
    return sorted({name.rsplit(".", 2)[0] for name in names})


def params_files(args: Sequence[str]) -> list[str]:
    """The ``--params-file`` paths of a command line's ``--ros-args`` sections (rcl's argument syntax)."""
    files, in_ros_args = [], False
    tokens = list(args)
    for index, token in enumerate(tokens):
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token == "--params-file" and index + 1 < len(tokens):
            files.append(tokens[index + 1])
    return files
