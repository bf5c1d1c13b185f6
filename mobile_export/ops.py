"""The ``bidrn::`` binary-layer ops: schemas, pure-PyTorch reference kernels, fake kernels, weight packing.

A binary layer computes, per output channel o (eq. 5 with alpha and batch-norm folded into scale / bias):

    acc[o]  = sum over valid taps t and input channels c of sign(x[c, t]) * sign(W[o, c, t])   (integer)
    y[o]    = scale[o] * acc[o] + bias[o]            then optionally RPReLU (eq. 6),
    y[o]    = y[o] + r[o % R]                        optionally (an LCR's a_f), where r is R channels of
                                                     ``residual`` from ``residual_offset``, Hardtanh'ed first
                                                     when ``clamp_residual`` (a_f = Hardtanh(x), eq. 3), and
                                                     2 x 2 average-pooled when ``residual_pool`` = 2 (DScR),
    y[o]    = partial[o] + y[o]                      optionally (FDR's running branch sum, eq. 10),
    y[o]    = post_scale[o] * y[o] + post_bias[o]    optionally (the LCR's BN after the residual add),
    y[o]    = y[o] + shortcut[o]                     optionally (the block residual of eq. 11)

``binary_conv2d(..., branches=k)`` runs FDR (eq. 10) as one op: k convs of in_channels each on consecutive
input chunks, weight / scale / bias / RPReLU stacked branch by branch, residual chunk i for branch i, and the
branches summed in eager's order (out = b_0, then out = out + b_i) before post and shortcut.

with sign(v) = +1 for v >= 0 else -1 (eq. 1; NaN gives -1, as ``torch.where(x >= 0, 1, -1)``) and zero padding
contributing 0, exactly as ``F.conv2d(sign(x), sign(W), padding=p)`` does in the eager model. A float input may
have more channels than the layer: it reads ``in_channels`` of them from ``in_offset`` (an FDR branch reads its
chunk of the shared input without a split copy). Since sign(Hardtanh(x)) = sign(x), an LCR's op takes x itself
and clamps only the residual it adds, so no separate Hardtanh pass is needed. Activations
arrive as float32 NCHW (only their sign matters) or already packed (``pack_signs``); weights are packed once
at export. ``output`` selects float32 NCHW (``Output.FLOAT``), the int32 accumulator (``Output.ACCUMULATOR``,
for bit-exact tests) or the signs of y packed for the next binary layer (``Output.PACKED``).

Packed layout (docs/kernels.md): bit c % 64 of int64 word c // 64 is 1 where the value's sign is -1;
activations are N x H x W x words (Linear: B x words), weights O x (taps * words) with taps row-major
(a transposed conv orders them by output phase, see :func:`transposed_tap_order`). Importing this module
registers the ops with PyTorch; ExecuTorch's kernels are loaded by :func:`mobile_export.kernel_library.load`.
"""
from __future__ import annotations

import enum

import torch
from torch.nn import functional as F


# Version of the bidrn:: op schemas. A .pte stores its ops' arguments by position, so a program exported for
# other schemas would be misread (ExecuTorch aborts the process); the export report records this number and
# loading checks it (export.check_ops_version). 1: until the epilogue window / partial / shortcut arguments,
# 2: those, FDR's `branches` and bidrn::roi_align; 3: `residual_pool`. A new op (bidrn::subsample,
# bidrn::int8_pointwise, bidrn::int8_conv_transpose2d, bidrn::int8_conv2d, bidrn::sample_points, bidrn::skin)
# changes no existing schema and needs no new number: an older library refuses such a program at load
# (missing operator).
OPS_VERSION = 3


class Output(enum.IntEnum):
    FLOAT = 0
    ACCUMULATOR = 1
    PACKED = 2


def words_for(channels: int) -> int:
    return (channels + 63) // 64


# ---------------------------------------------------------------- bit packing (pure torch)

def pack_bits(negative: torch.Tensor) -> torch.Tensor:
    """... x n bool -> ... x words_for(n) int64, bit c % 64 of word c // 64 = negative[..., c]."""
    n = negative.shape[-1]
    padded = F.pad(negative.to(torch.int64), (0, words_for(n) * 64 - n)).unflatten(-1, (-1, 64))
    shifts = torch.arange(32, device=negative.device)
    low = (padded[..., :32] << shifts).sum(-1)
    high = (padded[..., 32:] << shifts).sum(-1)
    return low | (high << 32)  # int64 shifts wrap, so bit 63 lands in the sign bit as intended


