"""training/synthetic/drives.py: a config's synthetic drives, rendered once and reused."""
from __future__ import annotations

import pytest

from elite_ros_training.data.semantickitti import SequenceFolder
from elite_ros_training.synthetic.drives import SyntheticDrives, only_these_drives, render_drives


def test_drives_are_rendered_once_and_named_by_what_decides_them(tmp_path):
    spec = SyntheticDrives(train_seeds=(3,), val_seeds=(901,), frames=1, every=2, val_frames=1, dense_labels=True)
    train, val = render_drives(spec, tmp_path, progress=False)
    assert [p.name for p in train] == ["train_s3_f1x2_dense"] and [p.name for p in val] == ["val_s901_f1x8_dense"]
    frame = SequenceFolder(train[0])[0]
    assert frame.labels is not None and frame.pseudo_labels is not None
    stamp = (train[0] / "velodyne" / "000000.bin").stat().st_mtime_ns
    assert render_drives(spec, tmp_path, progress=False) == (train, val)
    assert (train[0] / "velodyne" / "000000.bin").stat().st_mtime_ns == stamp  # reused, not rendered again
    assert only_these_drives(spec, [str(p) for p in train])
    assert not only_these_drives(spec, [str(train[0]), "dataset/sequences/00"]) and not only_these_drives(spec, [])


def test_training_and_validation_seeds_must_differ():
    with pytest.raises(ValueError, match=r"seed\(s\) \[2\] are both"):
        SyntheticDrives(train_seeds=(1, 2), val_seeds=(2,))
    with pytest.raises(ValueError, match="at least one"):
        SyntheticDrives(train_seeds=())
