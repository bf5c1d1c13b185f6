"""bidrn::int8_pointwise (mobile_export/kernels/int8_pointwise.h, ops.int8_pointwise_reference): the int8 1 x 1
conv the --int8 export runs the block residuals (eq. 11) with. The quantization on hand-computed values, every
kernel path bit-exact against the reference (integers and the float epilogue), the op in ExecuTorch's runtime,
and export.Int8Pointwise within the error bound that int8 rounding allows."""
from __future__ import annotations

import copy
import ctypes
import random

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mobile_export import export, kernel_library, ops
from test_kernels import X86_AND_SCALAR_PATHS, assert_bit_exact_on_two_threads, require_path


def test_quantization_rounds_half_to_even_and_saturates():
    x = torch.tensor([0.125, 0.375, -0.125, -0.375, 0.26, 31.9, 32.2, -40.0, float("nan"), float("inf"),
                      float("-inf"), 1e30])
    # x * 4 = 0.5, 1.5, -0.5, -1.5, 1.04, 127.6, 128.8, -160, NaN -> 0, inf, -inf, 4e30; then + zero point 1
    want = [1, 3, 1, -1, 2, 127, 127, -128, 1, 127, -128, 127]
    assert ops.quantize_int8_reference(x, 4.0, 1).tolist() == want


def test_reference_is_the_integer_conv_of_the_quantized_input_scaled_per_channel():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, 6, generator=g)
    weight = torch.randint(-127, 128, (3, 5), generator=g, dtype=torch.int8)
    scale, bias = torch.rand(3, generator=g) * 1e-2, torch.randn(3, generator=g)
    inv, zp = 9.0, -3
    y = ops.int8_pointwise_reference(x, weight, weight.int().sum(1, dtype=torch.int32), scale, bias, inv, zp, [2, 3])
    q = torch.clamp(torch.round(x[:, :, ::2, ::3] * inv) + zp, -128, 127)  # no NaN or overflow in this input
    acc = F.conv2d(q.double() - zp, weight.double()[:, :, None, None])
    assert y.shape == (2, 3, 4, 2)
    want = acc.float() * scale.view(1, 3, 1, 1) + bias.view(1, 3, 1, 1)
    assert torch.equal(y, want)
    with_relu = ops.int8_pointwise_reference(x, weight, weight.int().sum(1, dtype=torch.int32), scale, bias, inv, zp,
                                             [2, 3], relu=True)
    assert torch.equal(with_relu, want.clamp_min(0.0)) and (want < 0).any()


def random_case(rng: random.Random, gen: torch.Generator):
    n, c, h, w, o = rng.randint(1, 2), rng.choice([1, 3, 17, 64, 100, 128]), rng.randint(1, 19), rng.randint(1, 23), \
        rng.choice([1, 5, 16, 32, 33, 70])
    stride = [rng.randint(1, 3), rng.randint(1, 3)]
    x = torch.randn(n, c, h, w, generator=gen) * 2
    x.view(-1)[torch.randint(0, x.numel(), (3,), generator=gen)] = torch.tensor([float("nan"), float("inf"), -1e9])
    weight = torch.randint(-128, 128, (o, c), generator=gen, dtype=torch.int8)
    args = (x, weight, weight.int().sum(1, dtype=torch.int32), torch.rand(o, generator=gen) * 1e-3,
            torch.randn(o, generator=gen), rng.uniform(2, 40), rng.randint(-128, 127), stride, rng.random() < 0.5)
    return args