def unpack_bits(words: torch.Tensor, n: int) -> torch.Tensor:
    """... x words int64 -> ... x n bool (inverse of :func:`pack_bits`)."""
    bits = (words.unsqueeze(-1) >> torch.arange(64, device=words.device)) & 1
    return bits.flatten(-2)[..., :n].bool()


def signs_from_bits(negative: torch.Tensor) -> torch.Tensor:
    return 1.0 - 2.0 * negative.float()


def is_negative(x: torch.Tensor) -> torch.Tensor:
    """Where sign(x) = -1 (eq. 1): NOT x >= 0, so NaN counts as negative like torch.where(x >= 0, 1, -1)."""
    return ~(x >= 0)


def pack_signs_reference(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W float -> N x H x W x words int64; B x F -> B x words."""
    if x.dim() == 4:
        return pack_bits(is_negative(x).permute(0, 2, 3, 1))
    return pack_bits(is_negative(x))


def transposed_tap_order(kernel_size, stride, padding) -> list[tuple[int, int]]:
    """Taps (ky, kx) of a transposed conv in packed order: output phase (ry, rx) row-major, and within a
    phase the taps that reach it, ky = (ry + pad) mod stride, kx likewise, row-major (docs/kernels.md)."""
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    return [(ky, kx) for ry in range(sh) for rx in range(sw)
            for ky in range((ry + ph) % sh, kh, sh) for kx in range((rx + pw) % sw, kw, sw)]


def pack_conv_weight(w: torch.Tensor) -> torch.Tensor:
    """Conv2d weight O x C x KH x KW -> O x (KH * KW * words) int64 of sign bits."""
    return pack_bits(is_negative(w).permute(0, 2, 3, 1)).flatten(1)


def pack_conv_transpose_weight(w: torch.Tensor, stride, padding) -> torch.Tensor:
    """ConvTranspose2d weight C x O x KH x KW -> O x (KH * KW * words) int64, taps in phase order."""
    taps = transposed_tap_order(w.shape[2:], stride, padding)
    per_tap = torch.stack([w[:, :, ky, kx] for ky, kx in taps], dim=1)  # C x T x O
    return pack_bits(is_negative(per_tap).permute(2, 1, 0)).flatten(1)


def pack_linear_weight(w: torch.Tensor) -> torch.Tensor:
    """Linear weight O x F -> O x words int64."""
    return pack_bits(is_negative(w))


def _unpack_taps(weight: torch.Tensor, taps: int, in_channels: int) -> torch.Tensor:
    """O x (taps * words) -> O x taps x C of +-1."""
    o = weight.shape[0]
    return signs_from_bits(unpack_bits(weight.reshape(o, taps, words_for(in_channels)), in_channels))


# ---------------------------------------------------------------- reference kernels

def _input_signs(x: torch.Tensor, in_channels: int, spatial: bool, in_offset: int = 0) -> torch.Tensor:
    """float x or packed x -> +-1 float in the layout PyTorch's conv/linear take."""
    if x.dtype == torch.int64:
        if in_offset:
            raise ValueError("in_offset needs a float input (packed signs are read whole)")
        s = signs_from_bits(unpack_bits(x, in_channels))
        return s.permute(0, 3, 1, 2) if spatial else s
    if in_offset or x.shape[1] != in_channels:
        x = x[:, in_offset:in_offset + in_channels]
    return torch.where(x >= 0, 1.0, -1.0).float()


def _residual_slice(residual, residual_offset: int, residual_channels: int, clamp_residual: bool,
                    residual_pool: int = 1):
    r = residual
    if residual_offset or residual_channels:
        r = r[:, residual_offset:residual_offset + (residual_channels or r.shape[1] - residual_offset)]
    r = torch.nn.functional.hardtanh(r) if clamp_residual else r
    if residual_pool == 2:  # DScR's AvgPool(a_f) (eq. 8), as ATen sums a 2 x 2 window: row by row, then / 4
        r = F.avg_pool2d(r, 2)
    elif residual_pool != 1:
        raise ValueError(f"residual_pool must be 1 or 2, got {residual_pool}")
    return r


def _finish(acc: torch.Tensor, scale, bias, rprelu, output: int, spatial: bool, residual=None,
            post=None, residual_offset=0, residual_channels=0, clamp_residual=False, partial=None,
            shortcut=None, residual_pool=1) -> torch.Tensor:
    """acc: exact integers in float32, N x O (x H x W), made contiguous (conv2d may pick other strides)."""
    acc = acc.contiguous()
    if output == Output.ACCUMULATOR:
        return acc.round().to(torch.int32)
    view = (1, -1, 1, 1) if spatial else (1, -1)
    # Two roundings (mul, then add), as the kernel does: no FMA on either side.
    y = acc * scale.view(view) + bias.view(view)
    if rprelu is not None:
        beta, gamma, zeta = (p.view(view) for p in rprelu.reshape(3, -1))
        shifted = y - gamma
        y = torch.where(shifted > 0, shifted, beta * shifted) + zeta
    if residual is not None:  # output channel o adds residual channel o % R (a FUR's k branches share a_f)
        r = _residual_slice(residual, residual_offset, residual_channels, clamp_residual, residual_pool)
        y = y + r.repeat(1, y.shape[1] // r.shape[1], *([1] * (y.dim() - 2)))
    if partial is not None:
        y = partial + y
    if post is not None:
        post_scale, post_bias = (p.view(view) for p in post.reshape(2, -1))
        y = y * post_scale + post_bias
    if shortcut is not None:
        y = y + shortcut
    if output == Output.PACKED:
        return pack_signs_reference(y)
    return y


def binary_conv2d_reference(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding, output=0,
                            residual=None, post=None, in_offset=0, residual_offset=0, residual_channels=0,
                            clamp_residual=False, partial=None, shortcut=None, residual_pool=1, branches=1):
    if branches > 1:
        if residual_pool != 1:
            raise ValueError("branches > 1 takes an unpooled residual")
        return _branches_reference(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding, output,
                                   residual, post, in_offset, residual_offset, residual_channels, clamp_residual,
                                   partial, shortcut, branches)
    kh, kw = kernel_size
    w = _unpack_taps(weight, kh * kw, in_channels).reshape(-1, kh, kw, in_channels).permute(0, 3, 1, 2)
    acc = F.conv2d(_input_signs(x, in_channels, True, in_offset), w, stride=tuple(stride), padding=tuple(padding))
    return _finish(acc, scale, bias, rprelu, output, True, residual, post, residual_offset, residual_channels,
                   clamp_residual, partial, shortcut, residual_pool)


def _branches_reference(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding, output, residual,
                        post, in_offset, residual_offset, residual_channels, clamp_residual, partial, shortcut,
                        branches):
    """FDR (eq. 10) in one op: branch i is a C -> O conv on input chunk i with its own scale, bias and RPReLU
    and residual chunk i; out = b_0, then out = out + b_i in eager's order, then post and shortcut."""
    if output != Output.FLOAT or partial is not None or x.dtype != torch.float32:
        raise ValueError("branches > 1 takes a float input, gives a float output and takes no partial")
    o = scale.numel() // branches
    if residual is not None and not residual_channels:
        residual_channels = (residual.shape[1] - residual_offset) // branches
    out = None
    for i in range(branches):
        rows = slice(i * o, (i + 1) * o)
        last = i == branches - 1
        out = binary_conv2d_reference(
            x, weight[rows], scale[rows], bias[rows], None if rprelu is None else rprelu.reshape(3, -1)[:, rows],
            in_channels, kernel_size, stride, padding, output, residual, post if last else None,
            in_offset + i * in_channels, residual_offset + i * residual_channels, residual_channels, clamp_residual,
            out, shortcut if last else None)
    return out


def binary_conv_transpose2d_reference(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding,
                                      output_padding, output=0, residual=None, post=None, *epilogue):
    taps = transposed_tap_order(kernel_size, stride, padding)
    per_tap = _unpack_taps(weight, len(taps), in_channels)  # O x T x C
    w = per_tap.new_zeros(in_channels, weight.shape[0], *kernel_size)
    for t, (ky, kx) in enumerate(taps):
        w[:, :, ky, kx] = per_tap[:, t, :].T
    in_offset, *rest = epilogue or (0,)
    acc = F.conv_transpose2d(_input_signs(x, in_channels, True, in_offset), w, stride=tuple(stride),
                             padding=tuple(padding), output_padding=tuple(output_padding))
    return _finish(acc, scale, bias, rprelu, output, True, residual, post, *rest)


def binary_linear_reference(x, weight, scale, bias, rprelu, in_features, output=0, residual=None, post=None,
                            *epilogue):
    w = _unpack_taps(weight, 1, in_features)[:, 0, :]
    in_offset, *rest = epilogue or (0,)
    acc = F.linear(_input_signs(x, in_features, False, in_offset), w)
    return _finish(acc, scale, bias, rprelu, output, False, residual, post, *rest)


# ---------------------------------------------------------------- shapes (fake kernels)

def _out_meta(x, scale, output, out_h=None, out_w=None):
    n, o = x.shape[0], scale.shape[0]
    if output == Output.PACKED:
        shape = (n, out_h, out_w, words_for(o)) if out_h is not None else (n, words_for(o))
        return x.new_empty(shape, dtype=torch.int64)
    shape = (n, o, out_h, out_w) if out_h is not None else (n, o)
    return x.new_empty(shape, dtype=torch.int32 if output == Output.ACCUMULATOR else torch.float32)


def _in_hw(x):
    return (x.shape[1], x.shape[2]) if x.dtype == torch.int64 else (x.shape[2], x.shape[3])


def binary_conv2d_fake(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding, output=0,
                       residual=None, post=None, in_offset=0, residual_offset=0, residual_channels=0,
                       clamp_residual=False, partial=None, shortcut=None, residual_pool=1, branches=1):
    h, w = _in_hw(x)
    oh = (h + 2 * padding[0] - kernel_size[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel_size[1]) // stride[1] + 1
    return _out_meta(x, scale[:scale.numel() // branches], output, oh, ow)


def binary_conv_transpose2d_fake(x, weight, scale, bias, rprelu, in_channels, kernel_size, stride, padding,
                                 output_padding, output=0, residual=None, post=None, *epilogue):
    h, w = _in_hw(x)
    oh = (h - 1) * stride[0] - 2 * padding[0] + kernel_size[0] + output_padding[0]
    ow = (w - 1) * stride[1] - 2 * padding[1] + kernel_size[1] + output_padding[1]
    return _out_meta(x, scale, output, oh, ow)


def binary_linear_fake(x, weight, scale, bias, rprelu, in_features, output=0, residual=None, post=None,
                       *epilogue):
    return _out_meta(x, scale, output)


def pack_signs_fake(x):
    if x.dim() == 4:
        return x.new_empty((x.shape[0], x.shape[2], x.shape[3], words_for(x.shape[1])), dtype=torch.int64)
    return x.new_empty((x.shape[0], words_for(x.shape[1])), dtype=torch.int64)


# ---------------------------------------------------------------- RoIAlign

def roi_align_reference(features, boxes, output_size, spatial_scale=1.0, sampling_ratio=1, aligned=False,
                        mirror=False):
    """bidrn.models.ops.roi_align, one box per image (B x 4): what the C++ kernel computes (roi_align.cpp)."""
    from bidrn.models import ops as model_ops

    return model_ops.roi_align(features, boxes, tuple(output_size), spatial_scale, sampling_ratio, aligned, mirror)


def roi_align_fake(features, boxes, output_size, spatial_scale=1.0, sampling_ratio=1, aligned=False, mirror=False):
    return features.new_empty((features.shape[0], features.shape[1], output_size[0], output_size[1]))


def roi_align(features, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = 1,
              aligned: bool = False, mirror: bool = False):
    """``bidrn.models.ops.roi_align``'s signature on the ``bidrn::roi_align`` op (B x 4 boxes, fixed grid): the
    exporter gives it to the network as its crop (``WholeBodyNet.crop_op``)."""
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or sampling_ratio < 1:
        from bidrn.models import ops as model_ops  # K x 5 boxes or the adaptive grid: the reference's own path

        return model_ops.roi_align(features, boxes, output_size, spatial_scale, sampling_ratio, aligned, mirror)
    return torch.ops.bidrn.roi_align(features, boxes, list(output_size), float(spatial_scale), int(sampling_ratio),
                                     bool(aligned), bool(mirror))


# ---------------------------------------------------------------- point sampling

def sample_points_reference(features, coords):
    """bidrn.models.ops.sample_joint_features (grid_sample, bilinear, zero padding, align_corners=True, at
    points in feature pixels; N x J x C): what the C++ kernel computes (roi_align.cpp)."""
    from bidrn.models import ops as model_ops

    return model_ops.sample_joint_features(features, coords)


def sample_points_fake(features, coords):
    return features.new_empty((features.shape[0], coords.shape[1], features.shape[1]))


def sample_points(features, coords):
    """``bidrn.models.ops.sample_joint_features`` on the ``bidrn::sample_points`` op: the exporter gives it to
    the heads as their point lookup (``sample_op``), in place of the portable grid_sampler_2d."""
    return torch.ops.bidrn.sample_points(features, coords)


# ---------------------------------------------------------------- skinning

def skin_reference(points, rot, trans, vertices, offsets, joints, weights):
    """Linear blend skinning (SMPL-X Eq. 1) with the skinning weights as a CSR matrix (int32 indices) whose row
    i is vertex vertices[i]: it blends the transforms of joints[offsets[i]:offsets[i + 1]] with those weights.
    points B x V x 3, rot B x J x 3 x 3, trans B x J x 3 -> B x V x 3, rounded as the C++ kernel (skin.cpp):
    the products summed in CSR order, then R v + t term by term, left to right. `vertices` must be a permutation
    of [0, V), as the kernel requires (a repeated vertex would leave another one's row unwritten there)."""
    b, v = points.shape[:2]
    if not torch.equal(torch.sort(vertices.long()).values, torch.arange(v, device=vertices.device)):
        raise ValueError(f"vertices must be a permutation of [0, {v}) (each index once)")
    rows = torch.repeat_interleave(vertices.long(), (offsets[1:] - offsets[:-1]).long())
    per_entry = torch.cat([rot.reshape(b, -1, 9), trans], dim=-1)[:, joints.long()] * weights[:, None]  # B x nnz x 12
    m = points.new_zeros(b, v, 12).index_add_(1, rows, per_entry)  # blended R (row-major) and t
    x, y, z = (c.unsqueeze(-1) for c in points.unbind(-1))
    return m[..., 0:9:3] * x + m[..., 1:9:3] * y + m[..., 2:9:3] * z + m[..., 9:12]


def skin_fake(points, rot, trans, vertices, offsets, joints, weights):
    return points.new_empty(points.shape)


def skin(points, rot, trans, vertices, offsets, joints, weights):
    """``bidrn.body.lbs.skin`` on the ``bidrn::skin`` op with the weights in CSR form
    (``SMPLXLayer.sparse_skinning``): the exporter gives it to the body layer (``SMPLXLayer.use_skin_op``)."""
    return torch.ops.bidrn.skin(points, rot, trans, vertices, offsets, joints, weights)


# ---------------------------------------------------------------- subsampling

def subsample_reference(x, stride):
    """Every stride-th pixel: x[:, :, ::s_h, ::s_w] (what a 1 x 1 strided conv without padding reads)."""
    return x[:, :, ::stride[0], ::stride[1]].contiguous()


def subsample_fake(x, stride):
    return x.new_empty((x.shape[0], x.shape[1], -(-x.shape[2] // stride[0]), -(-x.shape[3] // stride[1])))


def subsample(x, stride):
    """``bidrn::subsample``: x[:, :, ::s_h, ::s_w] as a kernel of this library (ExecuTorch's portable strided
    slice copies element by element, 0.5-0.8 ms on a hand encoder's block input)."""
    return torch.ops.bidrn.subsample(x, [int(stride[0]), int(stride[1])])


def resize(x, size, mode: str = "nearest"):
    """``F.interpolate(x, size, mode=mode)``; a nearest downscale by whole factors is ``bidrn::subsample``.

    ATen's nearest reads source pixel floor(i * in / out), which is i * f exactly when in = f * out (the
    512 x 384 input to the 256 x 192 body input); ExecuTorch's portable upsample_nearest2d took 0.33 ms
    for it."""
    h, w = x.shape[-2:]
    if mode == "nearest" and x.dim() == 4 and h % size[0] == 0 and w % size[1] == 0:
        return subsample(x, (h // size[0], w // size[1]))
    return F.interpolate(x, size=size, mode=mode)


# ---------------------------------------------------------------- int8 pointwise (the int8 block residual)

def quantize_int8_reference(x, input_scale_inv: float, input_zero_point: int) -> torch.Tensor:
    """int8_pointwise's activation quantization: clamp(round_half_even(x * input_scale_inv) + zero_point,
    -128, 127), with NaN read as 0 and the product clamped to +-256 first (float32 throughout)."""
    v = x.float() * torch.tensor(input_scale_inv, dtype=torch.float32)
    v = torch.nan_to_num(v, nan=0.0).clamp(-256.0, 256.0)
    return (torch.round(v) + input_zero_point).clamp(-128, 127).to(torch.int8)


def int8_pointwise_reference(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point, stride,
                             relu=False):
    """``bidrn::int8_pointwise``: a 1 x 1 conv of stride s without padding on int8 activations and weights.

        q[c, p]   = quantize_int8_reference(x[c, s_h i, s_w j])
        acc[o, p] = sum_c weight[o, c] q[c, p] - zero_point * weight_sum[o]        (exact integers)
        y[o, p]   = float(acc) * scale[o] + bias[o]                              (two float32 roundings)
        y[o, p]   = y > 0 ? y : 0                                                (with relu)

    ``weight`` is int8 O x C, ``weight_sum`` int32 O (sum_c weight[o, c], stored at export), ``scale`` the
    input scale times each output channel's weight scale. The export uses it under ``--int8`` for the block
    residuals of eq. 11 and the heads' 1 x 1 convs (export.Int8Pointwise); mobile_export/kernels/int8_pointwise.h
    is the C++ side."""
    q = quantize_int8_reference(x[:, :, ::stride[0], ::stride[1]], input_scale_inv, input_zero_point)
    # float64 sums of int8 products are exact (|acc| < 2^31 << 2^53).
    raw = torch.einsum("oc,nchw->nohw", weight.double(), q.double())
    acc = (raw.to(torch.int64) - input_zero_point * weight_sum.to(torch.int64).view(1, -1, 1, 1)).to(torch.int32)
    y = acc.float() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    return torch.where(y > 0, y, 0.0) if relu else y


def int8_pointwise_fake(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point, stride, relu=False):
    return x.new_empty((x.shape[0], weight.shape[0], -(-x.shape[2] // stride[0]), -(-x.shape[3] // stride[1])))


def _phases(kernel_size, stride, padding):
    """[(phase, row taps, column taps)] of a transposed conv with kernel = stride + 2 padding, phase-major as
    bidrn::int8_conv_transpose2d orders its weights (taps: (input offset, kernel index), offsets ascending)."""
    from mobile_export.deconv import phase_taps

    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    return [(ry * sw + rx, phase_taps(kh, sh, ph, ry), phase_taps(kw, sw, pw, rx)) for ry in range(sh) for rx in range(sw)]


def pack_phase_weights(w: torch.Tensor, stride, padding) -> torch.Tensor:
    """ConvTranspose2d weight (C x O x kh x kw) -> phases*O x taps*C: per phase, output channel o's row holds
    tap t = (ty, tx) row-major, then channel c, at t C + c (int8_conv_transpose2d's layout)."""
    c, o, kh, kw = w.shape
    blocks = []
    for _, rows, cols in _phases((kh, kw), stride, padding):
        taps = w[:, :, [k for _, k in rows]][:, :, :, [k for _, k in cols]]  # C x O x th x tw
        blocks.append(taps.permute(1, 2, 3, 0).reshape(o, -1))
    return torch.cat(blocks)


def unpack_phase_weights(weight: torch.Tensor, in_channels: int, kernel_size, stride, padding) -> torch.Tensor:
    """Inverse of :func:`pack_phase_weights`: the ConvTranspose2d weight, C x O x kh x kw."""
    phases = _phases(kernel_size, stride, padding)
    o = weight.shape[0] // len(phases)
    w = weight.new_zeros((in_channels, o, *kernel_size))
    for r, rows, cols in phases:
        block = weight[r * o:(r + 1) * o].reshape(o, len(rows), len(cols), in_channels)
        for ty, (_, ky) in enumerate(rows):
            for tx, (_, kx) in enumerate(cols):
                w[:, :, ky, kx] = block[:, ty, tx, :].transpose(0, 1)
    return w


def int8_conv_transpose2d_reference(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point,
                                    kernel_size, stride, padding, relu=False):
    """``bidrn::int8_conv_transpose2d``: a transposed conv with kernel = stride + 2 padding (the output exactly
    stride x the input: BoxNet's k4 s2 p1 deconv) on int8 activations and weights, run as one int8 conv per
    output phase (mobile_export/deconv.py's decomposition):

        q         = quantize_int8_reference(x)
        acc[o, .] = conv_transpose2d(q - zero_point, W)[o, .]                  (exact integers)
        y         = float(acc) * scale[o] + bias[o], then y > 0 ? y : 0 with relu

    where W (C x O x kh x kw) is ``weight`` (phases*O x taps*C, :func:`pack_phase_weights`) unpacked;
    ``weight_sum`` holds each phase row's sum (the kernels' zero-point correction, exact when it is the true
    sum, as the export stores it). C++: mobile_export/kernels/int8_pointwise.h."""
    q = quantize_int8_reference(x, input_scale_inv, input_zero_point).double() - input_zero_point
    w = unpack_phase_weights(weight.double(), x.shape[1], kernel_size, stride, padding)
    acc = F.conv_transpose2d(q, w, stride=tuple(stride), padding=tuple(padding)).to(torch.int32)
    y = acc.float() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    return torch.where(y > 0, y, 0.0) if relu else y


def int8_conv_transpose2d_fake(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point, kernel_size,
                               stride, padding, relu=False):
    return x.new_empty((x.shape[0], scale.shape[0], x.shape[2] * stride[0], x.shape[3] * stride[1]))


def int8_conv2d_reference(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point, kernel_size,
                          stride, padding, relu=False, pool_kernel=(1, 1), pool_stride=(1, 1), pool_padding=(0, 0)):
    """``bidrn::int8_conv2d``: an int8 conv (any kernel, stride and zero padding) with the float epilogue of
    :func:`int8_pointwise_reference`, then a max pool (the ResNet stems' 7 x 7 / 2 conv + BN + 3 x 3 / 2
    max pool as one op under ``--int8``, export.Int8Stem):

        q         = quantize_int8_reference(x), the zero point in the conv's zero padding
        acc[o, .] = conv2d(q - zero_point, W)[o, .]                            (exact integers)
        z         = float(acc) * scale[o] + bias[o], then z > 0 ? z : 0 with relu
        y         = max_pool2d(z, pool_kernel, pool_stride, pool_padding)   (z itself for a 1 x 1 / 1 pool)

    where W (O x C x kh x kw) is ``weight`` (O x C kh kw, a Conv2d weight's order) and ``weight_sum`` its rows'
    sums (the kernels' zero-point correction, exact when it is the true sum, as the export stores it).
    C++: mobile_export/kernels/int8_pointwise.h (of a +0 and a -0 tying for a pool window's maximum, the
    kernels may return either)."""
    q = quantize_int8_reference(x, input_scale_inv, input_zero_point).double() - input_zero_point
    w = weight.double().view(weight.shape[0], x.shape[1], *kernel_size)
    # float64 sums of int8 products are exact (|acc| < 2^31 << 2^53)
    acc = F.conv2d(q, w, stride=tuple(stride), padding=tuple(padding)).to(torch.int32)
    z = acc.float() * scale.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
    if relu:
        z = torch.where(z > 0, z, 0.0)
    if tuple(pool_kernel) == (1, 1) and tuple(pool_stride) == (1, 1):
        return z
    return F.max_pool2d(z, tuple(pool_kernel), tuple(pool_stride), tuple(pool_padding))


def int8_conv2d_fake(x, weight, weight_sum, scale, bias, input_scale_inv, input_zero_point, kernel_size, stride,
                     padding, relu=False, pool_kernel=(1, 1), pool_stride=(1, 1), pool_padding=(0, 0)):
    size = [(x.shape[2 + i] + 2 * padding[i] - kernel_size[i]) // stride[i] + 1 for i in range(2)]
    if tuple(pool_kernel) != (1, 1) or tuple(pool_stride) != (1, 1):
        size = [(size[i] + 2 * pool_padding[i] - pool_kernel[i]) // pool_stride[i] + 1 for i in range(2)]
    return x.new_empty((x.shape[0], weight.shape[0], *size))


# ---------------------------------------------------------------- registration

_LAYER_ARGS = "Tensor x, Tensor weight, Tensor scale, Tensor bias, Tensor? rprelu"
_EPILOGUE_ARGS = ("int output=0, Tensor? residual=None, Tensor? post=None, int in_offset=0, int residual_offset=0, "
                  "int residual_channels=0, bool clamp_residual=False, Tensor? partial=None, Tensor? shortcut=None, "
                  "int residual_pool=1")
SCHEMAS = {
    "binary_conv2d": f"{_LAYER_ARGS}, int in_channels, int[2] kernel_size, int[2] stride, int[2] padding, "
                     f"{_EPILOGUE_ARGS}, int branches=1",
    "binary_conv_transpose2d": f"{_LAYER_ARGS}, int in_channels, int[2] kernel_size, int[2] stride, "
                               f"int[2] padding, int[2] output_padding, {_EPILOGUE_ARGS}",
    "binary_linear": f"{_LAYER_ARGS}, int in_features, {_EPILOGUE_ARGS}",
    "pack_signs": "Tensor x",
    "roi_align": "Tensor features, Tensor boxes, int[2] output_size, float spatial_scale=1.0, int sampling_ratio=1, "
                 "bool aligned=False, bool mirror=False",
    "subsample": "Tensor x, int[2] stride",
    "sample_points": "Tensor features, Tensor coords",
    "skin": "Tensor points, Tensor rot, Tensor trans, Tensor vertices, Tensor offsets, Tensor joints, Tensor weights",
    "int8_pointwise": "Tensor x, Tensor weight, Tensor weight_sum, Tensor scale, Tensor bias, float input_scale_inv, "
                      "int input_zero_point, int[2] stride, bool relu=False",
    "int8_conv_transpose2d": "Tensor x, Tensor weight, Tensor weight_sum, Tensor scale, Tensor bias, "
                             "float input_scale_inv, int input_zero_point, int[2] kernel_size, int[2] stride, "
                             "int[2] padding, bool relu=False",
    "int8_conv2d": "Tensor x, Tensor weight, Tensor weight_sum, Tensor scale, Tensor bias, float input_scale_inv, "
                   "int input_zero_point, int[2] kernel_size, int[2] stride, int[2] padding, bool relu=False, "
                   "int[2] pool_kernel=[1, 1], int[2] pool_stride=[1, 1], int[2] pool_padding=[0, 0]",
}
_KERNELS = {
    "binary_conv2d": (binary_conv2d_reference, binary_conv2d_fake),
    "binary_conv_transpose2d": (binary_conv_transpose2d_reference, binary_conv_transpose2d_fake),
    "binary_linear": (binary_linear_reference, binary_linear_fake),
    "pack_signs": (pack_signs_reference, pack_signs_fake),
    "roi_align": (roi_align_reference, roi_align_fake),
    "subsample": (subsample_reference, subsample_fake),
    "sample_points": (sample_points_reference, sample_points_fake),
    "skin": (skin_reference, skin_fake),
    "int8_pointwise": (int8_pointwise_reference, int8_pointwise_fake),
    "int8_conv_transpose2d": (int8_conv_transpose2d_reference, int8_conv_transpose2d_fake),
    "int8_conv2d": (int8_conv2d_reference, int8_conv2d_fake),
}

_LIB = torch.library.Library("bidrn", "DEF")


def _with_out(fn):
    """The .out overload's kernel: compute functionally, then write into `out` (resized as ATen does)."""
    def out_kernel(*args, out):
        result = fn(*args)
        out.resize_(result.shape).copy_(result)
        return out
    return out_kernel


def _register():
    for name, args in SCHEMAS.items():
        reference, fake = _KERNELS[name]
        _LIB.define(f"{name}({args}) -> Tensor")
        _LIB.define(f"{name}.out({args}, *, Tensor(a!) out) -> Tensor(a!)")
        _LIB.impl(name, reference, "CompositeExplicitAutograd")
        _LIB.impl(f"{name}.out", _with_out(reference), "CompositeExplicitAutograd")
        torch.library.register_fake(f"bidrn::{name}", fake, lib=_LIB)
        torch.library.register_fake(f"bidrn::{name}.out", _with_out(fake), lib=_LIB)


_register()
