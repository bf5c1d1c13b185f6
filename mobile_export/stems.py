"""A stride-2 convolution of few input channels as a stride-1 one on the space-to-depth image, for int8 XNNPACK.

The ResNet stems (7 x 7, stride 2, 3 input channels) are XNNPACK's slowest int8 convs per MAC on this project's
shapes: an IGEMM tap reads 3 bytes, so the 2 x 128 x 128 x 64 hand stem ran at about 68 GMAC/s against about
215 for the 256-channel layers (4.5 ms of the int8 program). Splitting the zero-padded image into its 2 x 2
pixel phases (C -> 4C channels at half the size) turns it into a ceil(k / 2) x ceil(k / 2) stride-1 conv
whose taps read 12 bytes:

    y[o, i, j] = sum over c, ky, kx of w[o, c, ky, kx] x_pad[c, 2 i + ky, 2 j + kx]
               = sum over (a, b, c), u, v of w[o, c, 2 u + a, 2 v + b] x_pad[c, 2 (i + u) + a, 2 (j + v) + b]

with the kernel zero-padded to an even size. In float32 only the summation order differs; in int8 the
weights' per-channel scales are unchanged (zeros added) and the pixels only move, and the two programs agree
to one output step (tests/test_stems.py). Measured on the hand stem (one thread, whole .pte): int8 7.4 -> 5.1 ms, but fp32
8.2 -> 11.8 ms, so the exporter applies it with ``--int8`` only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mobile_export.rewrite import replace_children

MAX_IN_CHANNELS = 4  # wider inputs already fill XNNPACK's IGEMM; the rewrite only adds zero taps there


def rewritable(conv: nn.Module) -> bool:
    """Whether :class:`SpaceToDepthConv2d` can stand in for ``conv``: a plain stride-2 conv of at most
    MAX_IN_CHANNELS input channels with a kernel of at least 3."""
    return (type(conv) is nn.Conv2d and tuple(conv.stride) == (2, 2) and conv.groups == 1
            and tuple(conv.dilation) == (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and conv.in_channels <= MAX_IN_CHANNELS
            and min(conv.kernel_size) >= 3)


class SpaceToDepthConv2d(nn.Module):
    """A stride-2 ``Conv2d`` as a stride-1 conv of 4 C channels on the 2 x 2 pixel phases (module docstring)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not rewritable(conv):
            raise ValueError(f"not a stride-2 conv of at most {MAX_IN_CHANNELS} input channels: {conv}")
        (kh, kw), (self.ph, self.pw) = conv.kernel_size, conv.padding
        self.kh, self.kw = kh, kw
        self.th, self.tw = (kh + 1) // 2, (kw + 1) // 2
        w = F.pad(conv.weight.detach(), (0, 2 * self.tw - kw, 0, 2 * self.th - kh))  # O x C x 2th x 2tw
        o, c = w.shape[:2]
        # Channel order of the phase image: (a, b, c), a / b the row / column phase.
        w = w.view(o, c, self.th, 2, self.tw, 2).permute(0, 3, 5, 1, 2, 4).reshape(o, 4 * c, self.th, self.tw)
        self.conv = nn.Conv2d(4 * c, o, (self.th, self.tw), bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(w)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach())

    def forward(self, x):
        n, c, h, w = x.shape
        oh, ow = (h + 2 * self.ph - self.kh) // 2 + 1, (w + 2 * self.pw - self.kw) // 2 + 1
        # Pad to 2 (out + taps - 1) rows / columns: every tap's pixel exists, the extra ones meet zero weights.
        ph, pw = 2 * (oh + self.th - 1), 2 * (ow + self.tw - 1)
        x = F.pad(x, (self.pw, pw - w - self.pw, self.ph, ph - h - self.ph))
        x = x.view(n, c, ph // 2, 2, pw // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, ph // 2, pw // 2)
        return self.conv(x)


def space_to_depth_stems(model: nn.Module) -> int:
    """Replace every rewritable conv of ``model`` in place; returns how many."""
    return replace_children(model, rewritable, SpaceToDepthConv2d)
