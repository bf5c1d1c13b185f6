"""bidrn::int8_conv2d (mobile_export/kernels/int8_pointwise.h, ops.int8_conv2d_reference): an int8 conv of any
kernel, stride and padding with the float epilogue and a max pool, which the --int8 export runs the ResNet stems
(7 x 7 / 2 conv, BN, 3 x 3 / 2 max pool) with on the tile unit (export.Int8Stem). Every kernel path against the
reference, the op in ExecuTorch's runtime on one and two threads, and the module within int8's error of the float
stem."""
from __future__ import annotations

import copy
import ctypes

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mobile_export import export, kernel_library, ops
from mobile_export.stems import SpaceToDepthConv2d
from test_kernels import X86_AND_SCALAR_PATHS, assert_bit_exact_on_two_threads, require_path


def conv_case(gen, n, c, h, w, o, k, s, p, relu, pool):
    """Arguments of the op: input with a NaN and a saturating value, int8 weights O x (C kh kw), their sums."""
    x = torch.randn(n, c, h, w, generator=gen) * 2
    x.view(-1)[torch.randint(0, x.numel(), (2,), generator=gen)] = torch.tensor([float("nan"), -1e9])
    weight = torch.randint(-128, 128, (o, c * k[0] * k[1]), generator=gen, dtype=torch.int8)
    pk, ps, pp = pool
    return (x, weight, weight.int().sum(1, dtype=torch.int32), torch.rand(o, generator=gen) * 1e-3 - 2e-4,
            torch.randn(o, generator=gen), 9.0, -5, list(k), list(s), list(p), relu, [pk, pk], [ps, ps], [pp, pp])


# (n, c, h, w, o, kernel, stride, padding, relu, (pool kernel, stride, padding)): the stems' geometry at an odd
# size, a strided conv without pool, a rectangular kernel with unequal strides, a pool of stride 1, more than
# 64 output channels, an input smaller than 16 pixels a row.
CONV_SHAPES = [
    (2, 3, 37, 29, 16, (7, 7), (2, 2), (3, 3), False, (3, 2, 1)),
    (1, 5, 12, 11, 33, (3, 3), (2, 2), (1, 1), True, (1, 1, 0)),
    (1, 4, 15, 17, 8, (5, 3), (2, 1), (2, 0), False, (2, 2, 0)),
    (2, 2, 9, 10, 7, (2, 4), (3, 2), (0, 1), True, (3, 1, 1)),
    (1, 3, 64, 48, 70, (7, 7), (2, 2), (3, 3), False, (3, 2, 1)),
    (1, 1, 6, 5, 3, (3, 3), (1, 1), (1, 1), False, (3, 2, 1)),
]


def run_c(lib, args) -> tuple[torch.Tensor, str | None]:
    x, weight, wsum, scale, bias, inv, zp, k, s, p, relu, pk, ps, pp = args
    out = torch.empty_like(ops.int8_conv2d_fake(*args))
    dims = (ctypes.c_int64 * 16)(*x.shape, scale.shape[0], k[0], k[1], s[0], s[1], p[0], p[1], pk[0], ps[0], pp[0],
                                 int(relu), 0)
    err = lib.bidrn_int8_conv2d(dims, x.data_ptr(), weight.data_ptr(), wsum.data_ptr(), scale.data_ptr(),
                                bias.data_ptr(), inv, zp, out.data_ptr())
    return out, err.decode() if err else None


def test_reference_is_pytorchs_conv_of_the_quantized_input_then_the_max_pool():
    gen = torch.Generator().manual_seed(0)
    args = conv_case(gen, 1, 3, 11, 9, 4, (3, 3), (2, 2), (1, 1), False, (3, 2, 1))
    x, weight, _, scale, bias, inv, zp = args[:7]
    x = x.nan_to_num(0.0).clamp(-10, 10)  # no NaN or saturation: the plain formula below
    args = (x,) + args[1:]
    q = torch.clamp(torch.round(x * inv) + zp, -128, 127)
    acc = F.conv2d(q.double() - zp, weight.double().view(4, 3, 3, 3), stride=2, padding=1)  # zero point padding
    z = acc.float() * scale.view(1, 4, 1, 1) + bias.view(1, 4, 1, 1)
    assert torch.equal(ops.int8_conv2d_reference(*args), F.max_pool2d(z, 3, 2, 1))
    assert ops.int8_conv2d_reference(*args).shape == ops.int8_conv2d_fake(*args).shape == (1, 4, 3, 3)


@pytest.mark.parametrize("path", X86_AND_SCALAR_PATHS)
def test_every_path_equals_the_reference(path):
    """Values equal (torch.equal: of a +0 and a -0 tying for a pool window's maximum either may come out)."""
    require_path(path)
    gen = torch.Generator().manual_seed(11)
    cases = [conv_case(gen, *shape) for shape in CONV_SHAPES]
    lib = kernel_library.load()
    with kernel_library.using_path(path):
        outputs = [run_c(lib, args) for args in cases]
    for shape, args, (got, err) in zip(CONV_SHAPES, cases, outputs):
        assert err is None, err
        assert torch.equal(got, ops.int8_conv2d_reference(*args)), f"{path} {shape}"


