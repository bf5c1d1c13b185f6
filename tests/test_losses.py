"""The eq. 12 loss pieces on hand-made tensors."""
import math

import pytest
import torch

from bidrn.train.config import TrainConfig, load_config
from bidrn.train.losses import _depth_to_cells, _l1


def test_masked_l1_averages_valid_entries_only():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 10.0]])
    valid = torch.tensor([[1.0], [0.0]])  # only the first row counts: (1 + 2) / 2
    assert _l1(pred, target, valid).item() == pytest.approx(1.5)
    assert _l1(pred, target, torch.zeros(2, 1)).item() == 0.0


def test_depth_cells_follow_hand4whole_discretisation():
    # z in [-size/2, size/2] -> [0, D]: body size 2 m, D = 8.
    z = torch.tensor([-1.0, 0.0, 1.0, 0.5])
    assert _depth_to_cells(z, 2.0, 8).tolist() == [0.0, 4.0, 8.0, 6.0]


def test_rotmat_pose_space_removes_the_axis_angle_jump_at_pi():
    from bidrn.models.ops import axis_angle_to_rotmat

    a, b = torch.tensor([[math.pi, 0.0, 0.0]]), torch.tensor([[-math.pi, 0.0, 0.0]])  # the same rotation
    assert _l1(a, b, torch.ones(1, 1)).item() == pytest.approx(2 * math.pi / 3)
    ra, rb = axis_angle_to_rotmat(a).flatten(1), axis_angle_to_rotmat(b).flatten(1)
    assert _l1(ra, rb, torch.ones(1, 1)).item() == pytest.approx(0.0, abs=1e-6)


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: bidrn-tiny\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown training config keys \\['learning_rate'\\]"):
        load_config(bad)
    with pytest.raises(ValueError, match="multiple of grad_accum"):
        TrainConfig(batch_size=5, grad_accum=2)
    with pytest.raises(FileNotFoundError, match="configs/"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    paper = load_config(root / "paper.yaml")
    # Sec. 4.1: Adam, batch 24, lr 1e-4, 14 epochs, Human3.6M + MSCOCO + MPII.
    assert (paper.model, paper.batch_size, paper.lr, paper.epochs) == ("bidrn", 24, 1e-4, 14)
    assert [d.name for d in paper.data] == ["human36m", "mscoco", "mpii"]
    assert load_config(root / "bidrn-tiny-synthetic.yaml").model == "bidrn-tiny"
