"""The rclpy segment node: thin glue around `SegmentationHandler` (console script `segment_node`).

Topics (relative to the node; remap with the launch file):

- in:  ``~/input/pointcloud`` sensor_msgs/PointCloud2, sensor-data QoS (best effort, keep last 1: always the
  newest scan, never a backlog); reliability/history/depth overridable for bag replay through the ROS 2
  QoS-override parameters, e.g. ``qos_overrides./segment_node/input/pointcloud.subscription.reliability``.
- out: ``~/output/pointcloud/{segmentation,visualization,filtered}`` (reliable, keep last 1; overridable
  the same way). Each is built and published only while it has subscribers; with no subscriber on any
  output an incoming scan is dropped before decoding (no work at all).
- ``~/debug/processing_time/{preprocess,inference,postprocess,total}_ms``, ``~/debug/cyclic_time_ms`` (time
  between processed scans) and ``~/debug/pipeline_latency_ms`` (now - header stamp) as std_msgs/Float64:
  Autoware publishes these as tier4_debug_msgs/Float64Stamped, which is not available from PyPI.
- ``/diagnostics`` diagnostic_msgs/DiagnosticArray once a second: OK, or WARN when a scan in the last
  period took longer than ``latency_budget_ms``; counts of processed / rejected / failed / skipped scans.

Parameters: see config/segment.param.yaml and schema/segment.param.schema.json (declared read-only, typed,
with ranges and descriptions). An invalid value stops start-up with a message naming the parameter.
"""
from __future__ import annotations

import sys
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64

from elite_ros.handler import OUTPUTS, PROCESSING_STAGES, SegmentationHandler
from elite_ros.params import ParameterError, SegmentParams, parameter_schema

NODE_NAME = "segment_node"
INPUT_TOPIC = "~/input/pointcloud"
OUTPUT_TOPIC = "~/output/pointcloud/{}"
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0  # malformed-cloud warnings at most this often


