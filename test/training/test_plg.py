"""SAM-PLG: prompt building, painting on hand-made masks, and an end-to-end run with a tiny random SAM.

"ref §N" = docs/reference.md §N.
"""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from elite_ros.command import run_command
from elite_ros_training.commands.plg import add_parser
from elite_ros_training.data.semantickitti import SequenceFolder, load_pseudo_labels, pseudo_label_path, write_bin
from elite_ros_training.plg import (
    OTHER_CLASS_LOGIT,
    STUFF_SAME_CLASS_LOGIT,
    THING_SAME_INSTANCE_LOGIT,
    PlgConfig,
    frame_labels,
    low_res_canvases,
    majority,
    mask_prompts,
    paint_labels,
    predict_masks,
    prompt_cells,
    prompt_points,
    run_plg,
    sparse_labels,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny tensors, one thread


def test_sparse_labels_last_point_wins_and_sorted():
    pixels = np.array([[2, 3], [0, 1], [2, 3], [1, 0]])
    labels = sparse_labels(pixels, np.array([5, 6, 7, 8]), np.array([0, 0, 300, 0]), (4, 5))
    assert labels.pixels.tolist() == [[0, 1], [1, 0], [2, 3]]
    assert labels.semantic.tolist() == [6, 8, 7] and labels.instance.tolist() == [0, 0, 300]
    with pytest.raises(ValueError, match="outside the 4x5 image"):
        sparse_labels(np.array([[4, 0]]), np.array([1]), np.array([0]), (4, 5))


def test_low_res_canvas_is_opencv_nearest_on_the_padded_square():
    # image 4 x 8 (H x W) -> square 8 -> side 4: source rows/cols floor(i * 2) = 0, 2, 4, 6
    labels = sparse_labels(np.array([[2, 4], [3, 5], [0, 6]]), np.array([3, 9, 1]), np.array([0, 0, 700]), (4, 8))
    semantic, instance = low_res_canvases(labels, (4, 8), 4)
    expected = np.zeros((4, 4), np.int64)
    expected[1, 2] = 3  # pixel (2, 4) is sampled; (3, 5) is not
    expected[0, 3] = 1
    assert semantic.tolist() == expected.tolist()
    assert instance[0, 3] == 700  # kept at full width (the reference's uint8 canvas makes it 188)


def test_prompts_are_cell_centres_in_sam_input_frame():
    semantic = np.zeros((4, 4), np.int64)
    semantic[2, 3] = 1
    semantic[0, 1] = 4
    cells = prompt_cells(semantic)
    assert cells.tolist() == [[0, 1], [2, 3]]  # row-major
    assert prompt_points(cells).tolist() == [[5.5, 1.5], [13.5, 9.5]]  # (4c + 1.5, 4r + 1.5), ref §9


def test_dense_mask_prompts_known_answer():
    semantic = np.array([[9, 9, 1, 1],
                         [9, 0, 1, 1],
                         [9, 0, 1, 6],
                         [0, 0, 0, 6]])
    instance = np.array([[0, 0, 300, 300],
                         [0, 0, 44, 44],  # 300 & 0xFF == 44: a uint8 canvas would merge these cars
                         [0, 0, 44, 0],
                         [0, 0, 0, 0]])
    prompts = mask_prompts(np.array([[0, 0], [0, 2]]), semantic, instance)
    s, t, o = STUFF_SAME_CLASS_LOGIT, THING_SAME_INSTANCE_LOGIT, OTHER_CLASS_LOGIT
    road = [[s, s, o, o],
            [s, 0, o, o],
            [s, 0, o, o],
            [0, 0, 0, o]]
    car_300 = [[o, o, t, t],
               [o, 0, 0, 0],  # the other car (instance 44, same class) stays 0
               [o, 0, 0, o],
               [0, 0, 0, o]]
    assert prompts[0].tolist() == road and prompts[1].tolist() == car_300
    assert (s, t, o) == (1.0, 16.0, -16.0)  # ref §9


def test_majority_counts_zero_and_breaks_ties_by_first_occurrence():
    assert majority(np.array([3, 0, 0, 3, 5])) == 3  # tie 3/0: 3 was seen first
    assert majority(np.array([0, 0, 7])) == 0


def test_painting_known_answer_best_mask_last():
    hw = (4, 6)
    labels = sparse_labels(np.array([[0, 0], [0, 1], [1, 1], [3, 5], [2, 4], [3, 0]]),
                           np.array([2, 2, 5, 9, 9, 0]), np.array([7, 7, 0, 0, 0, 0]), hw)
    best = np.zeros(hw, bool)
    best[0:2, 0:3] = True  # LiDAR: 2, 2, 5 -> semantic 2, instance majority 7
    worse = np.zeros(hw, bool)
    worse[0:4, 1:6] = True  # LiDAR: 2, 5, 9, 9 -> semantic 9 (instance majority 0: keeps instances)
    empty = np.zeros(hw, bool)
    empty[2, 0] = True  # no LiDAR pixel: skipped
    zero = np.zeros(hw, bool)
    zero[3, 0] = True  # majority class 0: skipped
    out = paint_labels([best, worse, empty, zero], labels, hw)
    assert out.dtype == np.uint16 and out.shape == (2, 4, 6)
    expected_semantic = np.array([[2, 2, 2, 9, 9, 9],
                                  [2, 2, 2, 9, 9, 9],
                                  [0, 9, 9, 9, 9, 9],
                                  [0, 9, 9, 9, 9, 9]])
    expected_instance = np.zeros(hw, int)
    expected_instance[0:2, 0:3] = 7
    assert out[0].tolist() == expected_semantic.tolist()
    assert out[1].tolist() == expected_instance.tolist()
    # with no mask at all the map is the sparse LiDAR labels, unknown pixels 0
    sparse = paint_labels([], labels, hw)
    assert sparse[0, 0, 0] == 2 and sparse[0, 1, 1] == 5 and sparse[0, 2, 2] == 0 and sparse[1, 0, 1] == 7


# --------------------------------------------------------------------------------- end to end
def tiny_sam() -> Sam:
    """SAM's classes at tiny width and a 256 px frame (low-res masks 64 x 64, cells of 4 px)."""
    torch.manual_seed(0)
    dim, size = 32, 256
    encoder = ImageEncoderViT(img_size=size, patch_size=16, embed_dim=32, depth=2, num_heads=2, out_chans=dim,
                              use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
                              norm_layer=partial(nn.LayerNorm, eps=1e-6))
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(size // 16, size // 16),
                           input_image_size=(size, size), mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=2, iou_head_hidden_dim=32,
                          transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2))
    return Sam(encoder, prompt, decoder).eval()