def run_c(x, weight, weight_sum, scale, bias, inv, zp, stride, relu):
    lib = kernel_library.load()
    n, c, h, w = x.shape
    out = torch.empty(n, weight.shape[0], -(-h // stride[0]), -(-w // stride[1]))
    dims = (ctypes.c_int64 * 7)(n, c, h, w, weight.shape[0], *stride)
    ptr = lambda t: t.contiguous().data_ptr()  # noqa: E731 (the tensors here are contiguous already)
    err = lib.bidrn_int8_pointwise(dims, ptr(x), ptr(weight), ptr(weight_sum), ptr(scale), ptr(bias), inv, zp,
                                   int(relu), out.data_ptr())
    assert err is None, err.decode()
    return out


@pytest.mark.parametrize("path", X86_AND_SCALAR_PATHS)
def test_every_path_is_bit_exact_against_the_reference(path):
    require_path(path)
    rng, gen = random.Random(path), torch.Generator().manual_seed(11)
    cases = [random_case(rng, gen) for _ in range(25)]
    with kernel_library.using_path(path):
        outputs = [run_c(*args) for args in cases]
    for i, (args, got) in enumerate(zip(cases, outputs)):
        want = ops.int8_pointwise_reference(*args)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), f"{path} case {i}: {args[0].shape}"


def test_bad_arguments_get_a_sentence_not_a_crash():
    lib = kernel_library.load()
    x, w = torch.zeros(1, 4, 2, 2), torch.zeros(3, 4, dtype=torch.int8)
    s, b, out = torch.zeros(3, dtype=torch.int32), torch.ones(3), torch.empty(1, 3, 2, 2)
    for dims, inv, zp, words in (((1, 4, 2, 2, 3, 0, 1), 1.0, 0, "stride"), ((1, 4, 2, 2, 3, 1, 1), 1.0, 300, "zero_point"),
                                 ((1, 4, 2, 2, 3, 1, 1), 0.0, 0, "input_scale_inv")):
        err = lib.bidrn_int8_pointwise((ctypes.c_int64 * 7)(*dims), x.data_ptr(), w.data_ptr(), s.data_ptr(),
                                       b.data_ptr(), b.data_ptr(), inv, zp, 0, out.data_ptr())
        assert err is not None and words in err.decode()


class _Pointwise(nn.Module):
    def __init__(self, args):
        super().__init__()
        for name, t in zip(("weight", "weight_sum", "scale", "bias"), args[1:5]):
            self.register_buffer(name, t)
        self.inv, self.zp, self.stride, self.relu = args[5:]

    def forward(self, x):
        return torch.ops.bidrn.int8_pointwise(x, self.weight, self.weight_sum, self.scale, self.bias, self.inv,
                                              self.zp, self.stride, self.relu)


def test_pte_runs_the_op_in_executorch_bit_exact(tmp_path):
    rng, gen = random.Random(5), torch.Generator().manual_seed(5)
    args = random_case(rng, gen)
    module = _Pointwise(args).eval()
    path = tmp_path / "pointwise.pte"
    assert export.save_program(module, (args[0],), path) == {"int8_pointwise": 1}
    method, _ = export.load_program(path)
    got = method.execute([args[0]])[0]
    assert torch.equal(got.view(torch.int32), ops.int8_pointwise_reference(*args).view(torch.int32))


@pytest.mark.parametrize("stride", [1, 2])
def test_int8_block_residual_stays_within_the_rounding_bound_of_the_float_conv_and_bn(stride):
    """Int8Pointwise after calibration against the float 1 x 1 conv + BN it replaces. Per output, int8 moves
    it by at most sum_c |w_c| s_x / 2 (input rounding) + sum_c |q_c - z| s_x s_w / 2 (weight rounding)."""
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(48, 40, 1, stride=stride, bias=False), nn.BatchNorm2d(40)
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    conv.eval(), bn.eval()
    calib = [torch.randn(2, 48, 12, 10) for _ in range(3)]
    module = export.Int8Pointwise(conv, bn)
    for x in calib:
        module(x)
    module.freeze()
    x = calib[0]
    with torch.no_grad():
        want = bn(conv(x))
        got = module(x)
        w_eff = conv.weight.flatten(1) * (bn.weight / torch.sqrt(bn.running_var + bn.eps))[:, None]
    x_scale = 1.0 / module.input_scale_inv
    w_scale = module.scale / x_scale
    q = ops.quantize_int8_reference(x[:, :, ::stride, ::stride], module.input_scale_inv, module.input_zero_point)
    bound = (w_eff.abs().sum(1).view(1, -1, 1, 1) * x_scale / 2
             + w_scale.view(1, -1, 1, 1) / 2 * x_scale * (q.float() - module.input_zero_point).abs().sum(1, keepdim=True))
    assert got.shape == want.shape
    assert ((got - want).abs() <= bound * 1.01 + 1e-5).all()
    assert (got - want).abs().mean() < 0.1 * bound.mean()  # errors mostly cancel: far below the worst case
    assert not hasattr(module, "weight_float")  # only the int8 weights travel into the program


def test_freeze_without_calibration_says_what_to_do():
    with pytest.raises(export.ExportError, match="calibration"):
        export.Int8Pointwise(nn.Conv2d(4, 8, 1)).freeze()


def test_auto_lowering_takes_the_op_only_where_its_kernel_is_fast():
    """--int8-pointwise auto: the op on AMX, AVX-512 VNNI and NEON; XNNPACK where the op would run its
    AVX2 or scalar block kernel (3-5x slower than XNNPACK's int8 GEMM, docs/kernels.md)."""
    expected = {"amx": "amx", "avx2": "avx2", "scalar": "scalar", "neon_dotprod": "neon_dotprod", "neon": "neon"}
    for path in kernel_library.supported_paths():
        with kernel_library.using_path(path):
            kernel = kernel_library.int8_pointwise_kernel()
            assert kernel == expected.get(path, kernel) and kernel.startswith(path)
            assert export.int8_pointwise_is_fast() == (kernel in ("amx", "avx512_vnni", "neon_dotprod", "neon"))
    with kernel_library.using_path("scalar"):
        assert not export.int8_pointwise_is_fast()


def test_kernel_bench_times_the_block_residuals_bidrn_runs():
    """layer_shapes.BLOCK_RESIDUALS (the br_* rows of `bidrn bench kernels`) are the block-residual convs of
    the bidrn network, input size included: each conv's input as a forward pre-hook sees it."""
    from bidrn import create_model
    from mobile_export.layer_shapes import BLOCK_RESIDUALS

    model = create_model("bidrn").eval()
    prepared, _ = export.prepare_for_export(model, body_model=False)
    seen = []

    def record(module, args):
        x, conv = args[0], module.conv if isinstance(module, export.SubsampledPointwise) else module
        seen.append((x.shape[0], conv.in_channels, conv.out_channels, x.shape[2], x.shape[3], module.stride[0]))

    for block in prepared.modules():
        if isinstance(block, export.FusedBlock) and isinstance(block.block_residual, nn.Sequential):
            block.block_residual[0].register_forward_pre_hook(record)
    with torch.no_grad():
        prepared(export.example_image(model.cfg))
    want = [(l.batch, l.in_channels, l.out_channels, l.height, l.width, l.stride) for l in BLOCK_RESIDUALS]
    assert sorted(seen) == sorted(want)


def test_kernel_bench_times_the_deconv3_bidrn_runs_as_int8(tmp_path):
    """layer_shapes.INT8_DECONV (a row of `bidrn bench kernels`) is BoxNet's phased deconv3 of the bidrn
    network, input size included, and its bench program is one bidrn::int8_conv_transpose2d, bit-exact
    against the op's reference."""
    from bidrn import create_model
    from mobile_export import bench_kernels
    from mobile_export.deconv import PhasedConvTranspose2d
    from mobile_export.layer_shapes import INT8_DECONV as layer

    model = create_model("bidrn").eval()
    prepared, _ = export.prepare_for_export(model, body_model=False)
    seen = []
    for m in prepared.modules():
        if isinstance(m, PhasedConvTranspose2d):
            m.register_forward_pre_hook(lambda mod, args: seen.append(
                (args[0].shape[0], args[0].shape[1], mod.convs[0].out_channels, *args[0].shape[2:],
                 *mod.kernel_size, *mod.stride, *mod.padding)))
    with torch.no_grad():
        prepared(export.example_image(model.cfg))
    k, s, p = (layer.kernel,) * 2, (layer.stride,) * 2, (layer.padding,) * 2
    assert seen == [(layer.batch, layer.in_channels, layer.out_channels, layer.height, layer.width, *k, *s, *p)]
    x = bench_kernels._example_input(layer)
    module = bench_kernels.int8_module(layer, x)
    path = tmp_path / "deconv3.pte"
    assert export.save_program(module, (x,), path) == {"int8_conv_transpose2d": 1}
    got = export.load_program(path)[0].execute([x])[0]
    want = ops.int8_conv_transpose2d_reference(x, module.weight, module.weight_sum, module.scale, module.bias,
                                               module.input_scale_inv, module.input_zero_point, list(k), list(s),
                                               list(p), module.relu)
    assert got.shape == (1, layer.out_channels, *layer.out_hw)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def test_two_threads_split_the_work_and_keep_every_bit(tmp_path):
    """The op on ExecuTorch's threadpool with 2 threads (set before any program loads, hence a child
    process), on every path: quantization and GEMM items split across threads, the same bits."""
    g = torch.Generator().manual_seed(9)
    weight = torch.randint(-127, 128, (72, 40), generator=g, dtype=torch.int8)
    args = (torch.randn(2, 40, 33, 29, generator=g), weight, weight.int().sum(1, dtype=torch.int32),
            torch.rand(72, generator=g) * 1e-3, torch.randn(72, generator=g), 7.5, 3, [2, 1], True)
    path = tmp_path / "pointwise.pte"
    export.save_program(_Pointwise(args).eval(), (args[0],), path)
    assert_bit_exact_on_two_threads(path, args[0], ops.int8_pointwise_reference(*args), tmp_path)


class _Head(nn.Module):
    """A rotation head's Sequential(1 x 1 conv, BN, ReLU), a bare 1 x 1 conv and a 3 x 3 conv (left alone)."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.heatmap = nn.Conv2d(24, 5, 1)
        self.other = nn.Conv2d(5, 5, 3, padding=1)

    def forward(self, x):
        return self.other(self.heatmap(self.block(x)))


def test_head_convs_with_bn_and_relu_become_one_op_each():
    torch.manual_seed(1)
    head = _Head().eval()
    head.block[1].running_mean.uniform_(-0.2, 0.2), head.block[1].running_var.uniform_(0.5, 1.5)
    calib = [torch.randn(1, 16, 9, 7) for _ in range(3)]
    with torch.no_grad():
        want = head(calib[0])
    quantized = copy.deepcopy(head)
    assert export.quantize_own_int8_ops(quantized, calib) == (2, 0)
    assert [type(m).__name__ for m in quantized.block] == ["Int8Pointwise", "Identity", "Identity"]
    assert quantized.block[0].relu and not quantized.heatmap.relu and type(quantized.other) is nn.Conv2d
    with torch.no_grad():
        inner = quantized.block(calib[0])
        got = quantized(calib[0])
    assert (inner >= 0).all() and (inner == 0).any()  # the ReLU ran inside the op
    assert (got - want).abs().max() < 0.05 * want.abs().max()  # int8 rounding, two layers deep


def test_export_summary_counts_the_int8_pointwise_convs():
    report = export.ExportReport(model="bidrn", path="m.pte", bytes=1, int8=True, input_shape=[1, 3, 512, 384],
                                 outputs=[], output_shapes={}, body_model=False, export_seconds=1.0,
                                 stats={"int8_pointwise_convs": 18}, ops_outside_xnnpack={"int8_pointwise": 18})
    assert "int8 1x1 convs as bidrn::int8_pointwise: 18" in report.summary()
    report.int8 = False
    assert "int8_pointwise:" not in report.summary()


# ---------------------------------------------------------------- int8_conv_transpose2d

def test_phase_weights_pack_each_kernel_tap_once_and_unpack_back():
    w = torch.arange(6 * 5 * 4 * 4, dtype=torch.float64).view(6, 5, 4, 4)
    packed = ops.pack_phase_weights(w, (2, 2), (1, 1))
    assert packed.shape == (4 * 5, 4 * 6)  # 4 phases x O, 2 x 2 taps x C
    assert sorted(packed.flatten().tolist()) == w.flatten().tolist()
    assert torch.equal(ops.unpack_phase_weights(packed, 6, (4, 4), (2, 2), (1, 1)), w)
    # phase (0, 0) reads kernel rows 3 then 1 (input offsets -1, 0): row 0, tap (0, 0) is w[c, o, 3, 3]
    assert torch.equal(packed[0, :6], w[:, 0, 3, 3])


def deconv_case(gen, n, c, h, w, o, k, s, p, relu):
    x = torch.randn(n, c, h, w, generator=gen) * 2
    x.view(-1)[torch.randint(0, x.numel(), (2,), generator=gen)] = torch.tensor([float("nan"), -1e9])
    taps = (k // s) ** 2
    weight = torch.randint(-128, 128, (s * s * o, taps * c), generator=gen, dtype=torch.int8)
    return (x, weight, weight.int().sum(1, dtype=torch.int32), torch.rand(o, generator=gen) * 1e-3,
            torch.randn(o, generator=gen), 9.0, -5, [k, k], [s, s], [p, p], relu)


# (1, 16, 3, 24, ...) and (2, 8, 2, 32, ...) have input rows of 24 and 32 pixels: runs of 16 pixels of a phase
# within one input row and across two rows. The last five take the `amx` path's own kernel (channels a multiple of
# 64, outputs of 32, rows of 8+ pixels): BoxNet's 256 -> 256 at 24 wide (groups of 16 positions crossing row ends,
# halves of 8 pixels within a row and across one), two words of channels in a batch of two at 9 wide, one tap a
# phase (k2 s2 p0), three taps (k6 s2 p2), and 8 wide (the narrowest it takes).
DECONV_SHAPES = [(1, 8, 5, 7, 3, 4, 2, 1, True), (2, 12, 6, 4, 33, 4, 2, 1, False), (1, 4, 3, 3, 17, 3, 1, 1, True),
                 (1, 64, 8, 6, 64, 4, 2, 1, True), (2, 20, 4, 5, 9, 2, 2, 0, False), (1, 16, 3, 24, 5, 4, 2, 1, True),
                 (2, 8, 2, 32, 3, 4, 2, 1, False), (1, 256, 6, 24, 256, 4, 2, 1, True),
                 (2, 128, 5, 9, 64, 4, 2, 1, False), (1, 64, 3, 16, 32, 2, 2, 0, True),
                 (1, 64, 4, 10, 96, 6, 2, 2, False), (1, 64, 7, 8, 32, 4, 2, 1, True)]


@pytest.mark.parametrize("path", X86_AND_SCALAR_PATHS)
def test_transposed_conv_is_bit_exact_on_every_path(path):
    require_path(path)
    gen = torch.Generator().manual_seed(21)
    cases = [deconv_case(gen, *shape) for shape in DECONV_SHAPES]
    lib = kernel_library.load()
    outputs = []
    with kernel_library.using_path(path):
        for args in cases:
            x, weight, wsum, scale, bias, inv, zp, k, s, p, relu = args
            out = torch.empty(x.shape[0], scale.shape[0], x.shape[2] * s[0], x.shape[3] * s[1])
            dims = (ctypes.c_int64 * 8)(*x.shape, scale.shape[0], k[0], s[0], p[0])
            err = lib.bidrn_int8_conv_transpose2d(dims, x.data_ptr(), weight.data_ptr(), wsum.data_ptr(),
                                                  scale.data_ptr(), bias.data_ptr(), inv, zp, int(relu), out.data_ptr())
            assert err is None, err.decode()
            outputs.append(out)
    for shape, args, got in zip(DECONV_SHAPES, cases, outputs):
        want = ops.int8_conv_transpose2d_reference(*args)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), f"{path} {shape}"


def test_amx_transposed_conv_follows_new_weights_at_the_same_address():
    """The `amx` path keeps each deconv's weights as expanded B tiles from call to call (bconv_amx.cpp,
    cached_tiles), found by the weights' address: weights rewritten in place must give the new deconv."""
    require_path("amx")
    gen = torch.Generator().manual_seed(23)
    args = deconv_case(gen, 1, 64, 3, 16, 32, 4, 2, 1, True)
    x, weight, wsum, scale, bias, inv, zp, k, s, p, relu = args
    lib = kernel_library.load()
    with kernel_library.using_path("amx"):
        for _ in range(3):
            out = torch.empty(1, 32, 6, 32)
            err = lib.bidrn_int8_conv_transpose2d((ctypes.c_int64 * 8)(*x.shape, 32, 4, 2, 1), x.data_ptr(),
                                                  weight.data_ptr(), wsum.data_ptr(), scale.data_ptr(),
                                                  bias.data_ptr(), inv, zp, 1, out.data_ptr())
            assert err is None, err.decode()
            want = ops.int8_conv_transpose2d_reference(x, weight, wsum, scale, bias, inv, zp, k, s, p, relu)
            assert torch.equal(out.view(torch.int32), want.view(torch.int32))
            address = weight.data_ptr()
            weight.copy_(torch.randint(-128, 128, weight.shape, generator=gen, dtype=torch.int8))
            wsum.copy_(weight.int().sum(1, dtype=torch.int32))
            assert weight.data_ptr() == address


