"""SAM-PLG: dense pseudo labels for camera images from projected LiDAR labels and SAM (ref §9).

Per image, through `segment_anything.SamPredictor` with any SAM checkpoint (ViT-H in the paper):

1. the image embedding is computed once (`set_image`);
2. the projected LiDAR labels (semantic training id, instance id) are written on a square canvas of side
   max(H, W) (SAM's bottom/right padding; later points overwrite earlier ones) and resized nearest to SAM's
   low-res mask frame (256 x 256, one cell = 4 x 4 px of the 1024 input frame);
3. every labelled cell (semantic != 0) is one positive point prompt at (4c + 1.5, 4r + 1.5) in SAM's
   input frame, with a dense mask prompt (logits): stuff (instance 0) +1 on cells of the same class,
   things +16 on cells of the same instance, -16 on cells of any other non-zero class, 0 elsewhere;
4. 3 masks per prompt (multimask), stability score >= 0.9 (offset 1.0), binarised, box NMS 0.7 ranked by
   predicted IoU (predicted-IoU filter off, as in the official settings);
5. painting: from the worst to the best mask (the best wins overlaps), the mask takes the majority
   semantic label of the LiDAR pixels inside it (class 0 counts; no LiDAR pixel or majority 0 -> skipped)
   and, when its majority instance id is non-zero, that instance id; pixels never painted keep their
   sparse LiDAR label; unknown pixels are 0.

Output per frame: a (2, H, W) uint16 map (semantic, instance) written compressed with
`np.savez_compressed` (key ``labels``) by the data module's `save_pseudo_labels` (atomic), at
``<sequence>/image_2_labels/<frame id>.npz`` for SemanticKITTI folders, or in a folder next to a bag.
Frames whose file exists are skipped, so an interrupted run resumes.

Fixed w.r.t. the official code (ref §10 item 12): instance ids are kept at full width (the official
canvas is uint8, which truncates ids > 255 and merges instances); the 65535 "unknown" sentinel is
replaced by an explicit mask, so an instance id of 65535 is not lost either.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    mask_to_rle_pytorch,
    rle_to_mask,
)
from torchvision.ops import batched_nms

from elite_ros.device import resolve_device
from elite_ros.labels import split_label, to_training_ids
from elite_ros_training.data.projection import project_points

# Settings of SamPseudoLabelGenerator as used by the official amg.py (ref §9).
POINTS_PER_BATCH = 128  # ref §9
PRED_IOU_THRESH = 0.0  # ref §9: disabled (stock SAM 0.88)
STABILITY_SCORE_THRESH = 0.9  # ref §9 (stock SAM 0.95)
STABILITY_SCORE_OFFSET = 1.0  # ref §9
BOX_NMS_THRESH = 0.7  # ref §9
# Dense mask prompt logits (ref §9 step 4).
STUFF_SAME_CLASS_LOGIT = 1.0  # instance 0: +1 on cells with the prompt's class
THING_SAME_INSTANCE_LOGIT = 16.0  # instance != 0: +16 on cells with the prompt's instance id
OTHER_CLASS_LOGIT = -16.0  # -16 on cells of any other non-zero class
#: A prompt sits at the centre of its low-res cell: cell_px * index + (cell_px - 1) / 2 = 4i + 1.5 (ref §9).
SAM_LOW_RES_UPSCALE = 4  # SAM's mask decoder output is 4x the embedding grid (low-res masks 256 = 4 x 64)
DEFAULT_MODEL_TYPE = "vit_h"  # ref §9: the paper uses SAM ViT-H (sam_vit_h_4b8939.pth)


@dataclass(frozen=True)
class PlgConfig:
    """Mask generation settings (defaults = the official SAM-PLG run, ref §9)."""

    points_per_batch: int = POINTS_PER_BATCH
    pred_iou_thresh: float = PRED_IOU_THRESH
    stability_score_thresh: float = STABILITY_SCORE_THRESH
    stability_score_offset: float = STABILITY_SCORE_OFFSET
    box_nms_thresh: float = BOX_NMS_THRESH

    def __post_init__(self) -> None:
        if self.points_per_batch < 1:
            raise ValueError(f"points_per_batch must be >= 1, got {self.points_per_batch}")


@dataclass(frozen=True)
class SparseLabels:
    """LiDAR labels at image pixels, one entry per labelled pixel (the last point wins a shared pixel).

    Attributes:
        pixels: (K, 2) int64 (row, col), sorted row-major.
        semantic: (K,) int64 training ids 0..19 (0 = unlabelled, still a "known" pixel).
        instance: (K,) int64 instance ids (raw >> 16, full width).
    """

    pixels: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray


def sparse_labels(pixels: np.ndarray, semantic: np.ndarray, instance: np.ndarray, image_hw: tuple[int, int]
                  ) -> SparseLabels:
    """Projected points (M, 2) (row, col) with their labels -> one label per pixel, last point wins."""
    pixels = np.asarray(pixels, dtype=np.int64).reshape(-1, 2)
    height, width = image_hw
    if len(pixels) and (pixels.min() < 0 or pixels[:, 0].max() >= height or pixels[:, 1].max() >= width):
        raise ValueError(f"projected pixels fall outside the {height}x{width} image")
    if not len(semantic) == len(instance) == len(pixels):
        raise ValueError(f"{len(pixels)} pixels, {len(semantic)} semantic and {len(instance)} instance labels")
    flat = pixels[:, 0] * width + pixels[:, 1]
    # np.unique on the reversed order keeps the *last* point of each pixel; result sorted by pixel.
    unique_flat, first_in_reversed = np.unique(flat[::-1], return_index=True)
    last = len(flat) - 1 - first_in_reversed
    return SparseLabels(
        pixels=np.stack([unique_flat // width, unique_flat % width], axis=1),
        semantic=np.asarray(semantic, dtype=np.int64)[last],
        instance=np.asarray(instance, dtype=np.int64)[last],
    )


def low_res_canvases(labels: SparseLabels, image_hw: tuple[int, int], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Semantic and instance canvases (side, side) int64 in SAM's low-res mask frame.

    The labels are written on a max(H, W) square (SAM pads bottom/right) and resized nearest like
    OpenCV's INTER_NEAREST (source index = floor(dst * scale)), as the reference does.
    """
    square = max(image_hw)
    semantic = np.zeros((square, square), np.int64)
    instance = np.zeros((square, square), np.int64)
    rows, cols = labels.pixels[:, 0], labels.pixels[:, 1]
    semantic[rows, cols] = labels.semantic
    instance[rows, cols] = labels.instance
    source = np.minimum(np.floor(np.arange(side) * (square / side)).astype(np.int64), square - 1)
    return semantic[np.ix_(source, source)], instance[np.ix_(source, source)]


