"""The shipped default weights load offline and reach the MPVPE their model card states."""
import re

import pytest
import torch

from bidrn import create_model
from bidrn.models.registry import WEIGHTS_DIR

CARD = WEIGHTS_DIR / "bidrn-tiny-synthetic.md"


def _card_figure(name: str) -> float:
    match = re.search(rf"\| {name} \| ([0-9.]+) \|", CARD.read_text())
    assert match, f"{name} missing from {CARD}"
    return float(match.group(1))


def test_pretrained_bidrn_tiny_loads_without_network_and_runs():
    model = create_model("bidrn-tiny", pretrained=True)
    assert not model.training
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 192))
    assert out["body_pose"].shape == (1, 63)


def test_pretrained_weights_reach_the_model_card_mpvpe_on_the_synthetic_benchmark():
    from bidrn.body import load_body_model
    from bidrn.eval.evaluate import evaluate
    from bidrn.train.config import DataSource
    from bidrn.train.data import build_dataset

    body = load_body_model()
    bench = build_dataset(DataSource(length=256, seed=1_000_003), (256, 192), body, train=False)
    metrics = evaluate(create_model("bidrn-tiny", pretrained=True), bench, body, batch_size=16)
    # The card's figures were measured by `bidrn eval` on this same benchmark (seed 1000003, 256 samples).
    for name in ("mpvpe_all", "mpvpe_hand", "mpvpe_face"):
        assert metrics[name] == pytest.approx(_card_figure(name), abs=0.5), name


def test_no_weights_for_other_configs_is_a_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights are shipped for 'bidrn'"):
        create_model("bidrn", pretrained=True)
