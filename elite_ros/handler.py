"""One PointCloud2 in, the labelled output clouds out, with timings and counters. No ROS import.

The rclpy node (`elite_ros.node`), bag replay (`elite_ros.replay`), evaluation and the demo all call
`SegmentationHandler.process`, so what runs in the car is what the tests and the bag tools run.

Per message:
1. `cloud.decode` -> finite points (any field layout); a malformed message raises `CloudFormatError`,
   which `process` counts as *rejected* and reports (the caller logs it; nothing is published).
2. Range limits (`min_range` <= |xyz| <= `max_range`, metres, sensor origin) and intensity normalisation:
   raw / `intensity_max` -> reflectance in KITTI's 0..1 (absent intensity -> the network sees zeros). That
   is the sensor's half of the intensity rule; the Segmenter then multiplies by the checkpoint's
   `intensity_scale` (network intensity = raw / intensity_max x intensity_scale, `elite_ros.segmenter`).
3. `Segmenter.predict` -> class id and probability for every message point (0 = unlabelled for dropped,
   non-finite and out-of-range points).
4. The requested outputs: segmentation (input + `class_id`/`label` [+ `probability`]), visualization
   (x, y, z, rgb), filtered (input minus `filtered_classes`); all carry the input header. Class names,
   palette and the raw ids of `label` are the model's (`ScanSegmenter.classes`: the checkpoint's tables),
   and `filtered_classes` must name classes of that model (ParameterError otherwise).

Input fields are never overwritten: a cloud that already has the segmentation's label field (`class_id`
or `label`, per `label_format`) or `probability` (when `publish_probability`) -- e.g. a labelled KITTI bag
whose `label` is ground truth, or an already segmented bag -- makes `process` raise ParameterError naming
the field and the parameter to change (counted as failed). Choose the other `label_format`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from elite_ros.cloud import (
    CLASS_ID_FIELD,
    LABEL_FIELD,
    PROBABILITY_FIELD,
    CloudFormatError,
    Scan,
    decode,
    filter_cloud,
    visualization_cloud,
    with_labels,
)
from elite_ros.labels import SEMANTIC_KITTI, ClassTable
from elite_ros.params import ParameterError, SegmentParams

if TYPE_CHECKING:
    import torch

    from elite_ros.camera import CameraModel
    from elite_ros.segmenter import Prediction

OUTPUTS = ("segmentation", "visualization", "filtered")
#: the keys of `HandlerResult.timings_ms`: Autoware's debug processing_time stages
PROCESSING_STAGES = ("preprocess", "inference", "postprocess", "total")
#: PointField datatype -> raw value of full reflectance when `intensity_max` is 0 (auto)
AUTO_INTENSITY_MAX = {1: 127.0, 2: 255.0, 3: 32767.0, 4: 65535.0, 5: 2147483647.0, 6: 4294967295.0, 7: 1.0, 8: 1.0}


@dataclass
class HandlerCounters:
    """Running totals since start-up."""

    received: int = 0  # messages given to `process`
    processed: int = 0  # segmented and turned into outputs
    rejected: int = 0  # malformed clouds (CloudFormatError), skipped
    failed: int = 0  # valid clouds whose segmentation raised (e.g. out of GPU memory), skipped
    points: int = 0  # message points of processed clouds


@dataclass
class HandlerResult:
    """Outcome of one message. `outputs` holds the requested clouds (name -> message) when `ok`."""

    header: Any
    outputs: dict[str, Any] = field(default_factory=dict)
    class_id: np.ndarray | None = None  # (num_points,) uint8 training ids
    probability: np.ndarray | None = None  # (num_points,) float32
    num_points: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # why the message was skipped

    @property
    def ok(self) -> bool:
        return self.error is None


class ScanSegmenter(Protocol):
    """What the handler uses of a segmenter; `elite_ros.segmenter.Segmenter` is the one `from_params` builds."""

    @property
    def device(self) -> torch.device: ...

    @property
    def classes(self) -> ClassTable:
        """The model's classes: names, palette (C, 3) uint8 RGB, learning map and its inverse."""
        ...

    @property
    def trained(self) -> bool: ...

    def predict(self, scan: Scan, image: np.ndarray | None = None, camera: CameraModel | None = None) -> Prediction:
        """A class id and probability for every message point of `scan`, with timings (ms); a fusion model
        also reads `image` through `camera` (the handler passes them only when there is an image)."""
        ...


