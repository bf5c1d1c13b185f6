"""Export a whole-body network to an ExecuTorch .pte: binary layers on the bidrn:: ops, the rest on XNNPACK.

    export_pte("bidrn", "out/export/bidrn.pte")            # a registered name (random init, seeded)
    export_pte(model, "model.pte", int8=True)               # a WholeBodyNet; --int8: PT2E for XNNPACK

The stages, each inspectable (ExecuTorch's export -> lower -> to_executorch -> save):

1. ``convert_binary_layers``: every BinaryConv2d / BinaryConvTranspose2d / BinaryLinear becomes a
   :class:`PackedBinaryLayer` calling the bidrn:: op with its weights packed once (1 bit per weight) and
   alpha_o (eq. 4) as the epilogue's scale. What follows the layer is folded into the epilogue where that is
   exact: a BatchNorm (scale and bias), then a ReLU / PReLU / RPReLU (eq. 6). In an LCR module
   BN(RPReLU(bconv(a_f)) + residual) the BN sits after the add and cannot fold into the scale, so the op's
   epilogue takes the residual and the BN as a post-affine: each LCR module becomes one op (FUR's k branches
   one C -> kC op, FDR a chain of k ops). Where the next consumer is only another binary layer (BoxNet
   deconv1 -> BN -> deconv2), the layer emits packed signs instead of floats. A layer the op cannot express
   raises :class:`UnsupportedLayerError` naming it. Full-precision transposed convs (BoxNet's deconv3, all
   three in Hand4Whole) become one conv per output phase (mobile_export/deconv.py): XNNPACK's IGEMM runs
   them 2.2x faster than its Deconvolution.
2. ``torch.export`` of the image -> outputs forward (body model included when attached).
3. ``--int8``: torchao's PT2E flow with XNNPACKQuantizer on the full-precision convs, transposed convs and
   linears of the network (the bidrn:: ops stay 1-bit; the SMPL-X layer stays float32).
4. ``to_edge_transform_and_lower`` with the XNNPACK partitioner; what XNNPACK does not take (grid_sample,
   upsampling, soft-argmax reductions, the bidrn:: ops) runs on ExecuTorch's portable kernels / our library.

A ``<out>.json`` sidecar holds the report (output names in program order, sizes, fusions) for runtimes and
``bidrn bench model``.
"""
from __future__ import annotations

import copy
import json
import operator
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from bidrn.nn.layers import BinaryConv2d, BinaryConvTranspose2d, BinaryLinear, BinaryLayer, RPReLU
from bidrn.nn.quantizers import PiecewiseQuadraticSign, SteSign
from mobile_export.deconv import PhasedConvTranspose2d, fold_into_phases, phase_transposed_convs
from mobile_export.stems import SpaceToDepthConv2d, space_to_depth_stems
from mobile_export import ops

# Activation quantizers whose forward is exactly eq. 1's sign (their backward differs, which export ignores).
SIGN_QUANTIZERS: tuple[type, ...] = (PiecewiseQuadraticSign, SteSign)
# |W_q| may differ from alpha_o by float rounding: ScaledSignWeight returns w + (alpha sign(w) - w).
ALPHA_RTOL = 1e-5


def _sign_quantizer_types() -> tuple[type, ...]:
    from bidrn.nn.baselines import FourierSign  # sign forward, a Fourier-series backward

    return SIGN_QUANTIZERS + (FourierSign,)


class ExportError(ValueError):
    """The network could not be exported; the message says which one and at which stage."""


class UnsupportedLayerError(ExportError):
    """A layer the bidrn:: ops cannot run exactly; the message names the layer and the reason."""

    def __init__(self, name: str, layer: nn.Module, reason: str):
        super().__init__(f"cannot export layer {name!r} ({type(layer).__name__}): {reason}")
        self.layer_name, self.reason = name, reason


# ---------------------------------------------------------------- the replacement layer

