"""The rclpy segment node: thin glue around `SegmentationHandler` (console script `segment_node`).

Topics (relative to the node; remap with the launch file):

- in:  ``~/input/pointcloud`` sensor_msgs/PointCloud2, sensor-data QoS (best effort, keep last 1: always the
  newest scan, never a backlog); reliability/history/depth overridable for bag replay through the ROS 2
  QoS-override parameters. Their key names the topic AFTER remapping: with
  ``-r ~/input/pointcloud:=/velodyne_points`` it is ``qos_overrides./velodyne_points.subscription.reliability``
  (without a remap ``qos_overrides./segment_node/input/pointcloud.subscription.reliability``); an override
  naming a topic the node does not have stops start-up, naming the node's topics.
- out: ``~/output/pointcloud/{segmentation,visualization,filtered}`` (reliable, keep last `OUTPUT_DEPTH`;
  overridable the same way). Each is built and published only while it has subscribers; with no
  subscriber on any output an incoming scan is dropped before decoding (no work at all).
- ``~/debug/processing_time/{preprocess,inference,postprocess,total}_ms``, ``~/debug/cyclic_time_ms`` (time
  between processed scans) and ``~/debug/pipeline_latency_ms`` (now - header stamp) as std_msgs/Float64:
  Autoware publishes these as tier4_debug_msgs/Float64Stamped, which is not available from PyPI.
- ``/diagnostics`` diagnostic_msgs/DiagnosticArray once a second, from a timer in its own callback group
  (`main` spins a MultiThreadedExecutor, so a report is never held up by a scan): OK, or WARN on stale
  input, sustained overruns of ``latency_budget_ms``, refused clouds or a late report
  (`elite_ros.diagnostics`); counts of processed / rejected / failed / skipped scans, malloc's bytes in use
  between scans (``heap_in_use_bytes``: RSS hides a slow leak, `elite_ros.heap`), and for a fusion
  checkpoint of scans with and without an image and of late images.
- camera (fusion checkpoints only, docs/reference.md §14; ``camera.image_topic`` set): sensor_msgs/Image
  and its CameraInfo (``camera.info_topic``), sensor-data QoS, in the diagnostics' callback group (short
  callbacks, decoded and kept by `elite_ros.camera_feed.CameraFeed`); the LiDAR -> camera transform is
  ``camera.extrinsic`` or, when that is empty and tf2_ros is importable, TF (cloud frame -> image frame).
  Each scan takes the image nearest to its stamp within ``camera.sync_tolerance_ms``; a scan whose image
  is late, missing or stale runs at once on the imputation path, never dropped or held back. A LiDAR-only
  checkpoint ignores the camera parameters.

Parameters: see config/segment.param.yaml and schema/segment.param.schema.json (declared read-only, typed,
with ranges and descriptions). An invalid value, or a key the node does not have (a typo like `max_rang`),
stops start-up with a message naming the parameter, as `elite-ros segment` does; a params file that is
missing or not valid YAML stops `segment_node` with one line naming the file and line. The network runs on
``threads`` CPU threads, with passive OpenMP waiting (`elite_ros.cpu_threads`).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Float64

from elite_ros.camera_feed import CameraFeed, stamp_ns
from elite_ros.cpu_threads import prepare_openmp, resolve_threads, set_niceness
from elite_ros.diagnostics import WARN, HealthMonitor, resolve_budget_ms
from elite_ros.handler import OUTPUTS, PROCESSING_STAGES, SegmentationHandler
from elite_ros.heap import heap_in_use
from elite_ros.node_parameters import declare_segment_parameters, params_files, refuse_unknown_parameters
from elite_ros.params import ParameterError, read_params_document
from elite_ros.reject_log import RejectLog, format_stamp

NODE_NAME = "segment_node"
INPUT_TOPIC = "~/input/pointcloud"
OUTPUT_TOPIC = "~/output/pointcloud/{}"
DIAGNOSTICS_TOPIC = "/diagnostics"
DIAGNOSTICS_PERIOD_S = 1.0
#: reliable outputs keep this many clouds for repairs: with 1, a 2-4 MB cloud whose fragments are still
#: being repaired when the next is published is lost (benchmarks/live.py, README "Large clouds")
OUTPUT_DEPTH = 5
#: executor threads: scans in one callback group, diagnostics and debug timers (and camera messages) in the other
EXECUTOR_THREADS = 2
CAMERA_DEPTH = 5  # camera images queued per subscription (the feed keeps its own buffer of decoded ones)


def input_qos() -> QoSProfile:
    """Sensor data: newest scan only, never a backlog (rclcpp::SensorDataQoS with depth 1).

    A fresh profile per call: rclpy applies QoS-override parameters to the profile object in place.
    """
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos() -> QoSProfile:
    """Reliable so RViz / reliable subscribers match; keep last `OUTPUT_DEPTH` so a large cloud survives
    its repairs while the next is published, and a subscriber that cannot keep up never holds us back."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


