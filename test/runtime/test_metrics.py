"""elite_ros.metrics: the reference's IoU on hand-computed cases, numpy = torch, and the cross-process sum."""
from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from elite_ros.labels import NUM_CLASSES
from elite_ros.metrics import confusion_matrix, error_mask, iou_per_class, mean_iou, sum_across_processes

# Pairs (gt, pred) = (1,1) (1,1) (1,2) (2,2) (2,0) (0,1) (3,3).
# (2,0) falls in the dropped column 0 and (0,1) in the dropped row 0, so after cropping:
#   car(1):     TP 2, FP 0, FN 1 -> 2/3
#   bicycle(2): TP 1, FP 1, FN 0 -> 1/2
#   motorcycle(3): TP 1           -> 1
GT = np.array([1, 1, 1, 2, 2, 0, 3])
PRED = np.array([1, 1, 2, 2, 0, 1, 3])


def test_hand_computed_iou_single_frame():
    iou = iou_per_class(confusion_matrix(GT, PRED))
    assert iou.shape == (NUM_CLASSES - 1,)
    assert iou[0] == pytest.approx(2 / 3)
    assert iou[1] == pytest.approx(1 / 2)
    assert iou[2] == pytest.approx(1.0)
    assert np.isnan(iou[3:]).all()  # absent classes: NaN, left out of the mean
    assert mean_iou(iou) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_error_mask_is_the_off_diagonal_of_the_cropped_confusion():
    assert error_mask(GT, PRED).tolist() == [False, False, True, False, False, False, False]  # (2,0), (0,1) unscored
    rng = np.random.default_rng(1)
    gt, pred = rng.integers(0, NUM_CLASSES, 5000), rng.integers(0, NUM_CLASSES, 5000)
    cropped = confusion_matrix(gt, pred)[1:, 1:]
    assert error_mask(gt, pred).sum() == cropped.sum() - np.trace(cropped)
    with pytest.raises(ValueError, match="points"):
        error_mask(np.zeros(3), np.zeros(4))


def test_torch_and_numpy_give_the_same_histogram():
    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, NUM_CLASSES, 5000), rng.integers(0, NUM_CLASSES, 5000)
    expected = confusion_matrix(gt, pred)
    found = confusion_matrix(torch.from_numpy(gt), torch.from_numpy(pred).to(torch.uint8))
    assert isinstance(found, torch.Tensor) and found.dtype == torch.int64
    np.testing.assert_array_equal(found.numpy(), expected)
    np.testing.assert_array_equal(iou_per_class(found), iou_per_class(expected))


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="points"):
        confusion_matrix(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="0..19"):
        confusion_matrix(np.array([20]), np.array([1]))
    with pytest.raises(ValueError, match="0..19"):
        confusion_matrix(torch.tensor([-1]), torch.tensor([1]))
    assert math.isnan(mean_iou(iou_per_class(np.zeros((20, 20), np.int64))))


def test_without_distributed_the_sum_is_the_histogram_itself():
    confusion = confusion_matrix(torch.from_numpy(GT), torch.from_numpy(PRED))
    assert sum_across_processes(confusion) is confusion


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_histogram(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # rank 0 holds a large shard, rank 1 a single point: the sum weighs points, not shards
        if rank == 0:
            gt, pred = torch.from_numpy(GT), torch.from_numpy(PRED)
        else:
            gt, pred = torch.tensor([4]), torch.tensor([5])
        out[rank] = sum_across_processes(confusion_matrix(gt, pred)).numpy()
    finally:
        dist.destroy_process_group()


def test_two_processes_sum_their_histograms_over_gloo():
    port = _free_port()
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_histogram, args=(2, port, out), nprocs=2, join=True)
        results = dict(out)
    expected = confusion_matrix(np.concatenate([GT, [4]]), np.concatenate([PRED, [5]]))
    for rank in (0, 1):
        np.testing.assert_array_equal(results[rank], expected)
    iou = iou_per_class(results[0])
    assert iou[3] == 0.0 and iou[4] == 0.0  # truck and other-vehicle now count, as zeros
    assert mean_iou(iou) == pytest.approx((2 / 3 + 1 / 2 + 1) / 5)