class SegmentationHandler:
    """Labels PointCloud2 messages with a `ScanSegmenter` according to `SegmentParams`."""

    def __init__(self, segmenter: ScanSegmenter, params: SegmentParams | None = None) -> None:
        self.segmenter = segmenter
        self.params = params or SegmentParams()
        self.counters = HandlerCounters()
        self.last_error: str | None = None
        #: the model's classes (SemanticKITTI's for a segmenter that names none, e.g. None in prepare-only use)
        self.classes: ClassTable = getattr(segmenter, "classes", None) or SEMANTIC_KITTI
        self._filtered_ids = self.params.filtered_class_ids(self.classes)  # ParameterError for unknown names

    @classmethod
    def from_params(cls, params: SegmentParams | None = None, *, warmup: bool = True) -> SegmentationHandler:
        """Load the checkpoint named by `params` (empty = bundled default) on its device.

        Sets torch's process-wide CPU thread count to `params.threads` first (`elite_ros.cpu_threads`), so
        the warm-up and every scan run on it. Raises ParameterError naming `checkpoint`, `device` or
        `precision` when they cannot be used.
        """
        from elite_ros.checkpoint import CheckpointError
        from elite_ros.cpu_threads import set_torch_threads
        from elite_ros.device import resolve_device, resolve_precision
        from elite_ros.segmenter import Segmenter
        from elite_ros.sparse import BackendError

        params = params or SegmentParams()
        try:
            device = resolve_device(params.device)
        except ValueError as error:
            raise ParameterError("device", str(error)) from None
        try:
            resolve_precision(params.precision, device)
        except ValueError as error:
            raise ParameterError("precision", str(error)) from None
        checkpoint = _expand(params.checkpoint)  # one expanded path for the check and the load
        if checkpoint and not Path(checkpoint).is_file():
            raise ParameterError("checkpoint", f"no such file: {params.checkpoint}")
        set_torch_threads(params.threads)
        try:
            segmenter = Segmenter.from_checkpoint(
                checkpoint or None, device=params.device, precision=params.precision,
                backend=params.backend, tta_votes=params.tta_votes, max_points=params.max_points or None,
                warmup=warmup,
            )
        except (CheckpointError, OSError) as error:  # unreadable file, metadata the model refuses
            raise ParameterError("checkpoint", str(error)) from None
        except BackendError as error:  # backend unknown, not importable here, or failing its warm-up
            raise ParameterError("backend", str(error)) from None
        return cls(segmenter, params)

    @property
    def trained(self) -> bool:
        """False when the weights are the untrained default (labels are meaningless)."""
        return bool(getattr(self.segmenter, "trained", False))

    @property
    def precision_hint(self) -> str | None:
        """A start-up note when fp32 runs on a CPU that would run bf16 natively, else None."""
        from elite_ros.device import cpu_supports_precision

        device = getattr(self.segmenter, "device", None)
        if getattr(device, "type", None) != "cpu" or self.params.precision != "fp32":
            return None
        if not cpu_supports_precision("bf16"):
            return None
        return ("this CPU runs bf16 natively (AVX512-BF16 / AMX): precision bf16 is likely faster here, with "
                "labels that differ from fp32's on a few points; compare with `elite-ros benchmark -p precision=bf16`")

    # ------------------------------------------------------------------------------------ per message
    def prepare(self, msg: Any) -> Scan:
        """Decode `msg` and apply range limits and intensity normalisation. Raises CloudFormatError."""
        p = self.params
        scan = decode(msg, intensity_field=p.intensity_fields)
        xyz, intensity, index = scan.xyz, scan.intensity, scan.index
        if xyz.shape[0]:
            distance = np.sqrt(np.einsum("ij,ij->i", xyz, xyz, dtype=np.float32))
            inside = (distance >= p.min_range) & (distance <= p.max_range)
            if not inside.all():
                xyz, index = xyz[inside], index[inside]
                intensity = intensity[inside] if intensity is not None else None
        if intensity is not None:
            intensity = intensity.astype(np.float32) / np.float32(self._intensity_max(msg))
        return dataclasses.replace(scan, xyz=xyz, intensity=intensity, index=index)

    def _intensity_max(self, msg: Any) -> float:
        if self.params.intensity_max > 0:
            return self.params.intensity_max
        by_name = {f.name: int(f.datatype) for f in msg.fields}
        for name in self.params.intensity_fields:
            if name in by_name:
                return AUTO_INTENSITY_MAX.get(by_name[name], 1.0)
        return 1.0

    @property
    def uses_camera(self) -> bool:
        """True when the model is a fusion model (it reads camera images; `process(image=, camera=)`)."""
        return getattr(self.segmenter, "camera_input", None) is not None

    def process(self, msg: Any, outputs: Collection[str] = OUTPUTS, *, image: np.ndarray | None = None,
                camera: CameraModel | None = None) -> HandlerResult:
        """Segment one message and build the requested `outputs` (names from OUTPUTS). A fusion model reads
        `image` ((H, W, 3) uint8 RGB, its `camera`), when given, and otherwise runs on its imputation path.

        Never raises for bad input: a malformed cloud gives `ok == False` with the reason and counts as
        rejected; a segmentation failure counts as failed. Raises ParameterError (counted as failed) when
        the segmentation output would overwrite a field the input already has (see the module docstring):
        a configuration problem, not bad input. Timings (ms) per PROCESSING_STAGES: preprocess (decode,
        filters, voxelisation), inference (network), postprocess (labels back to points, output clouds), total.
        """
        unknown = set(outputs) - set(OUTPUTS)
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)} (known: {', '.join(OUTPUTS)})")
        start = time.perf_counter()
        self.counters.received += 1
        header = getattr(msg, "header", None)
        if "segmentation" in outputs:
            self._refuse_overwrite(msg)
        try:
            scan = self.prepare(msg)
        except CloudFormatError as error:
            return self._skip(header, f"malformed PointCloud2: {error}", rejected=True)
        except Exception as error:  # noqa: BLE001 - a message the decoder did not foresee: refused, counted
            return self._skip(header, f"malformed PointCloud2: {type(error).__name__}: {error}", rejected=True)
        decoded = time.perf_counter()
        try:
            if image is not None and self.uses_camera:
                prediction = self.segmenter.predict(scan, image, camera)
            else:
                prediction = self.segmenter.predict(scan)
            predicted = time.perf_counter()
            built = self._outputs(msg, prediction.class_id, prediction.probability, outputs)
        except CloudFormatError as error:
            return self._skip(header, f"malformed PointCloud2: {error}", rejected=True)
        except Exception as error:  # noqa: BLE001 - the node must keep serving; counted and reported
            return self._skip(header, f"segmentation failed: {type(error).__name__}: {error}", rejected=False)
        end = time.perf_counter()
        seg = prediction.timings_ms  # the segmenter's PREDICTION_STAGES
        timings = {
            "preprocess": (decoded - start) * 1e3 + seg.get("preprocess", 0.0) + seg.get("voxelise", 0.0),
            "inference": seg.get("network", 0.0),
            "postprocess": seg.get("postprocess", 0.0) + (end - predicted) * 1e3,
            "total": (end - start) * 1e3,
        }
        self.counters.processed += 1
        self.counters.points += int(scan.num_points)
        return HandlerResult(header=header, outputs=built, class_id=prediction.class_id,
                             probability=prediction.probability, num_points=int(scan.num_points), timings_ms=timings)

    def _refuse_overwrite(self, msg: Any) -> None:
        """Raise ParameterError (counted as failed) when the segmentation would replace an input field."""
        p = self.params
        try:
            names = {getattr(f, "name", None) for f in getattr(msg, "fields", ())}
        except TypeError:  # fields is no list of fields (unhashable names, not iterable): prepare refuses it
            return
        label = LABEL_FIELD if p.label_format == "label" else CLASS_ID_FIELD
        if label in names:
            other = CLASS_ID_FIELD if label == LABEL_FIELD else LABEL_FIELD
            error = ParameterError("label_format", f"the input cloud already has a '{label}' field (ground truth or "
                                   f"an earlier segmentation); elite_ros never overwrites input fields: set "
                                   f"label_format to {other}")
        elif p.publish_probability and PROBABILITY_FIELD in names:
            error = ParameterError("publish_probability", f"the input cloud already has a '{PROBABILITY_FIELD}' "
                                   f"field; elite_ros never overwrites input fields: set publish_probability false")
        else:
            return
        self.counters.failed += 1
        self.last_error = str(error)
        raise error

    def _outputs(
        self, msg: Any, class_id: np.ndarray, probability: np.ndarray, wanted: Collection[str]
    ) -> dict[str, Any]:
        p = self.params
        built: dict[str, Any] = {}
        if "segmentation" in wanted:
            built["segmentation"] = with_labels(
                msg, class_id, probability if p.publish_probability else None,
                label_format=p.label_format, classes=self.classes,
            )
        if "visualization" in wanted:
            built["visualization"] = visualization_cloud(msg, class_id, self.classes.palette)
        if "filtered" in wanted:
            keep = ~np.isin(class_id, self._filtered_ids)
            if not p.filtered_keep_unlabelled:  # class 0: outside the grid / range limits, non-finite
                keep &= class_id != 0
            built["filtered"] = filter_cloud(msg, keep)
        return built

    def record_failure(self, header: Any, reason: str) -> HandlerResult:
        """Count a message that failed outside `process` (e.g. while the node published its outputs) as failed,
        with its reason as `last_error`."""
        return self._skip(header, reason, rejected=False)

    def _skip(self, header: Any, reason: str, *, rejected: bool) -> HandlerResult:
        if rejected:
            self.counters.rejected += 1
        else:
            self.counters.failed += 1
        self.last_error = reason
        return HandlerResult(header=header, error=reason)


def _expand(path: str) -> str:
    """`path` with ``~`` expanded ("" stays "")."""
    return str(Path(path).expanduser()) if path else ""


__all__ = ["OUTPUTS", "PROCESSING_STAGES", "HandlerCounters", "HandlerResult", "ScanSegmenter", "SegmentationHandler"]