HEIGHT, WIDTH = 48, 160


def write_sequence(root: Path, frames: int = 2) -> Path:
    """A SemanticKITTI sequence folder: points in front of a pinhole camera, labels, images, calib."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("velodyne", "labels", "image_2"):
        (root / sub).mkdir(parents=True)
    p2 = [100, 0, WIDTH / 2, 0, 0, 100, HEIGHT / 2, 0, 0, 0, 1, 0]
    tr = [0, -1, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0]  # LiDAR x forward, y left, z up -> camera
    (root / "calib.txt").write_text(f"P2: {' '.join(map(str, p2))}\nTr: {' '.join(map(str, tr))}\n")
    for index in range(frames):
        n = 400
        xyz = np.stack([rng.uniform(-5, 20, n), rng.uniform(-6, 6, n), rng.uniform(-2, 2, n)], 1)
        points = np.concatenate([xyz, rng.uniform(0, 1, (n, 1))], 1).astype(np.float32)
        raw = rng.choice([40, 48, 70, 10, 0], n).astype(np.uint32)  # road, sidewalk, vegetation, car, unlabelled
        instance = np.where(raw == 10, rng.choice([1, 300], n), 0).astype(np.uint32)
        write_bin(root / "velodyne" / f"{index:06d}.bin", points)
        (raw | (instance << 16)).tofile(root / "labels" / f"{index:06d}.label")
        image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "image_2" / f"{index:06d}.png")
    return root


def test_predict_masks_filters_and_sorts(tmp_path):
    folder = SequenceFolder(write_sequence(tmp_path / "00", frames=1))
    frame = folder[0]
    pixels, semantic, instance = frame_labels(frame)
    assert len(pixels) > 50 and set(np.unique(semantic)) <= {0, 1, 9, 11, 15}
    predictor = SamPredictor(tiny_sam())
    predictor.set_image(frame.image)
    labels = sparse_labels(pixels, semantic, instance, (HEIGHT, WIDTH))
    data = predict_masks(predictor, labels, (HEIGHT, WIDTH), PlgConfig(points_per_batch=16, stability_score_thresh=0.0))
    assert len(data["rles"]) >= 1 and data["rles"][0]["size"] == [HEIGHT, WIDTH]
    assert torch.all(data["iou_preds"][:-1] >= data["iou_preds"][1:])  # best first
    strict = predict_masks(predictor, labels, (HEIGHT, WIDTH),
                           PlgConfig(points_per_batch=16, stability_score_thresh=1.01))
    assert len(strict["rles"]) == 0


def test_end_to_end_writes_maps_and_resumes(tmp_path):
    root = write_sequence(tmp_path / "sequences" / "00")
    folder = SequenceFolder(root, load_pseudo_labels=False)
    sam = tiny_sam()
    config = PlgConfig(points_per_batch=32, stability_score_thresh=0.0)  # a random SAM is rarely "stable"
    out = partial(pseudo_label_path, root)
    assert run_plg(folder, out, sam, config, progress=False) == {"written": 2, "skipped": 0}
    for frame_id in folder.frame_ids:
        labels = load_pseudo_labels(out(frame_id))
        assert labels.shape == (2, HEIGHT, WIDTH) and labels.dtype == np.uint16
        assert set(np.unique(labels[0])) <= {0, 1, 9, 11, 15} and labels[0].any()
        assert set(np.unique(labels[1])) <= {0, 1, 300}
    assert SequenceFolder(root)[0].pseudo_labels.shape == (2, HEIGHT, WIDTH)  # the data module reads them
    assert run_plg(folder, out, sam, config, progress=False) == {"written": 0, "skipped": 2}
    out("000001").unlink()
    assert run_plg(folder, out, sam, config, progress=False) == {"written": 1, "skipped": 1}
    assert not list((root / "image_2_labels").glob("*.tmp"))


def test_cli_subcommand(tmp_path):
    parser = argparse.ArgumentParser(prog="elite-ros-train")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plg", "--sequence", str(tmp_path), "--checkpoint", "sam.pth"])
    assert args.model_type == "vit_h" and args.points_per_batch == 128 and args.stability_score_thresh == 0.9
    with pytest.raises(SystemExit):
        parser.parse_args(["plg", "--checkpoint", "sam.pth"])  # needs --sequence or --bag
    root = write_sequence(tmp_path / "00", frames=1)
    args = parser.parse_args(["plg", "--sequence", str(root), "--checkpoint", str(tmp_path / "missing.pth")])
    with pytest.raises(SystemExit, match="error: SAM checkpoint not found: .*missing.pth"):
        run_command(args)
    (tmp_path / "sam.pth").write_bytes(b"")
    args = parser.parse_args(["plg", "--sequence", str(tmp_path / "nope"), "--checkpoint", str(tmp_path / "sam.pth")])
    with pytest.raises(SystemExit, match="nope: no 'velodyne' folder"):
        run_command(args)