def prompt_cells(semantic_low: np.ndarray) -> np.ndarray:
    """(P, 2) int64 (row, col) of every labelled (non-zero) low-res cell, row-major."""
    return np.argwhere(semantic_low > 0)


def prompt_points(cells: np.ndarray, cell_pixels: int = SAM_LOW_RES_UPSCALE) -> np.ndarray:
    """Low-res cells (P, 2) (row, col) -> (P, 2) float32 (x, y) in SAM's input frame (cell centres)."""
    offset = (cell_pixels - 1) / 2.0
    return (cells[:, ::-1].astype(np.float32) * cell_pixels + offset).astype(np.float32)


def mask_prompts(cells: np.ndarray, semantic_low: np.ndarray, instance_low: np.ndarray) -> np.ndarray:
    """Dense mask-prompt logits (P, side, side) float32 for prompt cells (P, 2), ref §9 step 4."""
    classes = semantic_low[cells[:, 0], cells[:, 1]][:, None, None]
    instances = instance_low[cells[:, 0], cells[:, 1]][:, None, None]
    sem, inst = semantic_low[None], instance_low[None]
    prompts = np.zeros((len(cells), *semantic_low.shape), np.float32)
    is_thing = instances != 0
    prompts[np.broadcast_to(~is_thing, prompts.shape) & (sem == classes)] = STUFF_SAME_CLASS_LOGIT
    prompts[np.broadcast_to(is_thing, prompts.shape) & (inst == instances)] = THING_SAME_INSTANCE_LOGIT
    prompts[(sem > 0) & (sem != classes)] = OTHER_CLASS_LOGIT
    return prompts


def _low_res_geometry(sam: Sam) -> tuple[int, int]:
    """(side of the low-res mask frame, input pixels per low-res cell) of a SAM model."""
    side = int(sam.prompt_encoder.mask_input_size[0])
    return side, sam.image_encoder.img_size // side


