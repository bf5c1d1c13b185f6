"""The seven binarization baselines of Table 1, each as its own paper defines it in forward and backward.

The BiDRN paper builds every baseline the same way: "we replace the convolutional layers in Hand4Whole's ResNet
backbone with binary convolutions from the corresponding BNN; the rest of the model remains unchanged". A method
here is therefore only two factories:

- ``conv(in_ch, out_ch, kernel_size, stride, padding)``: the method's binary conv (a :class:`BinaryConv2d`
  with the method's quantizers, plus its per-layer extras) for one bias-free backbone conv, stem excluded;
- ``activation(channels)``: what replaces each ReLU of the backbone (after a BN, at block outputs and after the
  stem BN), because a ReLU in front of sign() makes every activation +1;

plus two training hooks, ``on_epoch(model, epoch, total_epochs)`` (ReCU's tau, FDA's Fourier terms and noise
weight) and ``after_optimizer_step(model)`` (BNN's weight clipping), no-ops elsewhere.

Choices and parameter arithmetic (which extras reproduce the paper's 21.66 / 21.71 / 32.06 M) are in
``docs/baselines.md``. Equation numbers refer to each method's own paper unless marked "BiDRN".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from bidrn.nn.layers import BinaryConv2d, BinaryLayer
from bidrn.nn.quantizers import (PiecewiseQuadraticSign, Quantizer, SteSign, clipped_ste_slope, per_channel_mean_abs,
                                  sign, straight_through)


def _view_channels(p: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """C-vector -> shape broadcastable against ``like`` along axis ``dim``."""
    shape = [1] * like.dim()
    shape[dim] = -1
    return p.view(shape)


# ----------------------------------------------------------------------------------------------------------------
# Activation quantizers: forward(x: B x C x H x W) -> same shape
# ----------------------------------------------------------------------------------------------------------------

class DoReFaActivation(Quantizer):
    """DoReFa-Net, k = 1: a_b = quantize_1(clip(x, 0, 1)) = round(.) in {0, 1} (0.5 rounds up).

    Backward: the STE of quantize_k (identity) times the derivative of clip, i.e. 1 on [0, 1], else 0.
    The output is {0, 1}, not {-1, +1}: a 1-bit code all the same (DoReFa computes with bitcount of AND).
    """

    name = "dorefa_a1"

    def forward(self, x):
        inside = ((x >= 0) & (x <= 1)).to(x.dtype)
        return straight_through((x >= 0.5).to(x.dtype), x, inside)


class StandardizedApproxSign(Quantizer):
    """ReCU's activation binarizer: sign(a) with Bi-Real's gradient 2 - 2|a'| on |a'| < 1, where in training
    a' = a / sqrt(Var(a) + 1e-5), the unbiased variance taken per sample over C x H x W (official code).

    Dividing by a positive number leaves sign() unchanged, so only the gradient window adapts to the scale
    of a; in eval the division is skipped, as in the official code.
    """

    name = "recu_sign"

    def __init__(self):
        super().__init__()
        self.sign = PiecewiseQuadraticSign()

    def forward(self, x):
        if self.training:
            x = x / torch.sqrt(x.var(dim=tuple(range(1, x.dim())), keepdim=True) + 1e-5)
        return self.sign(x)


def fourier_sign_slope(x: torch.Tensor, n_terms: int, omega: float = 0.1) -> torch.Tensor:
    """FDA's gradient of sign: d/dx of the first ``n_terms`` terms of the square wave's Fourier series
    sign(x) = 4/pi * sum_i sin((2i+1) omega x) / (2i+1), i.e. 4 omega/pi * sum_{i<n} cos((2i+1) omega x),
    set to 0 for |x| > 1 (official code, omega = 0.1). x: any shape -> same shape.
    """
    total = torch.zeros_like(x)
    for i in range(n_terms):
        total = total + torch.cos((2 * i + 1) * omega * x)
    return (4.0 * omega / math.pi) * total * (x.abs() <= 1).to(x.dtype)


def _fourier_schedule(epoch: int, total_epochs: int) -> tuple[int, float]:
    """FDA official schedule: n grows 9 -> 17 with sum_{i=0..n} (n+1 terms), the noise weight follows
    0.05 (1 + cos(pi (epoch+1) / E)), which reaches 0 at the last epoch."""
    n_terms = 10 + int(epoch / total_epochs * 9)
    noise_scale = 0.05 * (1.0 + math.cos(math.pi * (epoch + 1) / total_epochs))
    return n_terms, noise_scale


class FourierSign(Quantizer):
    """FDA activation binarizer: sign forward, :func:`fourier_sign_slope` backward (n_terms scheduled)."""

    name = "fda_sign"

    def __init__(self, n_terms: int = 10):
        super().__init__()
        self.n_terms = n_terms  # a Python int: the term count shapes the graph; on_epoch sets it every epoch

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        self.n_terms = _fourier_schedule(epoch, total_epochs)[0]

    def forward(self, x):
        slope = fourier_sign_slope(x.detach(), self.n_terms)
        return straight_through(sign(x), x, slope)


class RSign(Quantizer):
    """ReActNet's RSign: x_b = sign(x - beta_c), one learnable threshold per input channel (init 0).

    Gradients come from the wrapped sign (Bi-Real's ApproxSign in ReActNet): dL/dx = F'(x - beta) dL/dx_b
    and dL/dbeta_c = -sum over the channel's elements of the same.
    """

    name = "rsign"

    def __init__(self, channels: int):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(channels))
        self.sign = PiecewiseQuadraticSign()

    def forward(self, x):
        return self.sign(x - _view_channels(self.beta, x, 1))


# ----------------------------------------------------------------------------------------------------------------
# Weight quantizers: forward(w, out_dim) -> same shape; out_dim is the output-channel axis
# ----------------------------------------------------------------------------------------------------------------

class SteSignWeight(Quantizer):
    """BNN weights: W_b = sign(W), no scale; gradient 1 on |W| <= 1 (Hubara et al., the latent weights are
    also clipped to [-1, 1] after each update: see ``BaselineMethod.after_optimizer_step``)."""

    name = "ste_sign_w"

    def forward(self, w, out_dim: int = 0):
        return straight_through(sign(w), w, clipped_ste_slope(w))


class XnorWeight(Quantizer):
    """XNOR-Net weights (sec. 3.1): W ~ alpha_o sign(W), alpha_o = ||W_o||_1 / n per output filter.

    Backward as the paper writes it: dC/dW_i = dC/dW~_i (1/n + alpha * 1_{|W_i| <= 1}), n = weights per filter.
    """

    name = "xnor_w"

    def forward(self, w, out_dim: int = 0):
        alpha = per_channel_mean_abs(w, out_dim).detach()
        n = w.numel() // w.shape[out_dim]
        slope = 1.0 / n + alpha * clipped_ste_slope(w)
        return straight_through(alpha * sign(w), w, slope.detach())


class DoReFaWeight(Quantizer):
    """DoReFa-Net weights, k = 1: W_b = E(|W|) sign(W), E over the whole layer (a single scalar); gradient
    identity (straight-through)."""

    name = "dorefa_w1"

    def forward(self, w, out_dim: int = 0):
        return straight_through(w.abs().mean().detach() * sign(w), w, 1.0)


class MagnitudeAwareWeight(Quantizer):
    """Bi-Real Net weights: W_b = (||W_o||_1 / n) sign(W) per output channel; magnitude-aware gradient
    dW_b/dW ~ (||W_o||_1 / n) * 1_{|W| < 1} (the scale's own derivative is dropped, as in the paper)."""

    name = "magnitude_aware_w"

    def forward(self, w, out_dim: int = 0):
        alpha = per_channel_mean_abs(w, out_dim).detach()
        return straight_through(alpha * sign(w), w, alpha * (w.abs() < 1).to(w.dtype))


class ClippedScaledSignWeight(Quantizer):
    """ReActNet weights (its official ResNet code): W_b = alpha_o sign(W), alpha_o = mean |W_o| not
    differentiated; gradient 1 on |W| <= 1 (the derivative of clamp(W, -1, 1))."""

    name = "clipped_scaled_sign_w"

    def forward(self, w, out_dim: int = 0):
        alpha = per_channel_mean_abs(w, out_dim).detach()
        return straight_through(alpha * sign(w), w, clipped_ste_slope(w))


def recu_tau(epoch: int, total_epochs: int, tau_min: float = 0.85, tau_max: float = 0.99) -> float:
    """ReCU's exponential tau schedule (official code): tau = A e^{epoch/E} + B, tau(0) = tau_min,
    tau(E) = tau_max."""
    a = (tau_max - tau_min) / (math.e - 1.0)
    return a * math.exp(epoch / total_epochs) + tau_min - a


class ReCUWeight(Quantizer):
    """ReCU weights: balance, rectified clamp, sign, learnable scale.

    w1 = (W - mean_o W) / (std_o / (2 sqrt 2))   balanced and standardised per output channel (official code)
    Q  = -mean|w1| * ln(2 - 2 tau)                the tau-quantile of a Laplace with scale mean|w1| (not
                                                   differentiated); tau = 1 leaves the weights unclamped
    W_b = alpha_o * sign(clamp(w1, -Q, Q))        alpha learnable per output channel, init U(0, 1)

    Backward: identity through sign, 1 inside [-Q, Q] through the clamp, autograd through the balancing.
    """

    name = "recu_w"

    def __init__(self, out_channels: int, tau: float = 0.85):
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(out_channels))
        self.register_buffer("tau", torch.tensor(tau))

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        self.tau.fill_(recu_tau(epoch, total_epochs))

    def rectify(self, w: torch.Tensor, out_dim: int = 0) -> torch.Tensor:
        """The balanced weights clamped to [-Q, Q] (what sign() sees); same shape as w."""
        dims = tuple(d for d in range(w.dim()) if d != out_dim)
        centered = w - w.mean(dim=dims, keepdim=True)
        std = torch.sqrt(centered.var(dim=dims, keepdim=True) + 1e-5)
        balanced = centered / (std / (2.0 * math.sqrt(2.0)))
        # A tensor bound (no .item()): keeps the quantizer traceable and runnable on the meta device.
        q = -balanced.abs().mean().detach() * torch.log(2.0 - 2.0 * self.tau)
        return torch.maximum(torch.minimum(balanced, q), -q)

    def forward(self, w, out_dim: int = 0):
        clamped = self.rectify(w, out_dim)
        return _view_channels(self.alpha, w, out_dim) * straight_through(sign(clamped), clamped, 1.0)


class NoiseAdaptation(nn.Module):
    """FDA's noise adaptation module, applied to each output channel's d = C_in k k weights:
    e(w) = W2 ReLU(W1 w) + 0.1 sin(w), W1: d -> d/64, W2: d/64 -> d, no biases (official code; d/4 when
    d < 64). It learns the residual between sign and its truncated Fourier series."""

    def __init__(self, d: int, reduction: int = 64):
        super().__init__()
        hidden = d // reduction if d >= reduction else max(d // 4, 1)
        self.fc1 = nn.Linear(d, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """rows: O x d -> O x d."""
        return self.fc2(F.relu(self.fc1(rows))) + 0.1 * torch.sin(rows)


class FourierWeight(Quantizer):
    """FDA weights: W_b = mean|W_o| * (sign(W) + s * e(W)), sign with the Fourier gradient, the scale not
    differentiated, e the :class:`NoiseAdaptation` module and s the noise weight (0.1 -> 0 over training).

    The noise term exists only in training: at the end of FDA's schedule s = 0, so inference is pure sign.
    """

    name = "fda_w"

    def __init__(self, fan_in: int, n_terms: int = 10, noise_scale: float = 0.1):
        super().__init__()
        self.noise = NoiseAdaptation(fan_in)
        self.n_terms = n_terms  # a Python int, as in FourierSign
        self.register_buffer("noise_scale", torch.tensor(noise_scale))

    def set_epoch(self, epoch: int, total_epochs: int) -> None:
        self.n_terms, noise_scale = _fourier_schedule(epoch, total_epochs)
        self.noise_scale.fill_(noise_scale)

    def forward(self, w, out_dim: int = 0):
        wb = straight_through(sign(w), w, fourier_sign_slope(w.detach(), self.n_terms))
        if self.training:
            rows = w.movedim(out_dim, 0)
            noise = self.noise(rows.reshape(rows.shape[0], -1)).reshape(rows.shape).movedim(0, out_dim)
            wb = wb + self.noise_scale * noise
        return per_channel_mean_abs(w, out_dim).detach() * wb


# ----------------------------------------------------------------------------------------------------------------
# Convs with more than quantized inputs and weights
# ----------------------------------------------------------------------------------------------------------------

class XnorConv2d(BinaryConv2d):
    """XNOR-Net conv (sec. 3.2): I * W ~ (sign(I) conv sign(W)) . K alpha, with K = A conv k:
    A = mean_c |I| (B x 1 x H x W) and k the k x k box filter 1/(k k), same stride and padding as the conv.
    K is full precision and differentiated by autograd; it adds no parameters."""

    def forward(self, x):
        magnitude = x.abs().mean(dim=1, keepdim=True)  # B x 1 x H x W
        k = F.avg_pool2d(magnitude, self.kernel_size, self.stride, self.padding, count_include_pad=True)
        return super().forward(x) * k  # B x O x H' x W'


# ----------------------------------------------------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------------------------------------------------

def _modules_with_schedule(model: nn.Module):
    return (m for m in model.modules() if hasattr(m, "set_epoch"))


@dataclass(frozen=True)
class BaselineMethod:
    """One Table 1 method as data: its quantizers, conv class, activation and whether BNN-style weight
    clipping applies. Build modules with :meth:`conv` and :meth:`activation`."""

    name: str
    paper: str
    input_quantizer: Callable[[int], Quantizer]          # in_channels -> activation quantizer
    weight_quantizer: Callable[[int, int], Quantizer]    # (out_channels, fan_in) -> weight quantizer
    make_activation: Callable[[int], nn.Module]          # channels -> ReLU replacement
    conv_class: type = BinaryConv2d
    clip_latent_weights: bool = False

    def conv(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Module:
        """The method's binary conv replacing one bias-free backbone conv (its output feeds the block's BN)."""
        return self.conv_class(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False,
                               input_quantizer=self.input_quantizer(in_ch),
                               weight_quantizer=self.weight_quantizer(out_ch, in_ch * kernel_size * kernel_size))

    def activation(self, channels: int) -> nn.Module:
        """Replaces a ReLU of the backbone: after a BN inside a block, at a block output, after the stem BN."""
        return self.make_activation(channels)

    def on_epoch(self, model: nn.Module, epoch: int, total_epochs: int) -> None:
        """Call at the start of every epoch (0-based): sets ReCU's tau, FDA's Fourier terms and noise weight."""
        for m in _modules_with_schedule(model):
            m.set_epoch(epoch, total_epochs)

    @torch.no_grad()
    def after_optimizer_step(self, model: nn.Module) -> None:
        """Call after every optimizer step: BNN clips its latent weights to [-1, 1]; no-op elsewhere."""
        if self.clip_latent_weights:
            for m in model.modules():
                if isinstance(m, BinaryLayer):
                    m.weight.clamp_(-1.0, 1.0)


BASELINES: dict[str, BaselineMethod] = {
    m.name: m for m in (
        BaselineMethod(
            "bnn", "Hubara et al., Binarized Neural Networks, NeurIPS 2016",
            input_quantizer=lambda c: SteSign(),
            weight_quantizer=lambda o, d: SteSignWeight(),
            make_activation=lambda c: nn.Hardtanh(),
            clip_latent_weights=True),
        BaselineMethod(
            "xnor", "Rastegari et al., XNOR-Net: ImageNet Classification Using Binary CNNs, ECCV 2016",
            input_quantizer=lambda c: SteSign(),
            weight_quantizer=lambda o, d: XnorWeight(),
            make_activation=lambda c: nn.Identity(),
            conv_class=XnorConv2d),
        BaselineMethod(
            "dorefa", "Zhou et al., DoReFa-Net: Training Low Bitwidth CNNs with Low Bitwidth Gradients, arXiv 2016",
            input_quantizer=lambda c: DoReFaActivation(),
            weight_quantizer=lambda o, d: DoReFaWeight(),
            make_activation=lambda c: nn.Hardtanh(0.0, 1.0)),
        BaselineMethod(
            "bireal", "Liu et al., Bi-Real Net, ECCV 2018",
            input_quantizer=lambda c: PiecewiseQuadraticSign(),
            weight_quantizer=lambda o, d: MagnitudeAwareWeight(),
            make_activation=lambda c: nn.Identity()),
        BaselineMethod(
            "reactnet", "Liu et al., ReActNet: Towards Precise Binary Neural Network with Generalized "
                        "Activation Functions, ECCV 2020",
            input_quantizer=RSign,
            weight_quantizer=lambda o, d: ClippedScaledSignWeight(),
            make_activation=lambda c: nn.Identity()),
        BaselineMethod(
            "recu", "Xu et al., ReCU: Reviving the Dead Weights in Binary Neural Networks, ICCV 2021",
            input_quantizer=lambda c: StandardizedApproxSign(),
            weight_quantizer=lambda o, d: ReCUWeight(o),
            make_activation=lambda c: nn.PReLU(c, init=0.25)),
        BaselineMethod(
            "fda", "Xu et al., Learning Frequency Domain Approximation for Binary Neural Networks, NeurIPS 2021",
            input_quantizer=lambda c: FourierSign(),
            weight_quantizer=lambda o, d: FourierWeight(d),
            make_activation=lambda c: nn.PReLU(c, init=0.25)),
    )
}