DEBUG_QOS = 10
class SegmentNode(Node):
    """LiDAR semantic segmentation node (see the module docstring for topics and QoS)."""

    def __init__(self, node_name: str = NODE_NAME, *, segmenter: Any = None, **kwargs: Any) -> None:
        """`segmenter`: an already loaded Segmenter to use instead of loading the `checkpoint` parameter's
        (for embedding in other processes); `kwargs` go to rclpy's Node (context, parameter_overrides...)."""
        super().__init__(node_name, **kwargs)
        self.params = declare_segment_parameters(self)
        self._cloud_group = MutuallyExclusiveCallbackGroup()  # one scan at a time
        self._timer_group = MutuallyExclusiveCallbackGroup()  # diagnostics run beside a scan
        qos_overrides = QoSOverridingOptions.with_default_policies()
        self._input = self.create_subscription(
            PointCloud2, INPUT_TOPIC, self._on_cloud_guarded, input_qos(), qos_overriding_options=qos_overrides,
            callback_group=self._cloud_group,
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
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self.publish_diagnostics,
                                                    callback_group=self._timer_group)
        refuse_unknown_parameters(self)  # every entity has declared its QoS overrides: before the model loads
        self.niceness = self._apply_niceness()
        if segmenter is None:
            self.handler = SegmentationHandler.from_params(self.params)
        else:
            self.handler = SegmentationHandler(segmenter, self.params)
        self.skipped_no_subscriber = 0
        self._cloud_frame = ""  # the LiDAR frame (for a TF lookup of the camera's extrinsic)
        self._last_processed_ns: int | None = None
        self._hardware_id = str(getattr(self.handler.segmenter, "device", self.params.device))
        device_type = getattr(getattr(self.handler.segmenter, "device", None), "type", "cpu")
        self.latency_budget_ms = resolve_budget_ms(self.params.latency_budget_ms, device_type)
        self.health = HealthMonitor(budget_ms=self.latency_budget_ms, stale_input_s=self.params.stale_input_s,
                                    period_s=DIAGNOSTICS_PERIOD_S, now_s=time.monotonic())
        self._reject_log = RejectLog()
        #: malloc's bytes in use after the last cloud callback (`heap.heap_in_use`, sampled once a period): RSS
        #: hides a slow leak behind the freed memory the heap keeps; None until sampled or without glibc
        self.heap_in_use: int | None = None
        self._heap_sampled_s = float("-inf")
        self.camera_feed = self._subscribe_camera()
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
        self.get_logger().info(f"{resolve_threads(self.params.threads)} CPU thread(s) at niceness {self.niceness}; "
                               f"latency budget {self.latency_budget_ms:g} ms, stale input after "
                               f"{self.params.stale_input_s:g} s")

    def _apply_niceness(self) -> int:
        """The `nice` parameter applied to every thread (`cpu_threads.set_niceness`); the niceness the node
        runs at. One warning, and the node runs as started, when the OS refuses."""
        started = os.getpriority(os.PRIO_PROCESS, 0)
        if self.params.nice == 0:
            return started
        try:
            return set_niceness(self.params.nice)
        except PermissionError as error:
            self.get_logger().warning(
                f"nice {self.params.nice} refused by the OS ({error.strerror}): running at niceness {started}; "
                "a niceness below the current one needs root, CAP_SYS_NICE or an RLIMIT_NICE that allows it")
            return started

    def _subscribe_camera(self) -> CameraFeed | None:
        """The camera subscriptions and their feed, for a fusion checkpoint with ``camera.image_topic``."""
        camera = self.params.camera
        if not self.handler.uses_camera:
            if camera.enabled:
                self.get_logger().info("camera.* ignored: the checkpoint is LiDAR-only")
            return None
        if not camera.enabled:
            self.get_logger().info("fusion checkpoint without camera.image_topic: every scan runs on the "
                                   "imputation path")
            return None
        feed = CameraFeed(int(camera.sync_tolerance_ms * 1e6), camera.lidar_to_camera())
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=CAMERA_DEPTH,
                         reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE)
        self._image_sub = self.create_subscription(Image, camera.image_topic, self._on_image, qos,
                                                   callback_group=self._timer_group)
        self._info_sub = self.create_subscription(CameraInfo, camera.camera_info_topic, feed.set_camera_info, qos,
                                                  callback_group=self._timer_group)
        self._tf_buffer = None
        if not feed.has_extrinsic:
            try:  # not on PyPI: only in a ROS installation
                import tf2_ros
            except ImportError:
                self.get_logger().warning("camera.extrinsic is empty and tf2_ros is not importable: no image can "
                                          "be used until a LiDAR -> camera transform is known")
            else:
                self._tf_buffer = tf2_ros.Buffer()
                self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
        self.get_logger().info(f"camera: {self._image_sub.topic_name} + {self._info_sub.topic_name}, pairing "
                               f"within {camera.sync_tolerance_ms:g} ms")
        return feed

    def _on_image(self, msg: Image) -> None:
        feed = self.camera_feed
        if feed is None:
            return
        try:
            feed.add_image_msg(msg)
        except ValueError as error:  # an encoding we cannot read: the scans run without it
            line = self._reject_log.line(f"image refused: {error}", topic=self._image_sub.topic_name,
                                         stamp=format_stamp(msg.header.stamp.sec, msg.header.stamp.nanosec),
                                         now_s=time.monotonic())
            if line is not None:
                self.get_logger().warning(line)
        if not feed.has_extrinsic and self._tf_buffer is not None and self._cloud_frame:
            self._extrinsic_from_tf(msg.header.frame_id)

    def _extrinsic_from_tf(self, image_frame: str) -> None:
        """The LiDAR -> camera transform from TF (tf2_ros), once both frames are known."""
        from elite_ros.transforms import transform_from_msg

        assert self._tf_buffer is not None and self.camera_feed is not None
        try:
            stamped = self._tf_buffer.lookup_transform(image_frame, self._cloud_frame, rclpy.time.Time())
        except Exception:  # noqa: BLE001 - tf2's lookup errors: not there yet, try with the next image
            return
        self.camera_feed.set_extrinsic(transform_from_msg(stamped).matrix)

    def _camera_for(self, msg: PointCloud2) -> tuple[Any, Any]:
        """(image, camera) for a scan, or (None, None): the imputation path."""
        feed = self.camera_feed
        if feed is None:
            return None, None
        self._cloud_frame = msg.header.frame_id
        return feed.match(stamp_ns(msg.header))

    @property
    def output_topics(self) -> dict[str, str]:
        """output name -> resolved topic name."""
        return {name: pub.topic_name for name, pub in self._outputs.items()}

    def _on_cloud_guarded(self, msg: PointCloud2) -> None:
        """The input callback: `_on_cloud`, with any exception turned into a counted (failed), logged refusal,
        so that no single message can stop the executor."""
        try:
            self._on_cloud(msg)
        except Exception as error:  # noqa: BLE001 - the node keeps serving; the reason is counted and logged
            reason = f"unexpected {type(error).__name__}: {' '.join(str(error).split())}"
            self.handler.record_failure(getattr(msg, "header", None), reason)
            self._refused(msg, reason)
        now_s = time.monotonic()
        if now_s - self._heap_sampled_s >= DIAGNOSTICS_PERIOD_S:  # between scans: no scan's temporaries counted
            self._heap_sampled_s, self.heap_in_use = now_s, heap_in_use()

    def _on_cloud(self, msg: PointCloud2) -> None:
        now_s = time.monotonic()
        self.health.cloud_arrived(now_s)
        wanted = [name for name, pub in self._outputs.items() if pub.get_subscription_count() > 0]
        if not wanted:  # nobody listens: do nothing at all
            self.skipped_no_subscriber += 1
            return
        self.health.scan_started(now_s)
        image, camera = self._camera_for(msg)
        try:
            result = self.handler.process(msg, wanted, image=image, camera=camera)
        except ParameterError as error:  # e.g. label_format would overwrite the input's `label` field
            self._refused(msg, str(error), configuration=True)
            return
        if not result.ok:
            self._refused(msg, str(result.error))
            return
        for name in wanted:
            self._outputs[name].publish(result.outputs[name])
        self.health.scan_finished(result.timings_ms["total"], time.monotonic())
        self._publish_debug(msg, result.timings_ms)

    def _refused(self, msg: PointCloud2, reason: str, *, configuration: bool = False) -> None:
        """Count a refused cloud and log it: topic, stamp, reason; one line per kind of reason per period."""
        self.health.scan_finished(None, time.monotonic())
        self.health.cloud_refused(reason)
        stamp = format_stamp(msg.header.stamp.sec, msg.header.stamp.nanosec)
        line = self._reject_log.line(reason, topic=self._input.topic_name, stamp=stamp, now_s=time.monotonic())
        if line is None:
            return
        c = self.handler.counters
        line += f" [rejected {c.rejected}, failed {c.failed} since start-up]"
        if configuration:
            self.get_logger().error(line)
        else:
            self.get_logger().warning(line)

    def _publish_debug(self, msg: PointCloud2, timings_ms: dict[str, float]) -> None:
        now_ns = self.get_clock().now().nanoseconds
        for stage, pub in self._debug_stage.items():
            pub.publish(Float64(data=float(timings_ms[stage])))
        if self._last_processed_ns is not None:
            self._debug_cyclic.publish(Float64(data=(now_ns - self._last_processed_ns) / 1e6))
        self._last_processed_ns = now_ns
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self._debug_latency.publish(Float64(data=(now_ns - stamp_ns) / 1e6))

    def diagnostic_status(self) -> DiagnosticStatus:
        """This period's report (`elite_ros.diagnostics.HealthMonitor`) with the counters; starts the next."""
        c = self.handler.counters
        report = self.health.report(time.monotonic(), processed=c.processed,
                                    waiting_for_subscribers=self.skipped_no_subscriber > 0)
        values = {
            "processed": c.processed, "rejected": c.rejected, "failed": c.failed,
            "skipped_no_subscriber": self.skipped_no_subscriber, "points": c.points, **report.values,
            "device": self._hardware_id, "threads": resolve_threads(self.params.threads), "nice": self.niceness,
            "checkpoint": self.params.checkpoint or "(bundled default)",
            "weights": "trained" if self.handler.trained else "UNTRAINED",
            "last_error": self.handler.last_error or "",
            "heap_in_use_bytes": "" if self.heap_in_use is None else self.heap_in_use,
        }
        if self.camera_feed is not None:
            camera = self.camera_feed.counters
            values.update({"scans_with_image": camera.with_image, "scans_without_image": camera.without_image,
                           "images": camera.images, "late_images": camera.late_images,
                           "last_without_image": self.camera_feed.last_reason})
        return DiagnosticStatus(
            level=DiagnosticStatus.WARN if report.level == WARN else DiagnosticStatus.OK,
            name=f"{self.get_name()}: lidar segmentation", message=report.message,
            hardware_id=self._hardware_id, values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )

    def publish_diagnostics(self) -> None:
        array = DiagnosticArray(status=[self.diagnostic_status()])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics.publish(array)


def main(args: list[str] | None = None) -> int:
    """Console script `segment_node`: run the node until shutdown on a MultiThreadedExecutor (scans and
    diagnostics in their own callback groups); exit 2 with one line on a params file that is missing or
    not valid YAML, on arguments rcl refuses, and on an invalid or unknown parameter."""
    prepare_openmp()  # before the handler imports torch
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        for path in params_files(sys.argv if args is None else args):
            read_params_document(path)
        rclpy.init(args=args)
    except (ParameterError, FileNotFoundError, _rclpy.RCLError) as error:
        logger.fatal(f"{' '.join(str(error).split())}; not starting")
        return 2
    node = None
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    try:
        node = SegmentNode()
        executor.add_node(node)
        executor.spin()
    except ParameterError as error:
        logger.fatal(f"{error}; not starting")
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