@torch.no_grad()
def predict_masks(predictor: SamPredictor, labels: SparseLabels, image_hw: tuple[int, int],
                  config: PlgConfig = PlgConfig()) -> MaskData:
    """Prompted SAM masks for one image (set on `predictor`), filtered and NMS'd, best first.

    Returns SAM's `MaskData` with ``rles`` (masks at image size), ``iou_preds``, ``stability_score``,
    ``boxes`` (XYXY) and ``points`` (prompt in SAM's input frame), sorted by descending predicted IoU.
    """
    side, cell_pixels = _low_res_geometry(predictor.model)
    semantic_low, instance_low = low_res_canvases(labels, image_hw, side)
    cells = prompt_cells(semantic_low)
    data = MaskData()
    device = predictor.device
    threshold = predictor.model.mask_threshold
    for start in range(0, len(cells), config.points_per_batch):
        batch = cells[start: start + config.points_per_batch]
        points = torch.as_tensor(prompt_points(batch, cell_pixels), device=device)
        prompts = torch.as_tensor(mask_prompts(batch, semantic_low, instance_low), device=device)
        masks, iou_preds, _ = predictor.predict_torch(
            point_coords=points[:, None, :],
            point_labels=torch.ones(len(batch), 1, dtype=torch.int, device=device),
            mask_input=prompts[:, None],
            multimask_output=True,
            return_logits=True,
        )
        batch_data = MaskData(masks=masks.flatten(0, 1), iou_preds=iou_preds.flatten(0, 1),
                              points=points.repeat_interleave(masks.shape[1], dim=0))
        del masks
        if config.pred_iou_thresh > 0.0:
            batch_data.filter(batch_data["iou_preds"] > config.pred_iou_thresh)
        batch_data["stability_score"] = calculate_stability_score(
            batch_data["masks"], threshold, config.stability_score_offset)
        if config.stability_score_thresh > 0.0:
            batch_data.filter(batch_data["stability_score"] >= config.stability_score_thresh)
        batch_data["masks"] = batch_data["masks"] > threshold
        batch_data["boxes"] = batched_mask_to_box(batch_data["masks"])
        # (the reference's crop-edge box filter is a no-op for its single full-image crop)
        batch_data["rles"] = mask_to_rle_pytorch(batch_data["masks"])
        del batch_data["masks"]
        data.cat(batch_data)
    if not len(cells) or not len(data["rles"]):
        return MaskData(rles=[], iou_preds=torch.zeros(0), stability_score=torch.zeros(0),
                        boxes=torch.zeros(0, 4), points=torch.zeros(0, 2))
    keep = batched_nms(data["boxes"].float(), data["iou_preds"].float(),
                       torch.zeros_like(data["boxes"][:, 0]), iou_threshold=config.box_nms_thresh)
    data.filter(keep)  # batched_nms returns indices by decreasing score: best mask first
    return data


def majority(values: np.ndarray) -> int:
    """Most frequent value; ties go to the value seen first (collections.Counter's order, as the reference)."""
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    best = np.flatnonzero(counts == counts.max())
    return int(unique[best[np.argmin(first[best])]])


class _DecodedMasks(Sequence):
    """SAM RLEs seen as a sequence of (H, W) bool masks, decoded one at a time (memory stays flat)."""

    def __init__(self, rles: list[dict]) -> None:
        self.rles = rles

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, index: int) -> np.ndarray:
        return rle_to_mask(self.rles[index])


def paint_labels(masks_best_first: Sequence[np.ndarray], labels: SparseLabels, image_hw: tuple[int, int]
                 ) -> np.ndarray:
    """Majority-label painting (ref §9 step 8) -> (2, H, W) uint16 (semantic, instance), unknown = 0.

    masks_best_first: (H, W) bool masks sorted by descending quality; they are painted in reverse so
    the best mask is painted last. Majorities are taken over the sparse LiDAR labels only.
    """
    height, width = image_hw
    out = np.zeros((2, height, width), np.int64)
    rows, cols = labels.pixels[:, 0], labels.pixels[:, 1]
    out[0, rows, cols] = labels.semantic
    out[1, rows, cols] = labels.instance
    flat = rows * width + cols  # sorted row-major: first occurrence = Counter's insertion order
    for mask in reversed(masks_best_first):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (height, width):
            raise ValueError(f"mask of shape {mask.shape} for a {height}x{width} image")
        inside = mask.reshape(-1)[flat]
        if not inside.any():
            continue
        semantic = majority(labels.semantic[inside])
        if semantic == 0:
            continue
        out[0][mask] = semantic
        instance = majority(labels.instance[inside])
        if instance != 0:
            out[1][mask] = instance
    if out.max(initial=0) > np.iinfo(np.uint16).max or out.min(initial=0) < 0:
        raise ValueError("labels do not fit in uint16")
    return out.astype(np.uint16)


