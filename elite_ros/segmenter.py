"""Scan in, labels out: checkpoint + device + precision + TTA around the student (no ROS import).

`Segmenter.predict(scan)` takes an `elite_ros.cloud.Scan` (``xyz`` (N, 3) float32 metres, ``intensity``
(N,) float32 or None, ``index`` (N,) int64 position of each point in the message, ``num_points`` = points
in the message; `cloud.scan_from_arrays` makes one from plain arrays) and returns one class id and
probability for EVERY message point:

- points outside the volume (strict, docs/reference.md §2), non-finite points and points the decoder
  dropped get class 0 (unlabelled) and probability 0;
- intensity: ``scan.intensity`` is reflectance in KITTI's unit, 0..1 (the handler makes it so: raw /
  `intensity_max`, the sensor's value of full reflectance). The network's input is that reflectance times
  `intensity_scale`, the checkpoint's record of what training multiplied its input intensity by (1.0 for
  KITTI's 0..1 as it is). So, end to end, **network intensity = raw / intensity_max x intensity_scale**:
  the sensor's factor comes from the node's parameter, the model's from its checkpoint, each applied
  once (here the model's, in `_prepare`). `intensity_scale=` overrides the checkpoint's value, e.g. for a
  caller that feeds raw values instead of reflectance (pass the checkpoint's scale / intensity_max);
- a missing intensity channel is read as zeros (the network still runs; accuracy drops for models trained
  with intensity);
- class = argmax over all classes (as the official test code), probability = softmax of that class; the
  classes (names, palette, learning map) are the checkpoint's (`classes`), SemanticKITTI's by default;
- with a point cap (`max_points`), a deterministic subsample runs the network: first one point per 0.1 m
  voxel (lowest index), then a seeded random choice among the rest; every other point takes the mean
  logits of the sampled points of its 0.1 m voxel, else of its voxel at the next coarser scale (0.2, 0.4,
  0.8, 1.6, ... m, doubling until one cell spans the volume), i.e. of its nearest sampled points by voxel;
- with `tta_votes` > 1, every vote is the scan rotated about z by U[0, 360) degrees and shifted by
  N(0, 0.1) m per axis (docs/reference.md §8, seeded, so the same scan always gives the same answer);
  logits are summed over the votes, the probability is the softmax of their mean;
- a fusion checkpoint (`model_kind: fusion`, `elite_ros.fusion`, ref §14) takes `predict(scan, image,
  camera)`: the camera image ((H, W, 3) uint8 RGB) and its `camera.CameraModel` (LiDAR -> pixel matrix and
  image size). In-range points are projected with the camera (before any TTA motion, as in training) and
  read the image at their pixel; every other point, and every point of a scan given without image (late,
  missing), runs on the imputation path. A LiDAR-only checkpoint ignores both arguments.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .camera import CameraInput, CameraModel, forward_camera
from .camera_link import ImageLink, camera_batch, link_image
from .checkpoint import (
    FUSION_KIND,
    CheckpointError,
    CheckpointMetadata,
    default_checkpoint,
    load_checkpoint,
    read_metadata,
)
from .cloud import Scan, scan_from_arrays  # noqa: F401 - scan_from_arrays: re-exported, callers import it here
from .config_loader import load_dataclass
from .device import resolve_device, resolve_precision
from .fusion import FusionConfig, FusionInput, FusionStudent
from .heap import retain_freed_memory
from .labels import ClassTable
from .point_cap import spread, subsample
from .sparse import BackendError
from .student import Student, StudentConfig, StudentInput
from .voxel import VoxelConfig, in_range_mask, voxelise
from .warmup import lidar_like_scan

TTA_TRANSLATION_STD = 0.1  # metres, ref §8 / §2 step 4: translation N(0, 0.1) per axis
TTA_SEED = 0  # votes are reproducible: same scan -> same answer
BOOKKEEPING_THREADS = 1  # torch threads for the index-heavy stages on the CPU (see _bookkeeping_threads)
WARMUP_RUNS = 2  # warm-up scans (elite_ros.warmup): the second finds the heap at a real scan's size
#: the keys of `Prediction.timings_ms`, in order
PREDICTION_STAGES = ("preprocess", "voxelise", "network", "postprocess", "total")


@dataclass
class Prediction:
    """class_id: (num_points,) uint8 training id, 0 = unlabelled. probability: (num_points,) float32 in
    [0, 1], 0 where unlabelled. timings_ms: per stage of PREDICTION_STAGES, milliseconds; in
    `predict_batch` each scan gets an equal share of the batch's time."""

    class_id: np.ndarray
    probability: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class _Prepared:
    """One scan after preprocessing: the points the network sees and where their results go."""

    num_points: int
    points: Tensor  # (K, 4) float32 on device: x y z + scaled intensity, in range
    message_index: Tensor  # (K,) int64 message position of each point
    sampled: Tensor | None  # (S,) int64 rows of `points` that run the network (None = all)
    camera_link: ImageLink | None = None  # its camera image and pixel links (fusion model, scan with image)

    @property
    def count(self) -> int:
        """Points that run the network (per TTA vote)."""
        return self.points.shape[0] if self.sampled is None else self.sampled.shape[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Segmenter:
    """The student with its checkpoint, ready to label scans. Build with `Segmenter.from_checkpoint`."""

    def __init__(self, model: Student | FusionStudent, metadata: CheckpointMetadata, *, device: torch.device,
                 dtype: torch.dtype = torch.float32, tta_votes: int = 1, max_points: int | None = None,
                 intensity_scale: float | None = None, warmup: bool = True, retain_memory: bool = True) -> None:
        if int(tta_votes) < 1:
            raise ValueError(f"tta_votes must be >= 1, got {tta_votes}")
        if max_points is not None and int(max_points) < 1:
            raise ValueError(f"max_points must be >= 1 or None, got {max_points}")
        scale = metadata.intensity_scale if intensity_scale is None else intensity_scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"intensity_scale must be a positive number, got {scale!r}")
        self.metadata = metadata
        self.device = device
        self.dtype = dtype
        self.tta_votes = int(tta_votes)
        self.max_points = None if max_points is None else int(max_points)
        self.intensity_scale = float(scale)
        self.voxel_config: VoxelConfig = metadata.voxel_config
        self.classes: ClassTable = metadata.classes  # CheckpointError when its tables disagree
        #: the camera input a fusion model expects (None: a LiDAR-only model, images are ignored)
        self.camera_input: CameraInput | None = metadata.camera_input
        self.model = model.to(device=device, dtype=dtype).eval()
        if retain_memory and device.type == "cpu":
            retain_freed_memory()  # process-wide: see elite_ros.heap
        if warmup:
            self.warm_up()

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, *, device: str = "auto", precision: str = "fp32",
                        backend: str = "auto", tta_votes: int = 1, max_points: int | None = None,
                        intensity_scale: float | None = None, warmup: bool = True,
                        retain_memory: bool = True) -> Segmenter:
        """Load a checkpoint (None = the bundled default, trained on synthetic data) onto `device`.

        Raises CheckpointError for a file or metadata that cannot be used, BackendError when the sparse
        backend cannot run here (or fails the warm-up), ValueError for a bad device or precision.

        precision: "fp32", or "fp16" / "bf16" on CUDA or on a CPU with native units for it (see
        `resolve_precision`). backend: sparse backend, "auto" picks the fastest available for inference.
        intensity_scale: the network's input intensity = scan intensity x this; None = the checkpoint's
        value (what training multiplied reflectance 0..1 by; see the module docstring).
        retain_memory: on the CPU, keep freed heap memory in the process (`elite_ros.heap`): no page
        faults per scan, resident memory stays at one scan's peak.
        """
        resolved = resolve_device(device)
        dtype = resolve_precision(precision, resolved)
        path = Path(path) if path is not None else default_checkpoint()
        metadata = read_metadata(path)
        model = _model_for(metadata, path, backend)
        load_checkpoint(path, model)
        segmenter = cls(model, metadata, device=resolved, dtype=dtype, tta_votes=tta_votes,
                        max_points=max_points, intensity_scale=intensity_scale, warmup=False,
                        retain_memory=retain_memory)
        backend_name = segmenter.backend  # fail now, not on the first scan, if the backend cannot run here
        if warmup:
            try:
                segmenter.warm_up()
            except RuntimeError as error:  # e.g. a kernel without this precision on this GPU
                raise BackendError(f"sparse backend {backend_name!r} failed a {precision} warm-up scan on "
                                   f"{resolved}: {error}") from error
        return segmenter

    @property
    def trained(self) -> bool:
        """False for untrained (random) weights: their labels mean nothing."""
        return bool(self.metadata.trained)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    @property
    def palette(self) -> np.ndarray:
        """(num_classes, 3) uint8 RGB."""
        return self.classes.palette

    @property
    def backend(self) -> str:
        """The sparse-convolution backend inference runs on."""
        with torch.inference_mode():
            return self.model.backend_for(self.device)

    def warm_up(self, runs: int = WARMUP_RUNS) -> None:
        """Run synthetic scans of a real scan's size and structure (`elite_ros.warmup`), so allocators,
        kernels and the heap are ready before the first real one (which is then as fast as the next)."""
        scan = lidar_like_scan(self.voxel_config)
        camera = forward_camera() if self.camera_input is not None else None  # a fusion model: its image path too
        image = None if camera is None else np.full((camera.height, camera.width, 3), 128, np.uint8)
        for _ in range(runs):
            self.predict(scan)
            if camera is not None:
                self.predict(scan, image, camera)

    # ---------------------------------------------------------------------------------- prediction
    def predict(self, scan: Scan, image: np.ndarray | None = None, camera: CameraModel | None = None) -> Prediction:
        """Label every point of one scan (see the module docstring for the rules); a fusion model reads
        `image` ((H, W, 3) uint8 RGB) through `camera`, None = the imputation path."""
        return self.predict_batch([scan], None if image is None else [image], None if camera is None else [camera])[0]

    @torch.inference_mode()
    def predict_batch(self, scans: Sequence[Scan], images: Sequence[np.ndarray | None] | None = None,
                      cameras: Sequence[CameraModel | None] | None = None) -> list[Prediction]:
        """Label several scans in one network call (bag replay). Timings are shared equally. images /
        cameras: one per scan (None entries: no image), for a fusion model."""
        if not scans:
            return []
        images = [None] * len(scans) if images is None else list(images)
        cameras = [None] * len(scans) if cameras is None else list(cameras)
        if len(images) != len(scans) or len(cameras) != len(scans):
            raise ValueError(f"{len(scans)} scans need as many images and cameras, got {len(images)} and "
                             f"{len(cameras)}")
        start = time.perf_counter()
        with self._bookkeeping_threads():
            prepared = [self._prepare(scan, position, image, camera)
                        for position, (scan, image, camera) in enumerate(zip(scans, images, cameras))]
        _sync(self.device)
        t_pre = time.perf_counter()

        with self._bookkeeping_threads():
            points, batch_index = self._network_batch(prepared)
            batch_size = len(prepared) * self.tta_votes
            voxels = voxelise(points[:, :3], batch_index, batch_size, self.voxel_config)
            self.model.prepare_voxels(voxels)
        _sync(self.device)
        t_vox = time.perf_counter()

        if points.shape[0] and isinstance(self.model, FusionStudent):
            extras = camera_batch([item.camera_link for item in prepared], [item.count for item in prepared],
                                  self.tta_votes, self.device)
            logits = self.model(FusionInput(points=points, voxels=voxels, **extras)).logits.float()
        elif points.shape[0]:
            logits = self.model(StudentInput(points=points, voxels=voxels)).logits.float()
        else:
            logits = points.new_zeros((0, len(self.classes.names)))
        _sync(self.device)
        t_net = time.perf_counter()

        results = self._postprocess(prepared, logits)  # a few large ops (softmax, scatter): all threads
        _sync(self.device)
        end = time.perf_counter()
        share = 1000.0 / len(scans)
        timings = {"preprocess": (t_pre - start) * share, "voxelise": (t_vox - t_pre) * share,
                   "network": (t_net - t_vox) * share, "postprocess": (end - t_net) * share,
                   "total": (end - start) * share}  # the PREDICTION_STAGES
        return [Prediction(class_id=c, probability=p, timings_ms=dict(timings)) for c, p in results]

    @contextlib.contextmanager
    def _bookkeeping_threads(self) -> Iterator[None]:
        """Index bookkeeping (filter, voxelise) on BOOKKEEPING_THREADS torch threads (CPU).

        These stages are hundreds of small ops (~0.1-1 ms each) that gain little from more threads but
        lose badly when the CPU is shared: each parallel op then waits a scheduler slice for its other
        thread (measured on a loaded 2-core machine: voxelise 1.9 s on 2 threads vs 51 ms on 1). The
        network and the postprocess (a few large ops: softmax over (N, 20), scatter; 8 ms on 2 threads vs
        16 ms on 1 for the 124,668-point scan) keep the caller's thread count. torch's thread count is
        process-wide: it is restored on exit.
        """
        previous = torch.get_num_threads()
        if self.device.type != "cpu" or previous <= BOOKKEEPING_THREADS:
            yield
            return
        torch.set_num_threads(BOOKKEEPING_THREADS)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    # ---------------------------------------------------------------------------------- stages
    def _prepare(self, scan: Scan, position: int, image: np.ndarray | None = None,
                 camera: CameraModel | None = None) -> _Prepared:
        xyz, intensity, index, num_points = _scan_arrays(scan, position)
        finite = np.isfinite(xyz).all(axis=1)
        keep = in_range_mask(xyz, self.voxel_config) & finite
        kept = np.flatnonzero(keep)
        points = np.empty((kept.shape[0], 4), dtype=np.float32)
        points[:, :3] = xyz[kept]
        if intensity is None:
            points[:, 3] = 0.0
        else:
            # the model's factor: network intensity = raw / intensity_max x intensity_scale (module docstring)
            values = intensity[kept].astype(np.float32) * np.float32(self.intensity_scale)
            points[:, 3] = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        tensor = torch.from_numpy(points).to(self.device)
        message_index = torch.from_numpy(index[kept]).to(self.device)
        sampled = None
        if self.max_points is not None and kept.shape[0] > self.max_points:
            sampled = subsample(tensor[:, :3], self.max_points, self.voxel_config)
        link = None
        if self.camera_input is not None and image is not None:
            link = link_image(points[:, :3], image, camera, self.camera_input, self.device, sampled,
                              f"scan {position}")
        return _Prepared(num_points=num_points, points=tensor, message_index=message_index, sampled=sampled,
                         camera_link=link)

    def _network_batch(self, prepared: list[_Prepared]) -> tuple[Tensor, Tensor]:
        """(points (Nb, 4) with every TTA vote, batch index (Nb,)); sample = scan * votes + vote."""
        chunks, batch = [], []
        generator = torch.Generator(device="cpu")
        for scan_number, item in enumerate(prepared):
            points = item.points if item.sampled is None else item.points.index_select(0, item.sampled)
            generator.manual_seed(TTA_SEED)
            for vote in range(self.tta_votes):
                voted = points if self.tta_votes == 1 else _tta_transform(points, generator)
                chunks.append(voted)
                batch.append(torch.full((points.shape[0],), scan_number * self.tta_votes + vote,
                                        dtype=torch.int64, device=self.device))
        if not chunks:
            return (torch.zeros((0, 4), device=self.device), torch.zeros(0, dtype=torch.int64, device=self.device))
        return torch.cat(chunks), torch.cat(batch)

    def _postprocess(self, prepared: list[_Prepared], logits: Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        results = []
        offset = 0
        for item in prepared:
            count = item.count
            votes = logits[offset:offset + count * self.tta_votes].view(self.tta_votes, count, logits.shape[1])
            offset += count * self.tta_votes
            mean_logits = votes.sum(dim=0) / self.tta_votes  # argmax of sum == argmax of mean
            class_id = torch.zeros(item.num_points, dtype=torch.uint8, device=self.device)
            probability = torch.zeros(item.num_points, dtype=torch.float32, device=self.device)
            if count:
                if item.sampled is None:
                    point_logits, known = mean_logits, None
                else:
                    point_logits, known = spread(item.points[:, :3], item.sampled, mean_logits, self.voxel_config)
                best_probability, best_class = torch.softmax(point_logits, dim=1).max(dim=1)
                target = item.message_index if known is None else item.message_index[known]
                if known is not None:
                    best_class, best_probability = best_class[known], best_probability[known]
                class_id[target] = best_class.to(torch.uint8)
                probability[target] = best_probability
            results.append((class_id.cpu().numpy(), probability.cpu().numpy()))
        return results


def _model_for(metadata: CheckpointMetadata, path: Path, backend: str) -> Student | FusionStudent:
    """The network a checkpoint's metadata describe (its `model_kind` and `architecture`)."""
    fusion = metadata.model_kind == FUSION_KIND
    try:
        if fusion:
            return FusionStudent(load_dataclass(FusionConfig, metadata.architecture, path="architecture"),
                                 sparse_backend=backend)
        return Student(load_dataclass(StudentConfig, metadata.architecture, path="architecture"),
                       sparse_backend=backend)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: metadata architecture: {error}") from None


def _scan_arrays(scan: Scan, position: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
    """Validate a Scan-like object; errors name the scan and the attribute."""
    name = f"scan {position}"
    try:
        xyz = np.asarray(scan.xyz, dtype=np.float32)
    except AttributeError:
        raise TypeError(f"{name}: has no 'xyz' attribute (expected elite_ros.cloud.Scan)") from None
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{name}: xyz must be (N, 3), got {xyz.shape}")
    count = xyz.shape[0]
    intensity = getattr(scan, "intensity", None)
    if intensity is not None:
        intensity = np.asarray(intensity).reshape(-1)
        if intensity.shape[0] != count:
            raise ValueError(f"{name}: intensity has {intensity.shape[0]} values for {count} points")
    index = getattr(scan, "index", None)
    index = np.arange(count, dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64).reshape(-1)
    if index.shape[0] != count:
        raise ValueError(f"{name}: index has {index.shape[0]} values for {count} points")
    num_points = int(scan.num_points) if hasattr(scan, "num_points") else count
    if count and (index.min() < 0 or index.max() >= num_points):
        raise ValueError(f"{name}: index values must lie in [0, num_points={num_points})")
    return xyz, intensity, index, num_points


def _tta_transform(points: Tensor, generator: torch.Generator) -> Tensor:
    """One TTA vote: rotate about z by U[0, 2 pi), translate by N(0, 0.1) m per axis (ref §8)."""
    angle = float(torch.rand((), generator=generator)) * 2.0 * math.pi
    shift = torch.randn(3, generator=generator) * TTA_TRANSLATION_STD
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=points.dtype)
    out = points.clone()
    out[:, :3] = points[:, :3] @ rotation.t().to(points.device) + shift.to(points.device, points.dtype)
    return out