def test_transposed_conv_refuses_a_kernel_that_is_not_stride_plus_twice_the_padding():
    lib = kernel_library.load()
    x, w, s, out = torch.zeros(1, 4, 3, 3), torch.zeros(4, 4, dtype=torch.int8), torch.zeros(4, dtype=torch.int32), \
        torch.empty(1, 1, 6, 6)
    err = lib.bidrn_int8_conv_transpose2d((ctypes.c_int64 * 8)(1, 4, 3, 3, 1, 3, 2, 1), x.data_ptr(), w.data_ptr(),
                                          s.data_ptr(), out.data_ptr(), out.data_ptr(), 1.0, 0, 0, out.data_ptr())
    assert err is not None and "stride + 2 padding" in err.decode()


def test_transposed_conv_refuses_a_stride_past_16_before_reading_its_phase_tables():
    # kernel 17 = stride 17 + 2 x 0 is a valid geometry with one tap per phase, but 17 phases: the kernel's
    # phase tables hold 16, so the check must stop it (it used to pass and write past them).
    lib = kernel_library.load()
    x, w, s, out = torch.zeros(1, 1, 1, 1), torch.zeros(17 * 17, dtype=torch.int8), \
        torch.zeros(17 * 17, dtype=torch.int32), torch.empty(17 * 17)
    err = lib.bidrn_int8_conv_transpose2d((ctypes.c_int64 * 8)(1, 1, 1, 1, 1, 17, 17, 0), x.data_ptr(), w.data_ptr(),
                                          s.data_ptr(), out.data_ptr(), out.data_ptr(), 1.0, 0, 0, out.data_ptr())
    assert err is not None and "stride must be 1 to 16" in err.decode()


