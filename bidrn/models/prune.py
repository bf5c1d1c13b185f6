"""Table 4's comparison: unstructured L1 pruning of the encoder convs (Han et al. 2015), as a weight mask.

Each encoder conv keeps its round((1 - amount) * n) largest-|w| weights (per layer, L1 criterion) and zeroes the
rest through a parametrization, so training keeps pruned weights at zero and export sees a plain dense weight.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class L1Mask(nn.Module):
    """weight -> weight * mask; ``kept`` is the number of surviving weights (what the cost counter reads)."""

    def __init__(self, weight: torch.Tensor, amount: float):
        super().__init__()
        n = weight.numel()
        self.kept = n - int(round(amount * n))
        mask = torch.zeros(n, dtype=weight.dtype, device=weight.device)
        if weight.device.type != "meta":
            mask[weight.detach().abs().flatten().topk(self.kept).indices] = 1.0
        self.register_buffer("mask", mask.view_as(weight))

    def forward(self, weight):
        return weight * self.mask


def prune_encoders(model: nn.Module) -> nn.Module:
    """Mask every Conv2d of the body/hand/face encoders with its config's ``prune`` ratio."""
    for part in ("body", "hand", "face"):
        encoder = getattr(model, f"{part}_backbone")
        amount = getattr(model.cfg, part).prune
        if amount <= 0:
            continue
        for conv in (m for m in encoder.modules() if isinstance(m, nn.Conv2d)):
            parametrize.register_parametrization(conv, "weight", L1Mask(conv.weight, amount))
    return model


def kept_weights(module: nn.Module) -> int | None:
    """Surviving weights of a pruned layer, or None if the layer is not pruned."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    return sum(p.kept for p in module.parametrizations["weight"] if isinstance(p, L1Mask))