def generate_pseudo_labels(predictor: SamPredictor, image: np.ndarray, pixels: np.ndarray, semantic: np.ndarray,
                           instance: np.ndarray, config: PlgConfig = PlgConfig()) -> np.ndarray:
    """One image: (H, W, 3) uint8 RGB, projected pixels (M, 2) (row, col) with training ids and instance
    ids -> (2, H, W) uint16 pseudo-label map (semantic, instance)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    image_hw = image.shape[:2]
    labels = sparse_labels(pixels, semantic, instance, image_hw)
    predictor.set_image(image, image_format="RGB")
    try:
        data = predict_masks(predictor, labels, image_hw, config)
    finally:
        predictor.reset_image()
    return paint_labels(_DecodedMasks(data["rles"]), labels, image_hw)


# ------------------------------------------------------------------------------------------ frames
def frame_labels(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A `Frame` (training/data/frame.py) -> projected pixels (M, 2) and their training / instance ids.

    Points with x > 0 strictly inside the image (the reference's projection, training/data/projection.py).
    """
    if frame.image is None or frame.projection is None or frame.labels is None:
        missing = [n for n in ("image", "projection", "labels") if getattr(frame, n) is None]
        raise ValueError(f"frame {frame.frame_id}: SAM-PLG needs {', '.join(missing)}")
    height, width = frame.image.shape[:2]
    projected = project_points(frame.points[:, :3], frame.projection, width, height)
    semantic_raw, instance = split_label(frame.labels[projected.index])
    return projected.pixels, to_training_ids(semantic_raw).astype(np.int64), instance.astype(np.int64)


def _frame_ids(source) -> list[str]:
    if hasattr(source, "frame_ids"):
        return list(source.frame_ids)
    if hasattr(source, "cloud_numbers"):
        return [f"{int(n):06d}" for n in source.cloud_numbers]
    return [source[i].frame_id for i in range(len(source))]


def run_plg(source, output_path: Callable[[str], Path], sam: Sam, config: PlgConfig = PlgConfig(),
            progress: bool = True) -> dict[str, int]:
    """Pseudo labels for every frame of `source` (`SequenceFolder`, `BagFrames`, any `FrameSource`).

    output_path(frame_id) says where each map goes; frames whose file exists are skipped (resume).
    Returns counts {"written", "skipped"}.
    """
    from tqdm import tqdm

    from elite_ros_training.data.semantickitti import save_pseudo_labels

    predictor = SamPredictor(sam)
    ids = _frame_ids(source)
    written = skipped = 0
    bar = tqdm(range(len(ids)), desc="SAM-PLG", unit="frame", disable=not progress)
    for index in bar:
        path = Path(output_path(ids[index]))
        if path.exists():
            skipped += 1
            bar.set_postfix(written=written, skipped=skipped)
            continue
        frame = source[index]
        pixels, semantic, instance = frame_labels(frame)
        labels = generate_pseudo_labels(predictor, frame.image, pixels, semantic, instance, config)
        save_pseudo_labels(path, labels)
        written += 1
        bar.set_postfix(written=written, skipped=skipped)
    return {"written": written, "skipped": skipped}


def load_sam(model_type: str, checkpoint: str | Path, device: str = "auto") -> Sam:
    """A SAM model from `segment_anything.sam_model_registry` (vit_h / vit_l / vit_b) on `device`
    ("auto", "cpu", "cuda:N": `elite_ros.device.resolve_device`)."""
    from segment_anything import sam_model_registry

    if model_type not in sam_model_registry:
        raise ValueError(f"--model-type must be one of {sorted(sam_model_registry)}, got {model_type!r}")
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"SAM checkpoint not found: {checkpoint}")
    sam = sam_model_registry[model_type](checkpoint=str(checkpoint))
    return sam.to(resolve_device(device)).eval()
