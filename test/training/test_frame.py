"""training/data/frame.py: a Frame refuses arrays of the wrong shape or dtype, naming the frame; ConcatFrames
sees several frame sources as one."""
from __future__ import annotations

import numpy as np
import pytest

from elite_ros_training.data.frame import ConcatFrames, Frame, FrameSource


def _frame(frame_id: str = "000000", n: int = 5, **fields) -> Frame:
    return Frame(frame_id=frame_id, points=np.zeros((n, 4), np.float32), **fields)


class ListFrames:
    """The smallest FrameSource: frames held in a list."""

    def __init__(self, frames: list[Frame]) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Frame:
        return self.frames[index]


def test_a_complete_frame_is_accepted():
    frame = _frame(labels=np.zeros(5, np.uint32), image=np.zeros((4, 6, 3), np.uint8),
                   projection=np.zeros((3, 4)), pseudo_labels=np.zeros((2, 4, 6), np.uint16), timestamp_ns=7)
    assert frame.points.shape == (5, 4) and frame.pseudo_labels.shape == (2, 4, 6) and frame.timestamp_ns == 7


@pytest.mark.parametrize("fields, message", [
    ({"points": np.zeros((5, 3), np.float32)}, "points must be \\(N, 4\\) float32"),
    ({"points": np.zeros((5, 4), np.float64)}, "points must be \\(N, 4\\) float32"),
    ({"labels": np.zeros(4, np.uint32)}, "4 labels for 5 points"),
    ({"image": np.zeros((4, 6), np.uint8)}, "image must be \\(H, W, 3\\) uint8"),
    ({"image": np.zeros((4, 6, 3), np.float32)}, "image must be \\(H, W, 3\\) uint8"),
    ({"projection": np.zeros((4, 4))}, "projection must be \\(3, 4\\)"),
    ({"pseudo_labels": np.zeros((2, 4, 6), np.uint16)}, "pseudo labels .* do not match the image None"),
    ({"image": np.zeros((4, 6, 3), np.uint8), "pseudo_labels": np.zeros((2, 6, 4), np.uint16)},
     "pseudo labels \\(2, 6, 4\\) do not match the image \\(4, 6\\)"),
])
def test_wrong_arrays_are_refused_naming_the_frame(fields, message):
    values = {"frame_id": "000042", "points": np.zeros((5, 4), np.float32), **fields}
    with pytest.raises(ValueError, match=f"frame 000042: {message}"):
        Frame(**values)


def test_concat_frames_indexes_across_sources():
    first = ListFrames([_frame(f"a{i}") for i in range(3)])
    second = ListFrames([_frame(f"b{i}") for i in range(2)])
    frames = ConcatFrames([first, second])
    assert isinstance(first, FrameSource) and isinstance(frames, FrameSource)
    assert len(frames) == 5
    assert [frames[i].frame_id for i in range(5)] == ["a0", "a1", "a2", "b0", "b1"]
    assert frames[-1].frame_id == "b1" and frames[-5].frame_id == "a0"  # negative indices as a list's
    for index in (5, -6):
        with pytest.raises(IndexError, match=f"frame index {index} out of range for 5 frames"):
            frames[index]


def test_concat_frames_skips_empty_sources_and_needs_one():
    frames = ConcatFrames([ListFrames([]), ListFrames([_frame("x")]), ListFrames([])])
    assert len(frames) == 1 and frames[0].frame_id == "x"
    with pytest.raises(ValueError, match="at least one frame source"):
        ConcatFrames([])
