"""Full-precision transposed convolutions as one ordinary convolution per output phase, for XNNPACK.

XNNPACK runs ``ConvTranspose2d`` as "Deconvolution (Subconv2D)", which on this project's shapes is 2.2x
slower than its IGEMM convolution (BoxNet's 256 -> 256, k4 s2 p1 deconv at 32 x 24: 36.2 ms against 16.2 ms
for the rewrite below, one thread, Zen 4). The rewrite is the same algebra as the binary kernels' transposed
conv (docs/kernels.md, "Transposed conv as stride^2 convs"):

    y[oy] = sum over ky with oy = s * iy - p + ky of x[iy] w[ky]

so the outputs with oy = s j + r (phase r) use only the taps ky = r + p (mod s), reading input rows
iy = j + (r + p - ky) / s: a dense conv whose kernel rows are those taps ordered by input offset, over the
input padded by the most negative offset above and as needed below. The s_h * s_w phase outputs are then
interleaved (stack + permute + reshape). Exact up to float summation order (max |diff| 1.1e-6 on the
BoxNet shape above).

A BatchNorm2d (eval) that follows a phased deconv in an ``nn.Sequential``, and a ReLU after it, fold into the
phase convs (:func:`fold_into_phases`): the BN is per output channel and the ReLU per element, so both commute
with the interleave. XNNPACK then runs each phase as one conv with bias and clamp; unfolded, the int8 export
ran the BN after the interleave over the whole upsampled map (in the BiDRN program a float Multiply and Add
over 64 x 48 x 256; in a small deconv3 + BN + ReLU + center conv program 8.3 -> 7.0 ms in a slow hour).

Applied where the output is exactly stride x the input (kernel = stride + 2 padding, e.g. k4 s2 p1 or
k2 s2 p0; then every phase has the input's size, the same number of taps, and offsets that need only zero
padding), with no output padding, groups 1 and dilation 1; other transposed convs stay as they are.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from mobile_export.rewrite import replace_children


def phase_taps(kernel: int, stride: int, padding: int, phase: int) -> list[tuple[int, int]]:
    """(input offset d, kernel index k) of one phase's taps, offsets ascending: iy = j + d."""
    return sorted(((phase + padding - k) // stride, k) for k in range(kernel) if (phase + padding - k) % stride == 0)


def phaseable(d: nn.Module) -> bool:
    """Whether :class:`PhasedConvTranspose2d` can stand in for ``d`` (module docstring)."""
    return (type(d) is nn.ConvTranspose2d and d.groups == 1 and tuple(d.dilation) == (1, 1)
            and tuple(d.output_padding) == (0, 0) and d.padding_mode == "zeros"
            and all(k == s + 2 * p for k, s, p in zip(d.kernel_size, d.stride, d.padding)))


class PhasedConvTranspose2d(nn.Module):
    """``ConvTranspose2d`` as stride_h * stride_w ``Conv2d`` (module docstring)."""

    def __init__(self, d: nn.ConvTranspose2d):
        super().__init__()
        if not phaseable(d):
            raise ValueError(f"cannot phase-decompose {d}: needs groups 1, dilation 1, no output padding and "
                             "kernel = stride + 2 padding")
        (kh, kw), (sh, sw), (ph, pw) = d.kernel_size, d.stride, d.padding
        self.kernel_size, self.stride, self.padding = (kh, kw), (sh, sw), (ph, pw)
        w = d.weight.detach()  # in x out x kh x kw
        self.convs = nn.ModuleList()
        self.offsets: list[tuple[int, int, int, int]] = []
        for ry in range(sh):
            rows = phase_taps(kh, sh, ph, ry)
            for rx in range(sw):
                cols = phase_taps(kw, sw, pw, rx)
                kernel = w[:, :, [k for _, k in rows]][:, :, :, [k for _, k in cols]]
                conv = nn.Conv2d(w.shape[0], w.shape[1], (len(rows), len(cols)), bias=d.bias is not None)
                with torch.no_grad():
                    conv.weight.copy_(kernel.transpose(0, 1))
                    if d.bias is not None:
                        conv.bias.copy_(d.bias.detach())
                self.convs.append(conv)
                self.offsets.append((rows[0][0], rows[-1][0], cols[0][0], cols[-1][0]))
        self.activation: nn.Module | None = None  # a folded ReLU, applied to each phase (fold_into_phases)

    def fold_batch_norm(self, bn: nn.BatchNorm2d) -> None:
        """y = BN(deconv(x)) in each phase conv's weight and bias (eval statistics)."""
        if bn.training or bn.running_mean is None:
            raise ValueError(f"cannot fold {bn} into a phased deconv: needs eval mode and running statistics")
        if self.activation is not None:
            raise ValueError("fold the batch norm before the activation")
        for i, conv in enumerate(self.convs):
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
            folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, bias=True)
            with torch.no_grad():
                folded.weight.copy_(w), folded.bias.copy_(b)
            self.convs[i] = folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        sh, sw = self.stride
        outs = []
        for conv, (d0y, d1y, d0x, d1x) in zip(self.convs, self.offsets):
            # Phase output row j = 0 .. h-1 reads input rows j + d0y .. j + d1y (d0y <= 0 <= d1y when
            # kernel = stride + 2 padding): pad -d0y rows above and d1y below; likewise columns.
            y = conv(F.pad(x, (-d0x, d1x, -d0y, d1y)))
            outs.append(self.activation(y) if self.activation is not None else y)
        y = torch.stack(outs, 2).view(n, -1, sh, sw, h, w)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(n, -1, h * sh, w * sw)


def phase_transposed_convs(model: nn.Module) -> int:
    """Replace every phaseable full-precision ``nn.ConvTranspose2d`` in ``model`` in place; returns how many."""
    return replace_children(model, phaseable, PhasedConvTranspose2d)


def fold_into_phases(model: nn.Module) -> int:
    """In every ``nn.Sequential`` of ``model``: a BatchNorm2d right after a :class:`PhasedConvTranspose2d` folds
    into its phase convs, and a ReLU right after that BN into the phases too (each replaced by Identity);
    returns how many BNs were folded (module docstring)."""
    count = 0
    for seq in list(model.modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)
        for i, child in enumerate(children[:-1]):
            bn = children[i + 1]
            if not (isinstance(child, PhasedConvTranspose2d) and type(bn) is nn.BatchNorm2d and not bn.training
                    and bn.running_mean is not None and child.activation is None):
                continue
            child.fold_batch_norm(bn)
            seq[i + 1] = nn.Identity()
            if i + 2 < len(children) and type(children[i + 2]) is nn.ReLU:
                child.activation, seq[i + 2] = nn.ReLU(), nn.Identity()
            count += 1
    return count