def input_qos() -> QoSProfile:
    """Sensor data: newest scan only, never a backlog (rclcpp::SensorDataQoS with depth 1).

    A fresh profile per call: rclpy applies QoS-override parameters to the profile object in place.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Reliable so RViz / reliable subscribers match; keep last 1 so a slow one never holds us back."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


DEBUG_QOS = 10
_SCHEMA_TYPES = {
    "string": ParameterType.PARAMETER_STRING, "boolean": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER, "number": ParameterType.PARAMETER_DOUBLE,
    "array": ParameterType.PARAMETER_STRING_ARRAY,
}


def parameter_descriptor(name: str, prop: dict[str, Any]) -> ParameterDescriptor:
    """A read-only ParameterDescriptor (type, description, range, constraints) from a schema property."""
    descriptor = ParameterDescriptor(
        name=name, type=_SCHEMA_TYPES[prop["type"]], description=prop["description"], read_only=True,
    )
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
            value = list(value)
        values[name] = value
    return SegmentParams.from_dict(values)


class SegmentNode(Node):
    """LiDAR semantic segmentation node (see the module docstring for topics and QoS)."""

    def __init__(self, node_name: str = NODE_NAME, *, segmenter: Any = None, **kwargs: Any) -> None:
        """`segmenter`: an already loaded Segmenter to use instead of loading the `checkpoint` parameter's
        (for embedding in other processes); `kwargs` go to rclpy's Node (context, parameter_overrides...)."""
        super().__init__(node_name, **kwargs)
        self.params = declare_segment_parameters(self)
        if segmenter is None:
            self.handler = SegmentationHandler.from_params(self.params)
        else:
            self.handler = SegmentationHandler(segmenter, self.params)
        qos_overrides = QoSOverridingOptions.with_default_policies()
        self._input = self.create_subscription(
            PointCloud2, INPUT_TOPIC, self._on_cloud, input_qos(), qos_overriding_options=qos_overrides,
        )
        outputs = [o for o in OUTPUTS if o != "visualization" or self.params.publish_rgb]
        self._outputs = {
            name: self.create_publisher(PointCloud2, OUTPUT_TOPIC.format(name), output_qos(),
                                        qos_overriding_options=qos_overrides)
            for name in outputs
        }
        self._debug_stage = {
            stage: self.create_publisher(Float64, f"~/debug/processing_time/{stage}_ms", DEBUG_QOS)
            for stage in PROCESSING_STAGES
        }
        self._debug_cyclic = self.create_publisher(Float64, "~/debug/cyclic_time_ms", DEBUG_QOS)
        self._debug_latency = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", DEBUG_QOS)
        self._diagnostics = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DEBUG_QOS)
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics)
        self.skipped_no_subscriber = 0
        self._last_processed_ns: int | None = None
        self._period_max_total_ms = 0.0
        self._last_total_ms: float | None = None
        self._hardware_id = str(getattr(self.handler.segmenter, "device", self.params.device))
        self.get_logger().info(
            f"segmenting {self._input.topic_name} -> {', '.join(p.topic_name for p in self._outputs.values())} "
            f"on {self._hardware_id}, checkpoint {self.params.checkpoint or '(bundled default)'} with "
            f"{self.handler.classes.num_classes} classes; filtered: {', '.join(self.params.filtered_classes) or 'none'}"
        )
        if not self.handler.trained:
            self.get_logger().warning("the checkpoint's weights are UNTRAINED: the labels are meaningless")
        hint = self.handler.precision_hint
        if hint:
            self.get_logger().info(hint)

    @property
    def output_topics(self) -> dict[str, str]:
        """output name -> resolved topic name."""
        return {name: pub.topic_name for name, pub in self._outputs.items()}

    def _on_cloud(self, msg: PointCloud2) -> None:
        wanted = [name for name, pub in self._outputs.items() if pub.get_subscription_count() > 0]
        if not wanted:  # nobody listens: do nothing at all
            self.skipped_no_subscriber += 1
            return
        try:
            result = self.handler.process(msg, wanted)
        except ParameterError as error:  # e.g. label_format would overwrite the input's `label` field
            self.get_logger().error(f"{error} (failed {self.handler.counters.failed})",
                                    throttle_duration_sec=LOG_THROTTLE_S)
            return
        if not result.ok:
            self.get_logger().warning(
                f"{result.error} (rejected {self.handler.counters.rejected}, failed {self.handler.counters.failed})",
                throttle_duration_sec=LOG_THROTTLE_S,
            )
            return
        for name in wanted:
            self._outputs[name].publish(result.outputs[name])
        self._publish_debug(msg, result.timings_ms)

    def _publish_debug(self, msg: PointCloud2, timings_ms: dict[str, float]) -> None:
        now_ns = self.get_clock().now().nanoseconds
        for stage, pub in self._debug_stage.items():
            pub.publish(Float64(data=float(timings_ms[stage])))
        if self._last_processed_ns is not None:
            self._debug_cyclic.publish(Float64(data=(now_ns - self._last_processed_ns) / 1e6))
        self._last_processed_ns = now_ns
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._debug_latency.publish(Float64(data=(now_ns - stamp_ns) / 1e6))
        self._last_total_ms = timings_ms["total"]
        self._period_max_total_ms = max(self._period_max_total_ms, timings_ms["total"])

    def diagnostic_status(self) -> DiagnosticStatus:
        """OK, or WARN when a scan since the last report exceeded the latency budget; with counters."""
        c = self.handler.counters
        budget = self.params.latency_budget_ms
        over = self._period_max_total_ms > budget
        level = DiagnosticStatus.WARN if over else DiagnosticStatus.OK
        message = (f"slowest scan {self._period_max_total_ms:.1f} ms > budget {budget:.1f} ms" if over
                   else "segmenting within the latency budget" if c.processed else "waiting for scans / subscribers")
        values = {
            "processed": c.processed, "rejected": c.rejected, "failed": c.failed,
            "skipped_no_subscriber": self.skipped_no_subscriber, "points": c.points,
            "last_total_ms": "n/a" if self._last_total_ms is None else f"{self._last_total_ms:.3f}",
            "max_total_ms_since_last_report": f"{self._period_max_total_ms:.3f}",
            "latency_budget_ms": f"{budget:.3f}", "device": self._hardware_id,
            "checkpoint": self.params.checkpoint or "(bundled default)",
            "weights": "trained" if self.handler.trained else "UNTRAINED",
            "last_error": self.handler.last_error or "",
        }
        return DiagnosticStatus(
            level=level, name=f"{self.get_name()}: lidar segmentation", message=message,
            hardware_id=self._hardware_id, values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=[self.diagnostic_status()])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)
        self._period_max_total_ms = 0.0


def main(args: list[str] | None = None) -> int:
    """Console script `segment_node`: run the node until shutdown; exit 2 on an invalid parameter."""
    rclpy.init(args=args)
    node = None
    try:
        node = SegmentNode()
        rclpy.spin(node)
    except ParameterError as error:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"{error}; not starting")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
