"""The Local Convolution Residual family (BiDRN paper, Sec. 3.1, Fig. 5, eqs. 7-10).

Every module takes a full-precision feature x, forms the pre-activation a_f = Hardtanh(x) (eq. 3), runs 1-bit
convolutions on sign(a_f), rescales each output with a per-channel RPReLU (eq. 6) and adds a_f back (the local
residual) before one BatchNorm. The generalisation to k-fold channel ratios (ResNet-50 needs 4x) splits a
channel-changing conv into k convs of C -> C, so binary weights and MACs equal those of the conv it replaces;
only RPReLU adds parameters (3 per channel per branch).

``PlainBinaryConv`` is what an ablation puts where an LCR module is switched off (Table 2a): the same binary
conv on Hardtanh(x), then BN, with neither RPReLU nor residual.
"""
from __future__ import annotations

import torch
from torch import nn

from bidrn.nn.layers import BinaryConv2d, RPReLU


def make_pre_activation(kind: str, channels: int) -> nn.Module:
    """The activation in front of a binary conv (Table 2b): Hardtanh (eq. 3, BiDRN's choice), ReLU or PReLU."""
    if kind == "hardtanh":
        return nn.Hardtanh()
    if kind == "relu":
        return nn.ReLU()
    if kind == "prelu":
        return nn.PReLU(channels)
    raise ValueError(f"unknown pre-activation {kind!r}; expected 'hardtanh', 'relu' or 'prelu'")


def _downsample(stride: int) -> nn.Module:
    # ceil_mode keeps the pooled size equal to a k3/s2/p1 conv's output on odd sizes too.
    return nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False) if stride == 2 else nn.Identity()


class _ResidualBranch(nn.Module):
    """RPReLU(bconv(a_f)) + residual(a_f): one binary conv with its local residual, before the BN of eq. 7."""

    def __init__(self, channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = BinaryConv2d(channels, channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.act = RPReLU(channels)
        self.residual = _downsample(stride)

    def forward(self, a_f):  # B x C x H x W -> B x C x H/s x W/s
        return self.act(self.conv(a_f)) + self.residual(a_f)


class _LCRBase(nn.Module):
    def __init__(self, in_channels: int, pre_activation: str):
        super().__init__()
        self.pre_act = make_pre_activation(pre_activation, in_channels)


class BaseLCR(_LCRBase):
    """Eq. 7: BN(RPReLU(bconv(a_f)) + a_f), C -> C at stride 1."""

    stride = 1

    def __init__(self, channels: int, kernel_size: int = 3, pre_activation: str = "hardtanh"):
        super().__init__(channels, pre_activation)
        self.branch = _ResidualBranch(channels, kernel_size, self.stride)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(self.branch(self.pre_act(x)))


class DScR(BaseLCR):
    """Down Scale Residual, eq. 8: BN(RPReLU(bconv_s2(a_f)) + AvgPool(a_f)), C -> C at stride 2."""

    stride = 2


class FUR(_LCRBase):
    """Fusion Up Residual, eq. 9 generalised to k: k branches C -> C, each with its residual; concat; one BN."""

    def __init__(self, channels: int, k: int, kernel_size: int = 1, stride: int = 1,
                 pre_activation: str = "hardtanh"):
        super().__init__(channels, pre_activation)
        self.branches = nn.ModuleList(_ResidualBranch(channels, kernel_size, stride) for _ in range(k))
        self.bn = nn.BatchNorm2d(k * channels)

    def forward(self, x):  # B x C x H x W -> B x kC x H/s x W/s
        a_f = self.pre_act(x)
        return self.bn(torch.cat([branch(a_f) for branch in self.branches], dim=1))


class DSaR(FUR):
    """Down Sample Residual: FUR whose stride-2 branches add AvgPool(a_f) (Down Scale + Fusion Up), C -> kC."""

    def __init__(self, channels: int, k: int = 2, kernel_size: int = 3, pre_activation: str = "hardtanh"):
        super().__init__(channels, k, kernel_size=kernel_size, stride=2, pre_activation=pre_activation)


class FDR(_LCRBase):
    """Fusion Down Residual, eq. 10 generalised to k: split kC into k chunks, branch each C -> C, sum, one BN."""

    def __init__(self, channels: int, k: int, kernel_size: int = 1, pre_activation: str = "hardtanh"):
        super().__init__(k * channels, pre_activation)
        self.k = k
        self.branches = nn.ModuleList(_ResidualBranch(channels, kernel_size, 1) for _ in range(k))
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):  # B x kC x H x W -> B x C x H x W
        chunks = torch.chunk(self.pre_act(x), self.k, dim=1)
        out = self.branches[0](chunks[0])
        for branch, chunk in zip(self.branches[1:], chunks[1:]):
            out = out + branch(chunk)
        return self.bn(out)


class PlainBinaryConv(_LCRBase):
    """BN(bconv(a_f)) with no local residual: the ablation stand-in for a switched-off LCR module."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 pre_activation: str = "hardtanh"):
        super().__init__(in_channels, pre_activation)
        self.conv = BinaryConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return self.bn(self.conv(self.pre_act(x)))