class PackedBinaryLayer(nn.Module):
    """A binary layer as the exported program runs it: one bidrn:: op with packed weights.

    y = epilogue(scale * acc + bias), acc the integer sign(x) . sign(W) sum (eq. 5), epilogue an optional
    RPReLU (beta, gamma, zeta rows of ``rprelu``), then + ``residual`` (a forward argument) and the ``post``
    affine (scale, bias rows); ``output`` is ops.Output (float, int32 accumulator, packed).
    x may be float NCHW / B x F or packed signs from a previous PackedBinaryLayer.
    """

    def __init__(self, kind: str, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                 in_channels: int, kernel_size=(1, 1), stride=(1, 1), padding=(0, 0), output_padding=(0, 0)):
        super().__init__()
        self.kind, self.in_channels = kind, in_channels
        self.kernel_size, self.stride = list(kernel_size), list(stride)
        self.padding, self.output_padding = list(padding), list(output_padding)
        self.output = ops.Output.FLOAT
        self.branches = 1  # FDR's k convs stacked in one op (FusedFDR)
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("bias", bias.float().contiguous())
        self.register_buffer("rprelu", None)
        self.register_buffer("post", None)
        self.folded: list[str] = []

    @property
    def out_channels(self) -> int:
        return self.scale.numel() // self.branches

    def set_rprelu(self, beta: torch.Tensor, gamma: torch.Tensor, zeta: torch.Tensor) -> None:
        params = torch.stack([p.detach().float().expand(self.out_channels) for p in (beta, gamma, zeta)])
        self.register_buffer("rprelu", params.contiguous())

    def set_post(self, bn: nn.BatchNorm2d) -> None:
        """The BN after a residual add, applied in the epilogue after it: y = (RPReLU(.) + residual) s + t."""
        self.register_buffer("post", torch.stack(batch_norm_affine(bn)).float().contiguous())
        self.folded.append("residual+bn")

    def forward(self, x, residual=None, in_offset: int = 0, residual_offset: int = 0, residual_channels: int = 0,
                clamp_residual: bool = False, partial=None, shortcut=None, residual_pool: int = 1):
        tail = (int(self.output), residual, self.post, in_offset, residual_offset, residual_channels, clamp_residual,
                partial, shortcut, residual_pool)
        if self.branches > 1:
            tail = (*tail, self.branches)
        if self.kind == "linear":
            return torch.ops.bidrn.binary_linear(x, self.weight, self.scale, self.bias, self.rprelu,
                                                 self.in_channels, *tail)
        if self.kind == "conv_transpose":
            return torch.ops.bidrn.binary_conv_transpose2d(
                x, self.weight, self.scale, self.bias, self.rprelu, self.in_channels, self.kernel_size,
                self.stride, self.padding, self.output_padding, *tail)
        return torch.ops.bidrn.binary_conv2d(x, self.weight, self.scale, self.bias, self.rprelu, self.in_channels,
                                             self.kernel_size, self.stride, self.padding, *tail)

    def extra_repr(self) -> str:
        fused = f", folded={'+'.join(self.folded)}" if self.folded else ""
        return (f"{self.kind}, {self.in_channels} -> {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"p={self.padding}, output={ops.Output(self.output).name}{fused}")


def _alpha(name: str, layer: BinaryLayer) -> torch.Tensor:
    """alpha_o from the layer's quantized weights, checked to be alpha_o * sign(W_o) (eq. 4)."""
    with torch.no_grad():
        wq = layer.quantized_weight().detach()
    magnitude = wq.abs().movedim(layer.weight_out_dim, 0).flatten(1)  # O x n
    alpha = magnitude.mean(dim=1)
    spread = (magnitude - alpha[:, None]).abs().max(dim=1).values
    bad = spread > ALPHA_RTOL * alpha.clamp_min(torch.finfo(alpha.dtype).tiny)
    if bad.any():
        o = int(bad.nonzero()[0])
        raise UnsupportedLayerError(name, layer, f"its {layer.weight_quantizer.name} weights are not "
                                    f"alpha_o * sign(W_o): output channel {o} has magnitudes from "
                                    f"{magnitude[o].min():.4g} to {magnitude[o].max():.4g}; the bidrn:: ops take one "
                                    "scale per output channel")
    return alpha


def _check_layer(name: str, layer: nn.Module) -> None:
    if type(layer) not in (BinaryConv2d, BinaryConvTranspose2d, BinaryLinear):
        raise UnsupportedLayerError(name, layer, "its forward is not the plain binary layer's "
                                    "(e.g. XNOR-Net's activation scale K); export supports BinaryConv2d, "
                                    "BinaryConvTranspose2d and BinaryLinear with a sign input quantizer")
    if not isinstance(layer.input_quantizer, _sign_quantizer_types()):
        raise UnsupportedLayerError(name, layer, f"its input quantizer {layer.input_quantizer.name!r} is not "
                                    "eq. 1's sign(x) (e.g. a learnable threshold or a multi-level activation); "
                                    "the bidrn:: ops binarize their input with sign(x), sign(0) = +1")
    if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
        if layer.groups != 1 or tuple(layer.dilation) != (1, 1) or layer.padding_mode != "zeros":
            raise UnsupportedLayerError(name, layer, f"groups={layer.groups}, dilation={tuple(layer.dilation)}, "
                                        f"padding_mode={layer.padding_mode!r}; the bidrn:: ops support groups=1, "
                                        "dilation 1 and zero padding only")
        if isinstance(layer.padding, str):
            raise UnsupportedLayerError(name, layer, f"padding={layer.padding!r}; give explicit integer padding")


def pack_layer(name: str, layer: nn.Module) -> PackedBinaryLayer:
    """The PackedBinaryLayer computing exactly what ``layer`` computes in eval mode (before any folding)."""
    _check_layer(name, layer)
    alpha = _alpha(name, layer)
    w = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else torch.zeros_like(alpha)
    if isinstance(layer, BinaryLinear):
        return PackedBinaryLayer("linear", ops.pack_linear_weight(w), alpha, bias, layer.in_features)
    if isinstance(layer, BinaryConvTranspose2d):
        packed = ops.pack_conv_transpose_weight(w, layer.stride, layer.padding)
        return PackedBinaryLayer("conv_transpose", packed, alpha, bias, layer.in_channels, layer.kernel_size,
                                 layer.stride, layer.padding, layer.output_padding)
    return PackedBinaryLayer("conv", ops.pack_conv_weight(w), alpha, bias, layer.in_channels, layer.kernel_size,
                             layer.stride, layer.padding)


# ---------------------------------------------------------------- folding

def batch_norm_affine(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = s x + t per channel: s = gamma / sqrt(var + eps), t = beta - s mean."""
    weight, bias = (bn.weight.detach(), bn.bias.detach()) if bn.affine else (None, None)
    return affine_of_batch_norm(weight, bias, bn.running_mean, bn.running_var, bn.eps)


def affine_of_batch_norm(weight: torch.Tensor | None, bias: torch.Tensor | None, mean: torch.Tensor,
                         var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_norm_affine` from the BN's tensors (gamma, beta None without affine terms)."""
    s = 1 / torch.sqrt(var + eps)  # as ATen's inference BN
    if weight is not None:
        s = weight * s
    t = (bias if bias is not None else 0) - s * mean
    return s, t


def fold_batch_norm(packed: PackedBinaryLayer, bn: nn.BatchNorm2d | nn.BatchNorm1d) -> None:
    """BN(scale * acc + bias) = (s scale) acc + (s bias + t) with BN = s x + t (:func:`batch_norm_affine`)."""
    if packed.rprelu is not None:
        raise ValueError("fold the batch norm before the activation")
    s, t = batch_norm_affine(bn)
    packed.scale = (s * packed.scale).float().contiguous()
    packed.bias = (s * packed.bias + t).float().contiguous()
    packed.folded.append("bn")


def fold_activation(packed: PackedBinaryLayer, act: nn.Module) -> bool:
    """Fold a ReLU / PReLU / RPReLU that follows the layer into its RPReLU epilogue; False if not foldable."""
    o = packed.out_channels
    zeros = torch.zeros(o)
    if packed.rprelu is not None:
        return False
    if type(act) is nn.ReLU:  # RPReLU with beta = gamma = zeta = 0 is max(y, 0) (negative y -> -0.0 + 0 = 0)
        packed.set_rprelu(zeros, zeros, zeros)
    elif type(act) is nn.PReLU and act.weight.numel() in (1, o):
        packed.set_rprelu(act.weight.detach(), zeros, zeros)
    elif type(act) is RPReLU and act.channel_dim in (1, -1):
        packed.set_rprelu(act.beta, act.gamma, act.zeta)
    else:
        return False
    packed.folded.append(type(act).__name__.lower())
    return True


class ChannelAffine(nn.Module):
    """An eval-mode BatchNorm as x * s + t per channel (the same two roundings as ATen's inference BN).

    XNNPACK would lower a BN that no conv precedes (LCR's BN after the residual add) to a 1 x 1 depthwise conv,
    which needs NHWC and so a layout copy at each boundary with a bidrn:: op; a broadcast mul + add runs in
    NCHW and joins the elementwise partition around it."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        s, t = batch_norm_affine(bn)
        self.register_buffer("s", s.float().view(1, -1, 1, 1).contiguous())
        self.register_buffer("t", t.float().view(1, -1, 1, 1).contiguous())

    def forward(self, x):
        return x * self.s + self.t


class EvenAvgPool(nn.Module):
    """LCR's 2 x 2 average-pool residual (ceil_mode, count_include_pad=False) as a plain 2 x 2 pool where the
    input size is even, which is then exactly the same and XNNPACK takes it (it rejects ceil_mode)."""

    def __init__(self, pool: nn.AvgPool2d):
        super().__init__()
        self.pool = pool

    def forward(self, x):
        if x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:  # static shapes: decided at export
            return torch.nn.functional.avg_pool2d(x, 2)
        return self.pool(x)


def _is_hardtanh(m: nn.Module) -> bool:
    return type(m) is nn.Hardtanh and m.min_val == -1.0 and m.max_val == 1.0


class FusedLCR(nn.Module):
    """BaseLCR / DScR (eq. 7-8) as one op: BN(RPReLU(bconv(a_f)) + residual(a_f)) all in the epilogue.

    With eq. 3's Hardtanh and an identity residual the op reads x itself (sign(Hardtanh(x)) = sign(x)) and
    clamps the residual it adds, so no Hardtanh pass runs; with DScR's 2 x 2 average-pool residual (eq. 8) on
    an even-sized input it also pools the clamped residual itself (``residual_pool=2``), so neither the clamp
    nor the pool (nor XNNPACK's layout changes around the pool) runs. ``shortcut`` is the block residual of
    eq. 11 when this module ends a block (:class:`FusedBlock`)."""

    def __init__(self, lcr):
        super().__init__()
        self.pre_act, self.residual, self.conv = lcr.pre_act, lcr.branch.residual, lcr.branch.conv
        self.conv.set_post(lcr.bn)
        self._fuse_clamp()

    def _fuse_clamp(self):
        hardtanh = _is_hardtanh(self.pre_act)
        self.clamp_in_op = hardtanh and type(self.residual) is nn.Identity
        self.pool_in_op = hardtanh and type(self.residual) is EvenAvgPool and self.conv.kind == "conv"

    def forward(self, x, shortcut=None):
        if self.clamp_in_op:
            return self.conv(x, x, clamp_residual=True, shortcut=shortcut)
        if self.pool_in_op and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:  # static shapes: decided at export
            return self.conv(x, x, clamp_residual=True, residual_pool=2, shortcut=shortcut)
        a_f = self.pre_act(x)
        return self.conv(a_f, self.residual(a_f), shortcut=shortcut)


def stacked_branches(convs: list[PackedBinaryLayer], post_bn: nn.BatchNorm2d) -> PackedBinaryLayer:
    """The k packed branch convs of a FUR / FDR as one layer: weights, scales, biases and RPReLUs stacked branch
    by branch, the module's BN as the post-affine. A FUR runs it as one C -> kC conv; an FDR with
    ``branches = k``."""
    first = convs[0]
    stacked = PackedBinaryLayer(first.kind, torch.cat([c.weight for c in convs]), torch.cat([c.scale for c in convs]),
                                torch.cat([c.bias for c in convs]), first.in_channels, first.kernel_size,
                                first.stride, first.padding)
    stacked.register_buffer("rprelu", torch.cat([c.rprelu for c in convs], dim=1).contiguous())
    stacked.folded = list(first.folded)
    stacked.set_post(post_bn)
    return stacked


class FusedFUR(FusedLCR):
    """FUR / DSaR (eq. 9) as one op: the k C -> C branches read the same a_f, so they are one C -> kC conv
    whose output channel i C + c adds residual channel c; the BN after the concat goes in the epilogue."""

    def __init__(self, fur):
        nn.Module.__init__(self)
        self.pre_act, self.residual = fur.pre_act, fur.branches[0].residual
        self.conv = stacked_branches([b.conv for b in fur.branches], fur.bn)
        self._fuse_clamp()


class FusedFDR(nn.Module):
    """FDR (eq. 10) as one op with k branches (``binary_conv2d(..., branches=k)``): branch i is the C -> C conv
    on chunk c_i, out = b_0, then out = out + b_i with b_i = RPReLU_i(bconv_i(c_i)) + c_i in eager's order,
    then the BN. With eq. 3's Hardtanh the op reads x itself and clamps the residual chunks: no Hardtanh pass,
    no split copy, no separate add, and no partial sum written out between branches."""

    def __init__(self, fdr):
        super().__init__()
        self.pre_act = fdr.pre_act
        self.conv = stacked_branches([b.conv for b in fdr.branches], fdr.bn)
        self.conv.branches = fdr.k
        self.clamp_in_op = _is_hardtanh(self.pre_act)

    def forward(self, x):
        c = self.conv.in_channels
        if self.clamp_in_op:
            return self.conv(x, x, residual_channels=c, clamp_residual=True)
        a_f = self.pre_act(x)
        return self.conv(a_f, a_f, residual_channels=c)


class FusedBlock(nn.Module):
    """A BiDRB (eq. 11) whose last LCR op also adds the block residual BR(x) in its epilogue."""

    def __init__(self, block):
        super().__init__()
        self.head = nn.Sequential(*list(block.chain)[:-1])
        self.last, self.block_residual = block.chain[-1], block.block_residual

    def forward(self, x):
        shortcut = self.block_residual(x)
        return self.last(self.head(x), shortcut=shortcut)


def _fusable_lcr(module: nn.Module) -> bool:
    from bidrn.nn.lcr import FDR, FUR, BaseLCR

    if not isinstance(module, BaseLCR | FUR | FDR) or type(module.bn) is not nn.BatchNorm2d:
        return False
    branches = [module.branch] if isinstance(module, BaseLCR) else list(module.branches)
    if not all(isinstance(b.conv, PackedBinaryLayer) and b.conv.rprelu is not None and type(b.act) is nn.Identity
               for b in branches):
        return False
    if isinstance(module, FUR):  # one residual for all branches, and a merged conv needs equal shapes
        return len({type(b.residual) for b in branches}) == 1
    if isinstance(module, FDR):  # one multi-branch op: 1x1 convs without padding (the kernel's FDR case)
        return all(type(b.residual) is nn.Identity and b.conv.kernel_size == [1, 1] and b.conv.padding == [0, 0]
                   and b.conv.stride == [1, 1] for b in branches)
    return True


def _fuse_lcr_modules(model: nn.Module, stats: "ConversionStats") -> None:
    from bidrn.models.resnet import _BiDRB
    from bidrn.nn.lcr import FDR, FUR

    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _fusable_lcr(child):
                fused = FusedFDR(child) if isinstance(child, FDR) else FusedFUR(child) if isinstance(
                    child, FUR) else FusedLCR(child)
                setattr(parent, child_name, fused)
                stats.fused_lcr += 1
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if (isinstance(child, _BiDRB) and child.block_residual is not None
                    and isinstance(child.chain[-1], FusedLCR)):
                setattr(parent, child_name, FusedBlock(child))
                stats.fused_block_residuals += 1


def _is_bn(m: nn.Module) -> bool:
    return type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) and m.track_running_stats


@dataclass
class ConversionStats:
    binary_layers: int = 0
    folded_bn: int = 0
    folded_activation: int = 0
    packed_links: int = 0  # layers emitting packed signs straight into the next binary layer
    fused_lcr: int = 0  # LCR modules run with their residual add and BN in the binary op's epilogue
    fused_block_residuals: int = 0  # BiDRB block residual adds (eq. 11) run in the last op's epilogue
    phased_deconvs: int = 0  # full-precision transposed convs run as one conv per output phase (deconv.py)
    phase_folded_bn: int = 0  # BNs (with a ReLU after them) folded into those phase convs (deconv.py)
    space_to_depth_convs: int = 0  # int8 stems run on the 2 x 2 pixel phases (stems.py)
    subsampled_residuals: int = 0  # strided block-residual convs fed by bidrn::subsample (SubsampledPointwise)
    int8_pointwise_convs: int = 0  # 1 x 1 convs (block residuals, heads) run as bidrn::int8_pointwise
    int8_deconvs: int = 0  # phase-decomposed deconvs run as bidrn::int8_conv_transpose2d (Int8ConvTranspose)
    int8_stems: int = 0  # stems (conv, BN, max pool) run as bidrn::int8_conv2d (Int8Stem)
    shared_shortcuts: int = 0  # block outputs written over their shortcut (share_shortcut_storage, at lowering)
    binary_weight_bytes: int = 0


def _fold_sequential(seq: nn.Sequential, stats: ConversionStats) -> None:
    """Within a Sequential: fold [BN] [ReLU/PReLU/RPReLU] after each packed layer into it; pass packed signs
    when the next non-identity module is another binary layer (nothing else reads a Sequential's inner output)."""
    children = list(seq.named_children())
    previous: PackedBinaryLayer | None = None
    for i, (name, child) in enumerate(children):
        if isinstance(child, PackedBinaryLayer):
            if previous is not None and child.kind != "linear":
                previous.output = ops.Output.PACKED
                stats.packed_links += 1
            previous = child
            continue
        if type(child) is nn.Identity:
            continue
        if previous is not None and _is_bn(child) and previous.rprelu is None and "bn" not in previous.folded:
            fold_batch_norm(previous, child)
            seq[i] = nn.Identity()
            stats.folded_bn += 1
            continue
        if previous is not None and fold_activation(previous, child):
            seq[i] = nn.Identity()
            stats.folded_activation += 1
            continue
        previous = None


def _replace_modules(model: nn.Module, stats: ConversionStats) -> None:
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, BinaryLayer):
                packed = pack_layer(full, child)
                stats.binary_layers += 1
                stats.binary_weight_bytes += packed.weight.numel() * 8
                setattr(module, child_name, packed)


def convert_binary_layers(model: nn.Module, fuse_lcr: bool = True) -> ConversionStats:
    """In place (on an eval-mode model): binary layers -> PackedBinaryLayer, epilogues folded where exact;
    with ``fuse_lcr`` whole LCR modules become one op (or a chain of ops for FDR) each."""
    from bidrn.nn.lcr import FDR, FUR, BaseLCR, PlainBinaryConv, _ResidualBranch

    if any(m.training for m in model.modules()):
        raise ValueError("convert an eval-mode model (BN running statistics): call model.eval() first")
    stats = ConversionStats()
    _replace_modules(model, stats)
    for name, module in model.named_modules():
        if isinstance(module, _ResidualBranch) and isinstance(module.conv, PackedBinaryLayer):
            # RPReLU(bconv(a_f)) + residual(a_f): the RPReLU folds; the LCR's BN sits after the add and does not.
            if fold_activation(module.conv, module.act):
                module.act = nn.Identity()
                stats.folded_activation += 1
            if type(module.residual) is nn.AvgPool2d and module.residual.kernel_size == 2:
                module.residual = EvenAvgPool(module.residual)
        elif isinstance(module, PlainBinaryConv) and isinstance(module.conv, PackedBinaryLayer):
            fold_batch_norm(module.conv, module.bn)
            module.bn = nn.Identity()
            stats.folded_bn += 1
        elif isinstance(module, nn.Sequential):
            _fold_sequential(module, stats)
    if fuse_lcr:
        _fuse_lcr_modules(model, stats)
    for module in model.modules():
        if isinstance(module, BaseLCR | FUR | FDR) and type(module.bn) is nn.BatchNorm2d:
            module.bn = ChannelAffine(module.bn)
    return stats


# ---------------------------------------------------------------- export

@dataclass
class ExportReport:
    model: str
    path: str
    bytes: int
    int8: bool
    input_shape: list[int]
    outputs: list[str]  # program outputs in order (the forward's dict keys)
    output_shapes: dict[str, list[int]]
    body_model: bool
    export_seconds: float
    stats: dict = field(default_factory=dict)
    ops_outside_xnnpack: dict[str, int] = field(default_factory=dict)
    reference: dict | None = None  # the full-precision twin's .pte: path, bytes, ratio
    ops_version: int = ops.OPS_VERSION  # the bidrn:: op schemas it was exported for
    target: str = "host"  # the CPU its int8 ops were chosen for (TARGETS)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        mb = self.bytes / 1e6
        lines = [f"{self.model} -> {self.path}: {self.bytes} bytes ({mb:.2f} MB), "
                 f"{'int8' if self.int8 else 'fp32'} XNNPACK + {self.stats.get('binary_layers', 0)} bidrn:: layers, "
                 f"exported in {self.export_seconds:.1f} s"]
        if self.reference:
            lines.append(f"full-precision twin {self.reference['model']}: {self.reference['bytes']} bytes; "
                         f"ratio {self.reference['ratio']:.3f} ({100 * self.reference['ratio']:.1f}%)")
        s = self.stats
        lines.append(f"folded: {s.get('folded_bn', 0)} BN, {s.get('folded_activation', 0)} activations; "
                     f"{s.get('packed_links', 0)} packed-sign links; {s.get('shared_shortcuts', 0)} block outputs "
                     f"over their shortcut; binary weights {s.get('binary_weight_bytes', 0) / 1e6:.2f} MB")
        if self.int8:
            lines.append(f"int8 1x1 convs as bidrn::int8_pointwise: {s.get('int8_pointwise_convs', 0)}; deconvs as "
                         f"bidrn::int8_conv_transpose2d: {s.get('int8_deconvs', 0)}; stems as bidrn::int8_conv2d: "
                         f"{s.get('int8_stems', 0)} (the rest of the int8 convs and linears on XNNPACK; chosen for "
                         f"the {self.target} CPU)")
        if self.ops_outside_xnnpack:
            lines.append("outside XNNPACK: " + ", ".join(f"{k} x{v}" for k, v in
                                                         sorted(self.ops_outside_xnnpack.items())))
        return "\n".join(lines)


def load_model(name_or_path: str | nn.Module, model_name: str | None = None) -> nn.Module:
    """A registered name (random init, seed 0), a run folder, a .safetensors or a checkpoint.pt."""
    if isinstance(name_or_path, nn.Module):
        return name_or_path
    from bidrn.models.registry import REGISTRY, create_model

    if str(name_or_path) in REGISTRY:
        torch.manual_seed(0)
        return create_model(str(name_or_path))
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"{name_or_path!r} is neither a registered model name ({', '.join(REGISTRY)}) "
                                "nor a run folder / model.safetensors / checkpoint.pt")
    from bidrn.train.cli import load_trained

    return load_trained(path, model_name)


def full_precision_twin(cfg):
    """The full-precision Hand4Whole of the same architecture (widths, blocks, input sizes)."""
    from dataclasses import replace

    enc = {part: replace(getattr(cfg, part), method="fp", prune=0.0) for part in ("body", "hand", "face")}
    name = "hand4whole" + ("-tiny" if cfg.name.endswith("-tiny") else "")
    return replace(cfg, name=name, boxnet="fp", paper=None, description="full-precision twin", **enc)


def example_image(cfg, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """B x 3 x H x W in [0, 1]: a deterministic input for export, calibration and checks."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *cfg.input_size, generator=g)


# What nn.Conv2d (a phase-decomposed deconv's convs too), nn.ConvTranspose2d and nn.Linear export to.
INT8_OPS = (torch.ops.aten.conv2d.default, torch.ops.aten.conv_transpose2d.input, torch.ops.aten.linear.default)


# Modules whose linears stay float32 under --int8: the SMPL-X layer (its skinning is a linear whose weights are
# the 0..1 blend weights; int8 would move vertices by millimetres for no measurable time).
FLOAT_MODULES = ("SMPLXLayer",)


def in_float_module(node: torch.fx.Node) -> bool:
    """Whether an exported graph node runs inside one of the FLOAT_MODULES (from its module stack)."""
    for _, kind in (node.meta.get("nn_module_stack") or {}).values():
        type_name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", str(kind))
        if type_name.split(".")[-1] in FLOAT_MODULES:
            return True
    return False


def _quantize_int8(program: torch.export.ExportedProgram, calibration: list[torch.Tensor]) -> nn.Module:
    """PT2E static int8 (per-channel weights) on the network's full-precision convs, transposed convs and
    linears (where the MACs are: stems, block residuals, heads, BoxNet deconv3); the bidrn:: ops are other
    operators and stay 1-bit, and the SMPL-X layer (matmuls only) stays float32.

    The quantizer is configured per operator (:data:`INT8_OPS`), not per module type: XNNPACKQuantizer's conv
    annotator applies a module-type filter to every node of the pattern, the weight and bias included, and in
    ``program.module()`` those are get_attr nodes without an ``nn_module_stack``, so ``set_module_type`` matched
    no conv at all (its linear annotator checks the linear node alone, hence only the head Linears were int8).
    A BN right after a conv is folded into it by ``prepare_pt2e``; the others become affines first
    (:func:`batch_norms_to_affine`). Annotating every op (set_global) would also quantize the elementwise ops,
    and XNNPACK's ChannelsLastTaggedReshapePass then fails on this graph ("KeyError: 'val'")."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer, config = XNNPACKQuantizer(), get_symmetric_quantization_config(is_per_channel=True)
    for op in INT8_OPS:
        quantizer.set_operator_type(op, config)
    # Applied to every node an annotator looks at; weights (get_attr nodes, no module stack) pass it.
    quantizer.filter_fn = lambda node: not in_float_module(node)
    graph_module = program.module()
    fold_conv_batch_norms(graph_module)
    batch_norms_to_affine(graph_module)
    prepared = prepare_pt2e(graph_module, quantizer)
    for img in calibration:
        prepared(img)
    return convert_pt2e(prepared)


def _attr_tensor(graph_module: torch.fx.GraphModule):
    """node -> the parameter or buffer a get_attr node reads (None for None)."""
    return lambda node: None if node is None else operator.attrgetter(node.target)(graph_module).detach()


def _eval_batch_norms(graph: torch.fx.Graph):
    """(node, (input, weight, bias, running mean, running var, eps)) of each inference-mode aten.batch_norm."""
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.batch_norm.default:
            x, weight, bias, mean, var, training, _, eps = node.args[:8]
            if not training:
                yield node, (x, weight, bias, mean, var, eps)


def fold_conv_batch_norms(graph_module: torch.fx.GraphModule) -> int:
    """Fold each eval BatchNorm that directly follows a conv (its only user) into new weight and bias buffers,
    in place; returns how many.

    ``prepare_pt2e`` would fold them too, but it writes the folded weight back under the conv's own weight
    name: where two convs share a weight (an encoder run one image at a time, :class:`ImageAtATime`) the second
    fold scales the already-folded weight again. Here each distinct (conv weight, bias, BN) combination is
    folded once into a buffer of its own, which every conv using that combination reads."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights
    from torchao.quantization.pt2e.utils import _is_conv_or_conv_transpose_node, _is_conv_transpose_node

    graph, count, folded = graph_module.graph, 0, {}
    tensor = _attr_tensor(graph_module)
    for node, (conv, weight, bias, mean, var, eps) in _eval_batch_norms(graph):
        if not _is_conv_or_conv_transpose_node(conv) or len(conv.users) != 1:
            continue
        conv_w, conv_b = conv.args[1], conv.args[2] if len(conv.args) > 2 else None
        parts = (conv_w, conv_b, weight, bias, mean, var)
        if any(p is not None and (not isinstance(p, torch.fx.Node) or p.op != "get_attr") for p in parts) \
                or conv_w is None:
            continue
        key = tuple(None if p is None else p.target for p in parts) + (eps,)
        if key not in folded:
            w, b = fuse_conv_bn_weights(tensor(conv_w), tensor(conv_b), tensor(mean), tensor(var), eps,
                                        tensor(weight), tensor(bias), transpose=_is_conv_transpose_node(conv))
            name = f"_bn_folded_{len(folded)}"
            graph_module.register_buffer(f"{name}_weight", w.detach())
            graph_module.register_buffer(f"{name}_bias", b.detach())
            folded[key] = name
        name = folded[key]
        with graph.inserting_before(conv):
            new_w, new_b = graph.get_attr(f"{name}_weight"), graph.get_attr(f"{name}_bias")
        if "val" in conv.meta:  # the quantizer's annotators read the weight's shape from it
            fake = conv.meta["val"].fake_mode
            for attr in (new_w, new_b):
                attr.meta["val"] = fake.from_tensor(operator.attrgetter(attr.target)(graph_module), static_shapes=True)
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1], args[2] = new_w, new_b
        conv.args = tuple(args)
        node.replace_all_uses_with(conv)
        graph.erase_node(node)
        count += 1
    graph.eliminate_dead_code()
    graph_module.recompile()
    return count


def batch_norms_to_affine(graph_module: torch.fx.GraphModule) -> int:
    """Rewrite each eval BatchNorm that does not directly follow a conv as x * s + t (:class:`ChannelAffine`'s
    arithmetic), in place; returns how many.

    ``prepare_pt2e`` folds a BN into the conv it follows and leaves the others (BoxNet's input norm; the BN
    after a phase-decomposed deconv is folded into its phase convs before this, by
    :func:`mobile_export.deconv.fold_into_phases`); one left makes ``convert_pt2e`` run its QAT conv-BN folding, which
    traces 96 patterns to find nothing (20 s of bidrn-tiny's int8 export), and XNNPACK would run it as an fp32
    1 x 1 depthwise conv in NHWC."""
    from torchao.quantization.pt2e.utils import _is_conv_or_conv_transpose_node  # what prepare_pt2e folds into

    graph, count = graph_module.graph, 0
    tensor = _attr_tensor(graph_module)
    for node, (x, weight, bias, mean, var, eps) in _eval_batch_norms(graph):
        if _is_conv_or_conv_transpose_node(x):
            continue
        s, t = affine_of_batch_norm(*map(tensor, (weight, bias, mean, var)), eps)
        shape = [-1 if d == 1 else 1 for d in range(x.meta["val"].dim())]
        with graph.inserting_before(node):
            attrs = []
            for suffix, value in (("scale", s), ("shift", t)):
                graph_module.register_buffer(f"{node.name}_{suffix}", value.float().reshape(shape))
                attrs.append(graph.get_attr(f"{node.name}_{suffix}"))
            scaled = graph.call_function(torch.ops.aten.mul.Tensor, (x, attrs[0]))
            shifted = graph.call_function(torch.ops.aten.add.Tensor, (scaled, attrs[1]))
        for new in (scaled, shifted):
            new.meta = dict(node.meta)
        node.replace_all_uses_with(shifted)
        graph.erase_node(node)
        count += 1
    graph_module.recompile()
    return count


def _ops_outside_delegate(edge_program) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in edge_program.graph.nodes:
        if node.op == "call_function" and "executorch_call_delegate" not in str(node.target) \
                and node.target.__name__ != "getitem":
            name = str(node.target).split(".")[1] if "." in str(node.target) else str(node.target)
            counts[name] = counts.get(name, 0) + 1
    return counts


def _export_program(module: nn.Module, x: torch.Tensor | tuple, name: str, log) -> torch.export.ExportedProgram:
    log("torch.export")
    try:
        with torch.no_grad():
            return torch.export.export(module, x if isinstance(x, tuple) else (x,), strict=False)
    except Exception as exc:  # an exporter traceback helps nobody who runs `bidrn export`
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.export of {name} failed: {first} (run export_pte from Python for the full "
                          "chain)") from exc


def drop_unit_reductions(program: torch.export.ExportedProgram) -> int:
    """Rewrite sums over dims of size 1 as reshapes (exact), in place; returns how many.

    RoIAlign sums its sampling grid away (K x C x oh x G x ow x G -> K x C x oh x ow); at the export grid
    G = 1 the sum is a copy, but ExecuTorch's portable sum walks it element by element (5.7 ms of bidrn-tiny's
    17 ms before this rewrite)."""
    graph, count = program.graph_module.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.sum.dim_IntList or node.kwargs:
            continue
        source, dims = node.args[0], node.args[1]
        shape = source.meta["val"].shape
        if dims and all(shape[d] == 1 for d in dims):
            with graph.inserting_before(node):
                view = graph.call_function(torch.ops.aten.reshape.default, (source, list(node.meta["val"].shape)))
            view.meta = dict(node.meta)
            node.replace_all_uses_with(view)
            graph.erase_node(node)
            count += 1
    program.graph_module.recompile()
    return count


def drop_constant_copies(program: torch.export.ExportedProgram) -> int:
    """Let functional ops read the program's lifted tensor constants directly, in place; returns how many copies
    went.

    torch.export guards a tensor the model builds from outside data (e.g. the soft-argmax's cell coordinates,
    ``bidrn.models.ops._grid_coords``) with a ``lift_fresh_copy``; a matrix product then reads a copy, which
    XNNPACK's fully connected layer (static weights only) refuses, and the product ran as ExecuTorch's portable
    ``mm``. Only copies whose every user is a functional op go (nothing can write the constant then)."""
    kinds = torch.export.graph_signature.InputKind
    signature = program.graph_signature
    mutated = set(signature.buffers_to_mutate.values())
    # (After the int8 flow's second export such a constant comes back as a buffer the program never writes.)
    constants = {spec.arg.name for spec in signature.input_specs
                 if spec.kind == kinds.CONSTANT_TENSOR or (spec.kind == kinds.BUFFER and spec.target not in mutated)}
    graph, count = program.graph_module.graph, 0
    for node in list(graph.nodes):
        if (node.op != "call_function" or node.target is not torch.ops.aten.lift_fresh_copy.default
                or node.args[0].op != "placeholder" or node.args[0].name not in constants):
            continue
        if all(isinstance(user.target, torch._ops.OpOverload) and not user.target._schema.is_mutable
               for user in node.users):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            count += 1
    program.graph_module.recompile()
    return count


def depth_first_order(graph_module: torch.fx.GraphModule) -> None:
    """Reorder the graph's operators depth first, in place: after each op, the ops it has just made ready
    run next (earliest in the old order first), so an independent chain runs to its end before the next
    starts.

    The XNNPACK partitioner re-sorts the graph breadth first when it fuses partitions: an encoder run one
    image at a time (:class:`ImageAtATime`) whose two stems land in one delegate then ran its two chains
    interleaved, layer by layer, with both images' tensors live, which is what running one image at a time
    is there to avoid. Placeholders keep their place at the front, the output its place at the end."""
    graph = graph_module.graph
    nodes = list(graph.nodes)
    movable = [n for n in nodes if n.op not in ("placeholder", "get_attr", "output")]
    position = {n: i for i, n in enumerate(nodes)}
    pending = {n: len({m for m in n.all_input_nodes if m.op not in ("placeholder", "get_attr")}) for n in movable}
    stack = sorted((n for n in movable if pending[n] == 0), key=position.get, reverse=True)
    order = []
    while stack:
        node = stack.pop()
        order.append(node)
        ready = []
        for user in node.users:
            if user in pending:
                pending[user] -= 1
                if pending[user] == 0:
                    ready.append(user)
        stack.extend(sorted(ready, key=position.get, reverse=True))
    if len(order) != len(movable):  # a cycle cannot happen in a valid graph; keep the order it has
        return
    output = graph.output_node()
    for node in order:
        output.prepend(node)
    graph.lint()
    graph_module.recompile()


# Ops whose output is planned into their input's storage by ExecuTorch (views), by edge-dialect name.
_VIEW_OPS = ("aten.view_copy", "aten.permute_copy", "aten.slice_copy", "aten.select_copy", "aten.expand_copy",
             "aten.squeeze_copy", "aten.unsqueeze_copy", "aten.alias_copy", "aten.t_copy", "aten.transpose_copy")


def _is_view(node: torch.fx.Node) -> bool:
    return any(v in str(node.target) for v in _VIEW_OPS)


def _op_arg(node: torch.fx.Node, name: str):
    """Argument `name` of a call by the op's schema: positional, keyword, or the schema's default."""
    schema = node.target._schema
    for i, arg in enumerate(schema.arguments):
        if arg.name == name:
            if i < len(node.args):
                return node.args[i]
            return node.kwargs.get(name, arg.default_value if arg.has_default_value() else None)
    raise KeyError(f"{schema.name} has no argument {name!r}")


def share_shortcut_storage(graph_module: torch.fx.GraphModule) -> int:
    """Let each block's last binary conv write its output over its shortcut where nothing reads the shortcut
    afterwards (eq. 11's y = F(x) + BR(x), computed in place of BR(x)); returns how many, in place.

    The FUR op of a BiDRN block reads its shortcut (the block input x, or the block residual's output) once
    per output element, right before it writes that element, and nothing reads the shortcut after the op
    (the block's FDR read x before). Writing y into x's memory then saves the write stream its
    read-for-ownership: a 64 -> 256 FUR moves 26 MB at batch 2 and 64 x 64, 8 MB of it that read
    (docs/export.md, item 9). ExecuTorch's memory planner shares the storage when the op node carries
    ``_share_alloc_with_arg_idx`` (the output's storage is that positional argument's, its lifetime extended
    to the output's). Taken only where it is safe for every kernel path: bidrn::binary_conv2d with one
    branch and a float output of the shortcut's shape and dtype; the shortcut a positional argument made by
    an operator (not an input, constant or view), read by no later node, viewed by none, not the graph's
    output, and not also the op's input, residual or partial. Every kernel reads a shortcut element only to
    compute the output element at the same place (selftest.cpp runs such calls on every path, NEON under
    qemu). One branch only: the scalar and NEON FDR paths sum the branches in the output buffer before the
    shortcut is added, so an FDR op with its shortcut there would read its own partial sums."""
    from executorch.exir.dialects._ops import ops as exir_ops

    target = exir_ops.edge.bidrn.binary_conv2d.default
    shortcut_index = [a.name for a in target._schema.arguments].index("shortcut")
    order = {n: i for i, n in enumerate(graph_module.graph.nodes)}
    count = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target != target or len(node.args) <= shortcut_index:
            continue
        shortcut = node.args[shortcut_index]
        if not isinstance(shortcut, torch.fx.Node) or shortcut.op != "call_function" or _is_view(shortcut):
            continue
        if _op_arg(node, "output") != 0 or _op_arg(node, "branches") != 1:
            continue
        if any(_op_arg(node, name) is shortcut for name in ("x", "residual", "partial")):
            continue
        val, out_val = shortcut.meta.get("val"), node.meta.get("val")
        if not isinstance(val, torch.Tensor) or not isinstance(out_val, torch.Tensor) \
                or val.dtype != torch.float32 or out_val.dtype != torch.float32 or tuple(val.shape) != tuple(out_val.shape):
            continue
        # Read later, returned, or viewed (a view lives in the shortcut's storage and may be read later).
        if any(user.op == "output" or order[user] > order[node] or (user is not node and _is_view(user))
               for user in shortcut.users):
            continue
        node.meta["_share_alloc_with_arg_idx"] = shortcut_index
        count += 1
    return count


def save_program(program: torch.export.ExportedProgram | nn.Module, x: torch.Tensor | tuple,
                 out: str | Path, stats: ConversionStats | None = None) -> dict[str, int]:
    """XNNPACK partition -> ExecuTorch program -> ``out``; returns the ops left outside XNNPACK.
    A module is exported first with example input(s) ``x``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if isinstance(program, nn.Module):
        program = _export_program(program, x, type(program).__name__, lambda msg: None)
    drop_unit_reductions(program)
    drop_constant_copies(program)
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    depth_first_order(edge.exported_program().graph_module)
    shared = share_shortcut_storage(edge.exported_program().graph_module)
    if stats is not None:
        stats.shared_shortcuts = shared
    outside = _ops_outside_delegate(edge.exported_program().graph_module)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(edge.to_executorch().buffer)
    return outside


class ImageAtATime(nn.Module):
    """Runs an encoder on one image of its batch at a time (the hand encoder sees both hands of each person).

    At batch 2 the hand encoder's first-stage tensors are 8 MB each (256 channels x 64 x 64 x 2 images), and a
    block's ops pass about 20 MB between them: more than this machine's last-level cache holds, so every op
    streams from DRAM. One image at a time halves the working set, which stays cached, and halves the peak
    activation memory (a phone's budget). The results are the same up to float rounding: every layer treats
    images independently (eval-mode BatchNorm); in an int8 export each image's activations get their own
    calibrated scales. Exported graphs unroll the loop (the batch is static).

    Off by default (``export_pte(..., image_at_a_time=True)``): measured side by side on the int8 BiDRN it
    changed nothing end to end (1.00-1.01x; docs/export.md) while the hand encoder's first ops got faster,
    and it raised the peak memory from 73 to 80 MB (both images' stem outputs are live together)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x):
        if x.shape[0] == 1:
            return self.encoder(x)
        return torch.cat([self.encoder(x[i:i + 1]) for i in range(x.shape[0])])


ENCODERS = ("body_backbone", "hand_backbone", "face_backbone")


class SubsampledPointwise(nn.Module):
    """A 1 x 1 strided conv without padding as ``bidrn::subsample`` (every s-th pixel) and then the conv at
    stride 1: the same numbers, since output pixel (i, j) reads input pixel (s i, s j) alone.

    In a BiDRN block the block residual's conv (eq. 11's BR at a stage's first block) reads the block input
    that a bidrn:: op wrote in NCHW float32; XNNPACK's conv reads only every s-th pixel of it too, but the
    delegate's int8 convert and NHWC transpose in front of it went over all of them (1.2 ms in all)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.stride = tuple(conv.stride)
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
        self.conv.load_state_dict(conv.state_dict())
        self.conv.train(conv.training)

    def forward(self, x):
        return self.conv(ops.subsample(x, self.stride))


def subsample_block_residuals(model: nn.Module) -> int:
    """In each fused BiDRN block, a strided 1 x 1 full-precision block-residual conv becomes
    :class:`SubsampledPointwise`; returns how many. Networks without bidrn:: ops (Hand4Whole) keep their
    convs: XNNPACK runs them whole, with no layout change in front."""
    count = 0
    for block in model.modules():
        if not isinstance(block, FusedBlock) or not isinstance(block.block_residual, nn.Sequential):
            continue
        for i, conv in enumerate(block.block_residual):
            if type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride != (1, 1) \
                    and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1:
                block.block_residual[i] = SubsampledPointwise(conv)
                count += 1
    return count


def _observer_of(spec) -> nn.Module:
    """The observer a PT2E QuantizationSpec describes, made as prepare_pt2e makes it (dtype, range and scheme
    from the spec, the rest from its constructor's partial arguments)."""
    kwargs = dict(dtype=spec.dtype, quant_min=spec.quant_min, quant_max=spec.quant_max, qscheme=spec.qscheme)
    if spec.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine):
        kwargs["ch_axis"] = spec.ch_axis
    return spec.observer_or_fake_quant_ctr(**kwargs)


class _Int8Calibrated(nn.Module):
    """What :class:`Int8Pointwise` and :class:`Int8ConvTranspose` share: the float weight rows and bias until
    :meth:`freeze`, the XNNPACK quantizer's own observers (the config :func:`_quantize_int8` gives every
    other conv): a HistogramObserver on the input over the calibration images, per-channel symmetric weights
    in [-127, 127], quantized by the ``quantize_per_channel`` that ``convert_pt2e`` uses. ``groups`` row
    blocks of the weight (a deconv's phases) share each output channel's scale."""

    def _setup(self, weight_rows: torch.Tensor, bias: torch.Tensor, groups: int = 1) -> None:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config

        self.register_buffer("weight_float", weight_rows.detach().clone())
        self.register_buffer("bias", bias.detach().clone().float())
        self._groups = groups
        config = get_symmetric_quantization_config(is_per_channel=True)
        self._observer = _observer_of(config.input_activation)
        self._weight_observer = _observer_of(config.weight)
        self._weight_spec = config.weight
        self.frozen = False

    @torch.no_grad()
    def freeze(self) -> None:
        """Quantization parameters from what the observer saw; then the module runs the op and holds only the
        int8 weights (what travels into the program)."""
        if self._observer.min_val.numel() == 0 or not torch.isfinite(self._observer.min_val).all():
            raise ExportError(f"{type(self).__name__}.freeze: no calibration input was observed (run the model on "
                              "the calibration images first)")
        x_scale, x_zp = self._observer.calculate_qparams()
        g, o = self._groups, self.bias.shape[0]
        self._weight_observer(self.weight_float.view(g, o, -1).permute(1, 0, 2).reshape(o, -1))
        w_scale, w_zp = self._weight_observer.calculate_qparams()
        spec = self._weight_spec
        weight = torch.ops.quantized_decomposed.quantize_per_channel(
            self.weight_float, w_scale.repeat(g), w_zp.repeat(g), 0, spec.quant_min, spec.quant_max, spec.dtype)
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("weight_sum", weight.to(torch.int32).sum(1, dtype=torch.int32))
        self.register_buffer("scale", (x_scale.float() * w_scale.float()).contiguous())
        self.input_scale_inv = float(torch.tensor(1.0, dtype=torch.float32) / x_scale.float())
        self.input_zero_point = int(x_zp)
        del self.weight_float, self._observer, self._weight_observer, self._weight_spec
        self._drop_float_parts()
        self.frozen = True

    def _drop_float_parts(self) -> None:
        pass


class Int8Pointwise(_Int8Calibrated):
    """A full-precision 1 x 1 conv (+ BN, + ReLU) as ``bidrn::int8_pointwise`` under ``--int8``: a block
    residual of eq. 11 (1 x 1 conv + BN at a stage's first block, full precision in the paper) or a head's
    1 x 1 conv. int8 per-tensor activations and int8 per-channel weights, as XNNPACK's int8 conv ran it, with
    the float output straight out of the op (no int8 output requantization) and none of the delegate's
    quantize, NHWC transpose, dequantize and NCHW transpose around the conv. Until :meth:`freeze` the module
    runs the float conv and observes its input."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, stride: tuple[int, int] | None = None,
                 relu: bool = False):
        super().__init__()
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        if conv.kernel_size != (1, 1) or conv.padding != (0, 0) or conv.groups != 1 or conv.dilation != (1, 1):
            raise UnsupportedLayerError(f"Int8Pointwise takes a 1 x 1 conv without padding, groups or dilation, "
                                        f"got {conv}")
        w, b = conv.weight.detach(), conv.bias.detach() if conv.bias is not None else None
        if bn is not None:
            w, b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        elif b is None:
            b = torch.zeros(w.shape[0])
        self._setup(w.flatten(1), b)
        self.stride = tuple(stride or conv.stride)
        self.relu = bool(relu)

    def forward(self, x):
        if not self.frozen:
            xs = x[:, :, ::self.stride[0], ::self.stride[1]]
            self._observer(xs.detach())
            y = F.conv2d(xs, self.weight_float[:, :, None, None], self.bias)
            return F.relu(y) if self.relu else y
        return torch.ops.bidrn.int8_pointwise(x, self.weight, self.weight_sum, self.scale, self.bias,
                                              self.input_scale_inv, self.input_zero_point, list(self.stride),
                                              self.relu)


class Int8ConvTranspose(_Int8Calibrated):
    """A phase-decomposed full-precision transposed conv (deconv.PhasedConvTranspose2d, its BN and ReLU
    folded in: BoxNet's deconv3) as ``bidrn::int8_conv_transpose2d`` under ``--int8``: the phase convs'
    int8 GEMMs in one op that writes the interleaved float output itself, instead of four XNNPACK int8
    convs, their layout changes and the stack-and-transpose interleave. Quantized as :class:`Int8Pointwise`,
    one weight scale per output channel over all its phases."""

    def __init__(self, phased: PhasedConvTranspose2d):
        super().__init__()
        if phased.activation is not None and type(phased.activation) is not nn.ReLU:
            raise UnsupportedLayerError(f"Int8ConvTranspose takes a ReLU or no activation, got {phased.activation}")
        convs = list(phased.convs)
        self.phased = phased  # runs the float convs until freeze (calibration)
        self.kernel_size, self.stride, self.padding = phased.kernel_size, phased.stride, phased.padding
        self.relu = phased.activation is not None
        # phases*O x taps*C: phase conv r's weight O x C x th x tw as rows (ty, tx, c) (ops.pack_phase_weights)
        rows = torch.cat([c.weight.detach().permute(0, 2, 3, 1).flatten(1) for c in convs])
        bias = convs[0].bias.detach() if convs[0].bias is not None else torch.zeros(convs[0].out_channels)
        self._setup(rows, bias, groups=len(convs))

    def forward(self, x):
        if not self.frozen:
            self._observer(x.detach())
            return self.phased(x)
        return torch.ops.bidrn.int8_conv_transpose2d(x, self.weight, self.weight_sum, self.scale, self.bias,
                                                     self.input_scale_inv, self.input_zero_point,
                                                     list(self.kernel_size), list(self.stride), list(self.padding),
                                                     self.relu)

    def _drop_float_parts(self) -> None:
        del self.phased


def plain_conv_weight(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, nn.Conv2d]:
    """(weight O x C x kh x kw, bias, the geometry's Conv2d) of a plain ``Conv2d`` or of the
    :class:`~mobile_export.stems.SpaceToDepthConv2d` made from one (its phase weights folded back)."""
    if isinstance(conv, SpaceToDepthConv2d):
        inner = conv.conv
        o, c4, th, tw = inner.weight.shape
        c = c4 // 4
        w = inner.weight.detach().view(o, 2, 2, c, th, tw).permute(0, 3, 4, 1, 5, 2).reshape(o, c, 2 * th, 2 * tw)
        geometry = nn.Conv2d(c, o, (conv.kh, conv.kw), stride=2, padding=(conv.ph, conv.pw), bias=False)
        return w[:, :, :conv.kh, :conv.kw].contiguous(), inner.bias, geometry
    return conv.weight.detach(), conv.bias, conv


def _stem_parts(seq: nn.Module) -> tuple[nn.Module, nn.Module, bool, nn.MaxPool2d] | None:
    """(conv, BN, relu, max pool) when ``seq`` is a ResNet stem bidrn::int8_conv2d can run: an
    ``nn.Sequential`` of a plain conv (or its SpaceToDepthConv2d), an eval BN, an Identity or ReLU and a max
    pool without dilation, ceil mode or indices. Other stems (a baseline's own activation) stay with XNNPACK."""
    if type(seq) is not nn.Sequential or len(seq) != 4:
        return None
    conv, bn, act, pool = seq
    plain = isinstance(conv, SpaceToDepthConv2d) or (
        type(conv) is nn.Conv2d and conv.groups == 1 and tuple(conv.dilation) == (1, 1)
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))
    pool_ok = (type(pool) is nn.MaxPool2d and not pool.ceil_mode and not pool.return_indices
               and pool.dilation in (1, (1, 1)))
    if not plain or not _is_bn(bn) or bn.training or type(act) not in (nn.Identity, nn.ReLU) or not pool_ok:
        return None
    return conv, bn, type(act) is nn.ReLU, pool


class Int8Stem(_Int8Calibrated):
    """A ResNet stem (7 x 7 / 2 conv, BN, optional ReLU, 3 x 3 / 2 max pool) as ``bidrn::int8_conv2d`` under
    ``--int8``: quantized as :class:`Int8Pointwise` (the conv with its BN folded, int8 per-tensor input and
    per-channel weights), the max pool over the float output inside the op. In place of XNNPACK's pad,
    space-to-depth transposes, quantize, NHWC transpose, int8 IGEMM, int8 max pool, dequantize and NCHW
    transpose. Until :meth:`freeze` the module runs the float conv + BN (+ ReLU) + pool and observes its
    input."""

    def __init__(self, conv: nn.Module, bn: nn.BatchNorm2d, relu: bool, pool: nn.MaxPool2d):
        super().__init__()
        from torch.nn.modules.utils import _pair
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        w, b, geometry = plain_conv_weight(conv)
        w, b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        self._setup(w.detach().flatten(1), b.detach())
        self.kernel_size = tuple(w.shape[2:])
        self.stride, self.padding = _pair(geometry.stride), _pair(geometry.padding)
        self.relu = bool(relu)
        self.pool_kernel, self.pool_stride = _pair(pool.kernel_size), _pair(pool.stride or pool.kernel_size)
        self.pool_padding = _pair(pool.padding)

    def forward(self, x):
        if not self.frozen:
            self._observer(x.detach())
            w = self.weight_float.view(self.bias.shape[0], x.shape[1], *self.kernel_size)
            z = F.conv2d(x, w, self.bias, self.stride, self.padding)
            z = F.relu(z) if self.relu else z
            return F.max_pool2d(z, self.pool_kernel, self.pool_stride, self.pool_padding)
        return torch.ops.bidrn.int8_conv2d(x, self.weight, self.weight_sum, self.scale, self.bias,
                                           self.input_scale_inv, self.input_zero_point, list(self.kernel_size),
                                           list(self.stride), list(self.padding), self.relu, list(self.pool_kernel),
                                           list(self.pool_stride), list(self.pool_padding))


# Kernels of bidrn::int8_pointwise that measured at least as fast as XNNPACK's int8 GEMM plus the layout
# changes it saves (docs/kernels.md, "int8 pointwise"); NEON's sdot and widening kernels are the same blocks as
# XNNPACK's, untimed on a phone. On x86 without AMX or AVX-512 VNNI the op's AVX2 kernel is slower than
# XNNPACK's, so there the 1 x 1 convs stay with XNNPACK.
FAST_INT8_POINTWISE = ("amx", "avx512_vnni", "neon_dotprod", "neon")


# What the program is for (``--target``): the binary ops dispatch at run time on any CPU, but which int8 ops
# are ours is decided at export, by the kernel the target CPU runs them on: this machine's ('host'), or an
# Arm phone's ('aarch64': NEON with dotprod, every big core since the Cortex-A75 and all of Apple's).
TARGET_INT8_KERNEL = {"aarch64": "neon_dotprod"}
TARGETS = ("host", *TARGET_INT8_KERNEL)


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    return target


def int8_kernel(target: str = "host") -> str:
    """The kernel ``bidrn::int8_pointwise`` and ``bidrn::int8_conv2d`` run on for ``target`` (:data:`TARGETS`)."""
    if check_target(target) == "host":
        from mobile_export import kernel_library

        return kernel_library.int8_pointwise_kernel()
    return TARGET_INT8_KERNEL[target]


def int8_pointwise_is_fast(target: str = "host") -> bool:
    """Whether the target's kernel for ``bidrn::int8_pointwise`` (:func:`int8_kernel`) is one of
    :data:`FAST_INT8_POINTWISE`: the default of ``--int8-pointwise auto``."""
    return int8_kernel(target) in FAST_INT8_POINTWISE


def _pointwise_conv(m: nn.Module) -> tuple[nn.Conv2d, tuple[int, int] | None] | None:
    """(conv, stride) when ``m`` is a plain 1 x 1 conv (or a SubsampledPointwise around one), else None."""
    conv, stride = (m.conv, m.stride) if isinstance(m, SubsampledPointwise) else (m, None)
    if type(conv) is not nn.Conv2d or conv.kernel_size != (1, 1) or conv.padding != (0, 0) or conv.groups != 1 \
            or conv.dilation != (1, 1) or conv.padding_mode != "zeros":
        return None
    return conv, stride


def count_int8_stems(model: nn.Module) -> int:
    """How many stems of ``model`` run as ``bidrn::int8_conv2d`` (:class:`Int8Stem`)."""
    return sum(isinstance(m, Int8Stem) for m in model.modules())


# Kernels of bidrn::int8_conv2d that measured faster on the stems than XNNPACK's int8 convs with the layout
# changes and the max pool around them (docs/kernels.md, "int8 stems"). Elsewhere the stems stay with XNNPACK.
FAST_INT8_STEM = ("amx",)


def int8_stem_is_fast(target: str = "host") -> bool:
    """Whether the target's kernel for the int8 GEMM of ``bidrn::int8_conv2d`` is one of :data:`FAST_INT8_STEM`:
    then the int8 export runs the stems as that op."""
    return int8_kernel(target) in FAST_INT8_STEM


def quantize_own_int8_ops(model: nn.Module, calibration: list[torch.Tensor], stems: bool = False) -> tuple[int, int]:
    """Every full-precision 1 x 1 conv of the network becomes a calibrated :class:`Int8Pointwise`, with a BN
    (eval) and a ReLU that follow it in an ``nn.Sequential`` folded in: the block residuals of eq. 11 (each
    fused BiDRN block's Sequential(conv, BN)), the heads' Sequential(conv, BN, ReLU) and their bare 1 x 1
    convs (joint heatmaps, BoxNet's centre map). Every phase-decomposed transposed conv (BoxNet's deconv3)
    becomes an :class:`Int8ConvTranspose`. With ``stems``, every ResNet stem (conv, BN, Identity or ReLU,
    max pool: :func:`_stem_parts`) becomes an :class:`Int8Stem` (:func:`count_int8_stems` counts them); else
    the stems stay with XNNPACK. Returns how many 1 x 1 convs and deconvs. The calibration images run through
    the float model once. The SMPL-X layer (FLOAT_MODULES) has no convs."""
    found: list[tuple[nn.Module, str, nn.Module, list[str]]] = []  # parent, child name, module, to blank
    for parent in model.modules():
        if isinstance(parent, (SubsampledPointwise, _Int8Calibrated, PhasedConvTranspose2d)) \
                or type(parent).__name__ in FLOAT_MODULES:
            continue
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            parts = _stem_parts(child) if stems else None
            if parts is not None:
                found.append((parent, name, Int8Stem(*parts), []))
                continue
            if isinstance(child, PhasedConvTranspose2d) and type(child.activation) in (type(None), nn.ReLU):
                found.append((parent, name, Int8ConvTranspose(child), []))
                continue
            hit = _pointwise_conv(child)
            if hit is None:
                continue
            bn, relu, blank = None, False, []
            if isinstance(parent, nn.Sequential):
                rest = children[i + 1:]
                if rest and _is_bn(rest[0][1]) and not rest[0][1].training:
                    bn, blank = rest[0][1], [rest[0][0]]
                    rest = rest[1:]
                if rest and type(rest[0][1]) is nn.ReLU:
                    relu, blank = True, blank + [rest[0][0]]
            found.append((parent, name, Int8Pointwise(hit[0], bn, hit[1], relu), blank))
    for parent, name, module, blank in found:
        setattr(parent, name, module)
        for other in blank:
            setattr(parent, other, nn.Identity())
    if found:
        with torch.no_grad():
            for img in calibration:
                model(img)
        for _, _, module, _ in found:
            module.freeze()
    deconvs = sum(isinstance(m, Int8ConvTranspose) for _, _, m, _ in found)
    stem_count = sum(isinstance(m, Int8Stem) for _, _, m, _ in found)
    return len(found) - deconvs - stem_count, deconvs


def prepare_for_export(model: nn.Module, body_model: bool | nn.Module = True,
                       space_to_depth: bool = False, image_at_a_time: bool = False) -> tuple[nn.Module, ConversionStats]:
    """An eval copy of the network with the body model attached (default layer if True) and binary layers
    converted; with ``space_to_depth`` (the int8 export) the stems run on the 2 x 2 pixel phases
    (mobile_export/stems.py); with ``image_at_a_time`` each encoder runs its batch one image at a time
    (:class:`ImageAtATime`)."""
    model = copy.deepcopy(model).eval()
    if body_model is True and model.body_model is None:
        from bidrn.body import load_body_model

        model.attach_body_model(load_body_model())
    elif body_model is False:
        model.attach_body_model(None)
    elif isinstance(body_model, nn.Module):
        model.attach_body_model(body_model)
    stats = convert_binary_layers(model.eval())
    stats.phased_deconvs = phase_transposed_convs(model)
    stats.phase_folded_bn = fold_into_phases(model)
    if space_to_depth:
        stats.space_to_depth_convs = space_to_depth_stems(model)
    if hasattr(model, "crop_op"):
        model.crop_op = ops.roi_align  # bidrn::roi_align: the crops without portable grid_sample
    if hasattr(model, "resize_op"):
        model.resize_op = ops.resize  # a whole-factor nearest downscale as bidrn::subsample
    for module in model.modules():  # the heads' point lookups as bidrn::sample_points
        if hasattr(type(module), "sample_op"):
            module.sample_op = ops.sample_points
    if getattr(model, "body_model", None) is not None and hasattr(model.body_model, "use_skin_op"):
        model.body_model.use_skin_op(ops.skin)  # sparse skinning as bidrn::skin (bidrn.body.layer)
    stats.subsampled_residuals = subsample_block_residuals(model)
    if image_at_a_time:
        for name in ENCODERS:
            if isinstance(getattr(model, name, None), nn.Module):
                setattr(model, name, ImageAtATime(getattr(model, name)))
    return model, stats


def export_pte(model_or_name: str | nn.Module, out: str | Path, int8: bool = False, body_model: bool | nn.Module = True,
               reference: str | Path | None = None, calibration_images: int = 4,
               model_name: str | None = None, image_at_a_time: bool = False,
               int8_pointwise: bool | None = None, target: str = "host", log=lambda msg: None) -> ExportReport:
    """Export to ``out`` (.pte) and write ``out``.json; returns the report.

    int8_pointwise (``--int8`` only): run the 1 x 1 convs (block residuals, heads) as ``bidrn::int8_pointwise``
    (True) or as XNNPACK int8 convs (False); None decides by :func:`int8_pointwise_is_fast` for ``target``
    ('host': this machine; 'aarch64': an Arm phone), which also decides the stems (:func:`int8_stem_is_fast`).

    reference: a full-precision .pte to compare bytes with; exported from :func:`full_precision_twin` if the
    file does not exist yet (cache it under an ignored folder such as out/export/).
    """
    start = time.perf_counter()
    out = Path(out)
    check_target(target)  # an unknown target fails here, before any work (without loading the kernels)
    net = load_model(model_or_name, model_name)
    cfg = net.cfg
    log(f"converting {cfg.name}")
    model, stats = prepare_for_export(net, body_model, space_to_depth=int8, image_at_a_time=image_at_a_time)
    x = example_image(cfg)
    with torch.no_grad():
        eager = model(x)
    calib = [example_image(cfg, seed=1 + i) for i in range(calibration_images)] if int8 else []
    if int8 and int8_pointwise is None:
        int8_pointwise = int8_pointwise_is_fast(target)
    if int8 and int8_pointwise:
        stems = int8_stem_is_fast(target)
        log("int8: 1 x 1 convs as bidrn::int8_pointwise, phased deconvs as bidrn::int8_conv_transpose2d"
            + (", stems as bidrn::int8_conv2d" if stems else ""))
        stats.int8_pointwise_convs, stats.int8_deconvs = quantize_own_int8_ops(model, calib, stems=stems)
        stats.int8_stems = count_int8_stems(model)
    program = _export_program(model, x, cfg.name, log)
    if int8:
        log("int8: PT2E calibration")
        program = _export_program(_quantize_int8(program, calib), x, cfg.name, log)
    log("lowering to XNNPACK")
    outside = save_program(program, x, out, stats)
    report = ExportReport(
        model=cfg.name, path=str(out), bytes=out.stat().st_size, int8=int8, target=target, input_shape=list(x.shape),
        outputs=list(eager), output_shapes={k: list(v.shape) for k, v in eager.items()},
        body_model=model.body_model is not None, export_seconds=time.perf_counter() - start,
        stats=asdict(stats), ops_outside_xnnpack=outside)
    if reference is not None:
        report.reference = _reference_size(cfg, Path(reference), body_model, log)
        report.reference["ratio"] = report.bytes / report.reference["bytes"]
    Path(str(out) + ".json").write_text(json.dumps(report.to_dict(), indent=1))
    return report


def _reference_size(cfg, path: Path, body_model, log) -> dict:
    twin = full_precision_twin(cfg)
    if not path.exists():
        from bidrn.models.registry import create_model

        log(f"exporting the full-precision twin {twin.name} to {path}")
        torch.manual_seed(0)
        export_pte(create_model(twin), path, body_model=body_model, log=log)
    return {"model": twin.name, "path": str(path), "bytes": path.stat().st_size}


# ---------------------------------------------------------------- running

_OUR_OPS = ("binary_conv2d", "binary_conv_transpose2d", "binary_linear", "pack_signs", "roi_align", "subsample",
            "int8_pointwise", "int8_conv_transpose2d", "int8_conv2d", "sample_points")


def check_ops_version(path: str | Path) -> None:
    """Refuse a .pte whose report says it calls bidrn:: ops of other schemas than this library's (its
    arguments would be misread; ExecuTorch aborts the process). Without a report there is nothing to check."""
    sidecar = Path(str(path) + ".json")
    if not sidecar.is_file():
        return
    try:
        report = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return
    version = report.get("ops_version", 1)
    uses_ours = any(op in report.get("ops_outside_xnnpack", {}) for op in _OUR_OPS)
    if uses_ours and version != ops.OPS_VERSION:
        raise ExportError(f"{path}: exported for version {version} of the bidrn:: ops, this library has version "
                          f"{ops.OPS_VERSION}; export it again (`bidrn export {report.get('model', 'NAME')} "
                          f"--out {path}`)")


def check_pte(path: str | Path) -> Path:
    """``path`` as a program this library can run, checked before ExecuTorch reads it: the file exists, starts as
    an ExecuTorch program does (the flatbuffer's file identifier at byte 4: 'ET' and a two-digit schema version,
    e.g. 'ET12'), and its report names this library's bidrn:: op schemas (:func:`check_ops_version`). Anything
    else is an error that says what was expected, not a loader abort."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .pte file (make one with `bidrn export NAME --out {path}`)")
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
        raise ExportError(f"{path}: not an ExecuTorch program (a .pte has the file identifier 'ET' and a two-digit "
                          f"version at byte 4, found {head[4:8]!r}); make one with `bidrn export NAME --out {path}`")
    check_ops_version(path)
    return path


def load_program(path: str | Path):
    """(forward method, output names) of a .pte in ExecuTorch's Python runtime, our kernel library loaded."""
    from executorch.runtime import Runtime

    from mobile_export import kernel_library
    from mobile_export.bench_model import loading

    kernel_library.load()
    path = check_pte(path)
    with loading(path):
        method = Runtime.get().load_program(str(path)).load_method("forward")
    sidecar = Path(str(path) + ".json")
    names = json.loads(sidecar.read_text())["outputs"] if sidecar.exists() else None
    return method, names


def run_pte(path: str | Path, img: torch.Tensor) -> dict[str, torch.Tensor] | list[torch.Tensor]:
    """Run a .pte once: a dict by output name where the sidecar .json exists, else the output list."""
    method, names = load_program(path)
    outputs = method.execute([img])
    return dict(zip(names, outputs)) if names else list(outputs)