def test_bad_geometry_gets_a_sentence_not_a_crash():
    lib = kernel_library.load()
    gen = torch.Generator().manual_seed(1)
    args = conv_case(gen, 1, 3, 8, 8, 4, (3, 3), (2, 2), (1, 1), False, (3, 2, 1))
    bad_pool = args[:11] + ([3, 3], [2, 2], [2, 2])  # pool padding past half its kernel
    assert "half the pool kernel" in run_c(lib, bad_pool)[1]
    too_small = (torch.zeros(1, 3, 2, 2),) + args[1:7] + ([7, 7], [2, 2], [0, 0], False, [1, 1], [1, 1], [0, 0])
    out = torch.empty(1, 4, 1, 1)
    dims = (ctypes.c_int64 * 16)(1, 3, 2, 2, 4, 7, 7, 2, 2, 0, 0, 1, 1, 0, 0, 0)
    err = lib.bidrn_int8_conv2d(dims, too_small[0].data_ptr(), args[1].data_ptr(), args[2].data_ptr(),
                                args[3].data_ptr(), args[4].data_ptr(), 9.0, -5, out.data_ptr())
    assert err is not None and b"at least the kernel" in err


def test_pte_runs_the_op_in_executorch_on_one_and_two_threads(tmp_path):
    gen = torch.Generator().manual_seed(8)
    args = conv_case(gen, 2, 3, 40, 36, 16, (7, 7), (2, 2), (3, 3), False, (3, 2, 1))

    class Stem(nn.Module):
        def __init__(self):
            super().__init__()
            for name, t in zip(("weight", "weight_sum", "scale", "bias"), args[1:5]):
                self.register_buffer(name, t)

        def forward(self, x):
            return torch.ops.bidrn.int8_conv2d(x, self.weight, self.weight_sum, self.scale, self.bias, *args[5:])

    path = tmp_path / "stem.pte"
    assert export.save_program(Stem().eval(), (args[0],), path) == {"int8_conv2d": 1}
    method, _ = export.load_program(path)
    want = ops.int8_conv2d_reference(*args)
    assert torch.equal(method.execute([args[0]])[0].view(torch.int32), want.view(torch.int32))
    assert_bit_exact_on_two_threads(path, args[0], want, tmp_path)


def stem(width: int = 16, act: nn.Module | None = None) -> nn.Sequential:
    """A ResNet stem as bidrn/models/resnet.py builds it (BiDRN's: no activation), with BN statistics."""
    torch.manual_seed(3)
    seq = nn.Sequential(nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
                        act or nn.Identity(), nn.MaxPool2d(3, stride=2, padding=1)).eval()
    seq[1].running_mean.uniform_(-0.3, 0.3), seq[1].running_var.uniform_(0.5, 1.5)
    seq[1].weight.data.uniform_(-1.5, 1.5)  # negative scales too: the pool must follow the BN, not precede it
    return seq


def test_space_to_depth_stem_folds_back_to_its_conv():
    conv = stem()[0]
    weight, bias, geometry = export.plain_conv_weight(SpaceToDepthConv2d(conv))
    assert torch.equal(weight, conv.weight.detach()) and bias is None
    assert tuple(geometry.stride) == (2, 2) and tuple(geometry.padding) == (3, 3)


@pytest.mark.parametrize("space_to_depth", [False, True])
def test_int8_stem_runs_conv_bn_and_pool_as_one_op_within_int8_error(space_to_depth):
    """export.quantize_own_int8_ops with stems: the stem Sequential becomes one Int8Stem, whose op equals the
    reference on its own parameters, bit for bit, and stays within int8's error of the float stem (the
    int8 export has already rewritten the conv for XNNPACK's space-to-depth: that form too)."""
    float_stem = stem()

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = copy.deepcopy(float_stem)
            if space_to_depth:
                self.stem[0] = SpaceToDepthConv2d(self.stem[0])

        def forward(self, x):
            return self.stem(x)

    calib = [torch.randn(1, 3, 32, 24) for _ in range(3)]
    model = Encoder().eval()
    assert export.quantize_own_int8_ops(model, calib, stems=True) == (0, 0)
    assert export.count_int8_stems(model) == 1
    module = model.stem
    assert isinstance(module, export.Int8Stem) and not module.relu and not hasattr(module, "weight_float")
    with torch.no_grad():
        got, want = model(calib[0]), float_stem(calib[0])
    ref = ops.int8_conv2d_reference(calib[0], module.weight, module.weight_sum, module.scale, module.bias,
                                    module.input_scale_inv, module.input_zero_point, [7, 7], [2, 2], [3, 3], False,
                                    [3, 3], [2, 2], [1, 1])
    assert torch.equal(got, ref)
    assert got.shape == want.shape == (1, 16, 8, 6)
    # int8 input and per-channel weights over 147 taps: measured 0.6 % of the output range at most
    assert (got - want).abs().max() < 0.03 * want.abs().max()


def test_a_stem_with_another_activation_stays_with_xnnpack():
    model = nn.Sequential()
    model.add_module("stem", stem(act=nn.PReLU(16)))
    assert export._stem_parts(model.stem) is None
    assert export.quantize_own_int8_ops(model, [torch.randn(1, 3, 16, 16)], stems=True) == (0, 0)
    assert export.count_int8_stems(model) == 0 and type(model.stem) is nn.Sequential
    relu = stem(act=nn.ReLU())
    assert export._stem_parts(relu)[2] is True


def test_stems_follow_the_measured_kernels():
    """The int8 export takes bidrn::int8_conv2d for the stems only where it measured faster than XNNPACK
    (export.FAST_INT8_STEM); on other paths the stems stay with XNNPACK."""
    for path in kernel_library.supported_paths():
        with kernel_library.using_path(path):
            assert export.int8_stem_is_fast() == (kernel_library.int8_pointwise_kernel() in export.FAST_INT8_STEM)
    assert export.FAST_INT8_STEM == ("amx",)
