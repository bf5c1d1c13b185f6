"""The one binary layer: Conv2d, ConvTranspose2d and Linear whose input and weights pass through quantizers.

Every binarization method in the project (BiDRN and the seven baselines) builds its convolutions from these
three classes, choosing only the quantizers (larq's ``input_quantizer`` / ``kernel_quantizer`` design). The cost
counter and the exporter recognise a binary layer by ``isinstance(m, BinaryLayer)``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bidrn.nn.quantizers import PiecewiseQuadraticSign, Quantizer, ScaledSignWeight


class BinaryLayer:
    """Marker mixin: the layer computes with quantized input and weights.

    ``input_quantizer(x)`` and ``weight_quantizer(w, out_dim)`` are modules; the layer's MACs are binary when
    both quantizers are 1-bit (``precision == 1``).
    """

    weight_out_dim = 0  # axis of the output channel in ``self.weight``

    def _init_quantizers(self, input_quantizer: nn.Module | None, weight_quantizer: nn.Module | None):
        self.input_quantizer = input_quantizer if input_quantizer is not None else PiecewiseQuadraticSign()
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else ScaledSignWeight()

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.weight, self.weight_out_dim)

    @property
    def is_binary(self) -> bool:
        return all(getattr(q, "precision", 32) == 1 for q in (self.input_quantizer, self.weight_quantizer))


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    """Conv2d on quantized activations and weights (eq. 5: o = alpha * bitcount(sign(a) XNOR sign(W)))."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 input_quantizer: Quantizer | None = None, weight_quantizer: Quantizer | None = None, **kw):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **kw)
        self._init_quantizers(input_quantizer, weight_quantizer)

    def forward(self, x):
        return self._conv_forward(self.input_quantizer(x), self.quantized_weight(), self.bias)


class BinaryConvTranspose2d(BinaryLayer, nn.ConvTranspose2d):
    """ConvTranspose2d on quantized activations and weights (weight layout in x out x kH x kW)."""

    weight_out_dim = 1

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=False,
                 input_quantizer: Quantizer | None = None, weight_quantizer: Quantizer | None = None, **kw):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, **kw)
        self._init_quantizers(input_quantizer, weight_quantizer)

    def forward(self, x):
        return F.conv_transpose2d(self.input_quantizer(x), self.quantized_weight(), self.bias, self.stride,
                                  self.padding, self.output_padding, self.groups, self.dilation)


class BinaryLinear(BinaryLayer, nn.Linear):
    """Linear on quantized activations and weights."""

    def __init__(self, in_features, out_features, bias=True,
                 input_quantizer: Quantizer | None = None, weight_quantizer: Quantizer | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self._init_quantizers(input_quantizer, weight_quantizer)

    def forward(self, x):
        return F.linear(self.input_quantizer(x), self.quantized_weight(), self.bias)


class RPReLU(nn.Module):
    """Eq. 6 (ReActNet's RPReLU), per channel: x - gamma + zeta if x > gamma else beta (x - gamma) + zeta.

    Initialised as a PReLU with slope 0.25 and no shift (beta = 0.25, gamma = zeta = 0).
    ``channel_dim`` is 1 for feature maps B x C x H x W and -1 for B x ... x C features.
    """

    def __init__(self, channels: int, channel_dim: int = 1, init_beta: float = 0.25):
        super().__init__()
        self.channel_dim = channel_dim
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.zeta = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.full((channels,), init_beta))

    def _view(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return p.view(shape)

    def forward(self, x):
        g, z, b = (self._view(p, x) for p in (self.gamma, self.zeta, self.beta))
        shifted = x - g
        return torch.where(shifted > 0, shifted, b * shifted) + z