def test_int8_deconv_module_runs_the_phased_deconv_with_its_bn_and_relu():
    """export.Int8ConvTranspose from BoxNet's kind of deconv (k4 s2 p1, BN and ReLU folded into the phases):
    after calibration its op equals the reference on its own parameters, bit for bit, and stays within int8's
    error of the float deconv + BN + ReLU."""
    from mobile_export.deconv import PhasedConvTranspose2d, fold_into_phases

    torch.manual_seed(3)
    seq = nn.Sequential(nn.ConvTranspose2d(24, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.ReLU()).eval()
    seq[1].running_mean.uniform_(-0.3, 0.3), seq[1].running_var.uniform_(0.5, 1.5)
    calib = [torch.randn(1, 24, 6, 5) for _ in range(3)]
    with torch.no_grad():
        want = seq(calib[0])
    phased = copy.deepcopy(seq)
    phased[0] = PhasedConvTranspose2d(phased[0])
    assert fold_into_phases(phased) == 1
    assert export.quantize_own_int8_ops(phased, calib) == (0, 1)
    module = phased[0]
    assert isinstance(module, export.Int8ConvTranspose) and module.relu and not hasattr(module, "weight_float")
    with torch.no_grad():
        got = phased(calib[0])
    ref = ops.int8_conv_transpose2d_reference(calib[0], module.weight, module.weight_sum, module.scale, module.bias,
                                              module.input_scale_inv, module.input_zero_point, [4, 4], [2, 2],
                                              [1, 1], True)
    assert torch.equal(got, ref)
    assert got.shape == want.shape and (got == 0).any()
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_transposed_conv_pte_runs_in_executorch_bit_exact_on_one_and_two_threads(tmp_path):
    # 64 -> 32 channels at 12 wide: the `amx` path's own kernel where the CPU has AMX (its work items and
    # input fill split across the two threads), the generic phases elsewhere.
    gen = torch.Generator().manual_seed(8)
    args = deconv_case(gen, 1, 64, 5, 12, 32, 4, 2, 1, True)

    class Deconv(nn.Module):
        def __init__(self):
            super().__init__()
            for name, t in zip(("weight", "weight_sum", "scale", "bias"), args[1:5]):
                self.register_buffer(name, t)

        def forward(self, x):
            return torch.ops.bidrn.int8_conv_transpose2d(x, self.weight, self.weight_sum, self.scale, self.bias,
                                                         *args[5:])

    path = tmp_path / "deconv.pte"
    assert export.save_program(Deconv().eval(), (args[0],), path) == {"int8_conv_transpose2d": 1}
    method, _ = export.load_program(path)
    got = method.execute([args[0]])[0]
    want = ops.int8_conv_transpose2d_reference(*args)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert_bit_exact_on_two_threads(path, args[0], want, tmp_path)


def test_export_target_decides_which_int8_ops_are_ours(tmp_path):
    """`--target aarch64` chooses for an Arm phone's NEON dotprod kernels whatever machine exports: the 1 x 1 convs
    (and the deconv) as bidrn:: int8 ops, the stems with XNNPACK (FAST_INT8_STEM is the tile unit only); 'host'
    asks this machine's kernel. The command line takes exactly export.TARGETS."""
    from bidrn.cli import build_parser

    assert export.int8_kernel("aarch64") == "neon_dotprod"
    assert export.int8_pointwise_is_fast("aarch64") and not export.int8_stem_is_fast("aarch64")
    assert export.int8_kernel("host") == kernel_library.int8_pointwise_kernel()
    with pytest.raises(ValueError, match="target must be one of host, aarch64; got 'arm'"):
        export.int8_kernel("arm")
    with pytest.raises(ValueError, match="target must be one of"):
        export.export_pte("bidrn-tiny", tmp_path / "never.pte", int8=True, target="arm")
    assert not list(tmp_path.iterdir())
    argv = ["export", "bidrn-tiny", "--int8", "--out", str(tmp_path / "m.pte")]
    for target in export.TARGETS:
        assert build_parser().parse_args(argv + ["--target", target]).target == target
    assert build_parser().parse_args(argv).target == "host"
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv + ["--target", "arm"])
