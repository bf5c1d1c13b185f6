"""Quantizers: small named modules that turn a real tensor into its 1-bit form.

One binary layer (:mod:`bidrn.nn.layers`) takes an ``input_quantizer`` and a ``weight_quantizer``; every
method of the paper (BiDRN and the seven baselines of Table 1) is a choice of these two plus the block around
the layer. A quantizer's forward is the method's forward; its backward is the method's gradient estimator,
written as an autograd Function or as a straight-through expression.

Conventions
- Activation quantizers: ``forward(x: B x C x ...) -> same shape``.
- Weight quantizers: ``forward(w, out_dim) -> same shape``; ``out_dim`` names the output-channel axis
  (0 for Conv2d/Linear weights, 1 for ConvTranspose2d weights) so per-channel scales follow the layer.
- sign(0) = +1 everywhere (eq. 1 of the BiDRN paper), which is what a packed bit (1 = non-negative) encodes.
"""
from __future__ import annotations

import torch
from torch import nn


def sign(x: torch.Tensor) -> torch.Tensor:
    """Eq. 1: +1 for x >= 0, -1 otherwise (torch.sign maps 0 to 0, which no bit can hold)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def per_channel_mean_abs(w: torch.Tensor, out_dim: int) -> torch.Tensor:
    """alpha_o = ||W_o||_1 / n (eq. 4), broadcastable against ``w``; n = elements per output channel."""
    dims = [d for d in range(w.dim()) if d != out_dim]
    return w.abs().mean(dim=dims, keepdim=True)


def straight_through(value: torch.Tensor, x: torch.Tensor, slope) -> torch.Tensor:
    """``value`` in the forward pass; in the backward pass d value / d x := ``slope`` element-wise.

    value, x: same shape; slope: a number or a tensor broadcastable to x that carries no gradient. Every
    method's gradient estimator is this one expression with its own slope (no autograd.Function needed, so
    the graph also exports).
    """
    return value.detach() + (x - x.detach()) * slope


def piecewise_quadratic_slope(x: torch.Tensor) -> torch.Tensor:
    """dF/dx of eq. 2: 2 - 2|x| on |x| < 1, else 0 (Bi-Real's ApproxSign)."""
    return torch.clamp(2.0 - 2.0 * x.detach().abs(), min=0.0)


def clipped_ste_slope(x: torch.Tensor) -> torch.Tensor:
    """1 on |x| <= 1, else 0: the straight-through estimator of Hubara et al. 2016."""
    return (x.detach().abs() <= 1).to(x.dtype)


class Quantizer(nn.Module):
    """Base class: a named quantizer. ``precision`` is what the cost counter reads (1 = binary)."""

    precision = 1
    name = "quantizer"

    def extra_repr(self) -> str:
        return self.name


class PiecewiseQuadraticSign(Quantizer):
    """BiDRN activation quantizer: eq. 1 forward, eq. 2 gradient."""

    name = "pq_sign"

    def forward(self, x):
        return straight_through(sign(x), x, piecewise_quadratic_slope(x))


class SteSign(Quantizer):
    """sign with the clipped straight-through gradient (BNN, XNOR-Net activations)."""

    name = "ste_sign"

    def forward(self, x):
        return straight_through(sign(x), x, clipped_ste_slope(x))


class ScaledSignWeight(Quantizer):
    """BiDRN weight quantizer, eq. 4: W_b[o] = alpha_o * sign(W[o]), alpha_o = mean |W[o]|.

    alpha is recomputed from the latent weights at every forward (it is not a parameter). Gradient: identity
    straight-through to the latent weights (dL/dW := dL/dW_b), as the paper gives no other estimator.
    """

    name = "scaled_sign"

    def forward(self, w, out_dim: int = 0):
        # straight_through's value is exactly alpha * sign(w) (w - w.detach() is exactly 0), so an accumulator
        # of exactly 0 keeps its sign and eager matches the exported kernels bit for bit.
        return straight_through(per_channel_mean_abs(w, out_dim) * sign(w), w, 1.0)
