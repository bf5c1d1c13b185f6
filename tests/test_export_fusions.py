"""The epilogue fusions of the bidrn:: ops (mobile_export/ops.py): a channel window of the input
(``in_offset``), a Hardtanh'ed channel window of the residual, FDR's running sum (``partial``, and FDR's k
branches in one op, ``branches``) and the block residual of eq. 11 (``shortcut``). Each is checked against eq. 5-11 written out with PyTorch ops, and the C++
kernels against the reference bit for bit on every kernel path."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from bidrn.models.resnet import BiDRBottleneck
from bidrn.models.config import EncoderConfig
from bidrn.nn.layers import BinaryConv2d, RPReLU
from mobile_export import export, kernel_library
from test_export_pte import trained_like


def _random_rprelu_and_post(packed: export.PackedBinaryLayer, g: torch.Generator) -> None:
    o = packed.out_channels
    packed.set_rprelu(0.3 * torch.randn(o, generator=g), 0.2 * torch.randn(o, generator=g),
                      0.2 * torch.randn(o, generator=g))
    packed.register_buffer("post", torch.stack([0.5 + torch.rand(o, generator=g), 0.1 * torch.randn(o, generator=g)]))


class WindowedOp(torch.nn.Module):
    """Reads input channels [32, 64) and adds Hardtanh of residual channels [64, 96), repeated to 64 outputs."""

    def __init__(self, packed):
        super().__init__()
        self.packed = packed

    def forward(self, x, partial, shortcut):
        return self.packed(x, x, in_offset=32, residual_offset=64, residual_channels=32, clamp_residual=True,
                           partial=partial, shortcut=shortcut)


@pytest.mark.parametrize("batch", [1, 2])
def test_offsets_clamp_partial_and_shortcut_follow_the_equations_on_every_kernel_path(tmp_path, batch):
    g = torch.Generator().manual_seed(batch)
    conv = BinaryConv2d(32, 64, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    packed = export.pack_layer("conv", conv)
    _random_rprelu_and_post(packed, g)
    x = 2 * torch.randn(batch, 96, 9, 11, generator=g)  # |x| > 1 often, so the clamp matters
    x[0, 70, 0, :3] = torch.tensor([1.0, -1.0, float("nan")])
    partial, shortcut = (torch.randn(batch, 64, 9, 11, generator=g) for _ in range(2))
    module = WindowedOp(packed).eval()
    with torch.no_grad():
        got = module(x, partial, shortcut)
        # Eq. 5 on the window, RPReLU (eq. 6), + Hardtanh(a) (eq. 3, 7), + the running sum, BN, + block residual.
        acc = F.conv2d(torch.where(x[:, 32:64] >= 0, 1.0, -1.0), torch.where(conv.weight >= 0, 1.0, -1.0), padding=1)
        beta, gamma, zeta = (p.view(1, -1, 1, 1) for p in packed.rprelu)
        y = acc * packed.scale.view(1, -1, 1, 1) + packed.bias.view(1, -1, 1, 1)
        y = torch.where(y - gamma > 0, y - gamma, beta * (y - gamma)) + zeta
        y = partial + (y + F.hardtanh(x[:, 64:96]).repeat(1, 2, 1, 1))
        want = y * packed.post[0].view(1, -1, 1, 1) + packed.post[1].view(1, -1, 1, 1) + shortcut
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    # x channel 70 is residual channel 6, which outputs 6 and 38 add: the NaN reaches exactly those.
    assert got[0, :, 0, 2].isnan().nonzero().flatten().tolist() == [6, 38]
    path = tmp_path / "window.pte"
    export.save_program(module, (x, partial, shortcut), path)
    method, _ = export.load_program(path)
    for kernel_path in kernel_library.supported_paths():
        with kernel_library.using_path(kernel_path):
            out = method.execute([x, partial, shortcut])[0]
        torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True, msg=kernel_path)


@pytest.mark.parametrize("in_ch, stride", [(128, 1), (64, 2)])  # identity block (FDR k = 4), first block (k = 2)
def test_a_bottleneck_runs_as_bidrn_ops_alone_bit_exact_in_executorch(tmp_path, in_ch, stride):
    torch.manual_seed(0)
    cfg = EncoderConfig(method="bidrn", depth=50, width=32)
    block = trained_like(BiDRBottleneck(in_ch, 32, stride, cfg))
    for m in block.modules():
        if isinstance(m, RPReLU):
            for p in (m.beta, m.gamma, m.zeta):
                p.data.copy_(0.2 * torch.randn_like(p))
    fused = torch.nn.Sequential(copy.deepcopy(block)).eval()
    stats = export.convert_binary_layers(fused)
    assert (stats.fused_lcr, stats.fused_block_residuals) == (3, 1)
    x = 1.5 * torch.randn(2, in_ch, 12, 10)
    with torch.no_grad():
        want = fused(x)
        # Against eager: only the BN's rounding differs (ATen's (x - mean) * invstd * w + b vs x * s + t).
        torch.testing.assert_close(want, block(x), rtol=1e-5, atol=1e-5)
    path = tmp_path / "block.pte"
    outside = export.save_program(fused, x, path)
    method, _ = export.load_program(path)
    if stride == 1:  # identity BR: FDR (4 branches, one op), the 3x3 LCR and the FUR with the block add
        assert outside == {"binary_conv2d": 3}
        for kernel_path in kernel_library.supported_paths():  # nothing else, so bit for bit on every path
            with kernel_library.using_path(kernel_path):
                assert torch.equal(method.execute([x])[0], want), kernel_path
    else:  # FDR (2 branches) and the FUR; the DScR keeps its Hardtanh and pool, the BR conv runs on XNNPACK
        assert outside.get("binary_conv2d") == 3 and "hardtanh" not in outside and "clamp" not in outside
        torch.testing.assert_close(method.execute([x])[0], want, rtol=1e-5, atol=1e-5)


class Branched(torch.nn.Module):
    """k branches of C channels read from channel 8 of x; residual chunks from channel 4 of r."""

    def __init__(self, packed, channels):
        super().__init__()
        self.packed, self.channels = packed, channels

    def forward(self, x, r, shortcut):
        return self.packed(x, r, in_offset=8, residual_offset=4, residual_channels=self.channels,
                           clamp_residual=True, shortcut=shortcut)


# (C, k, H, W): AVX-512 sums up to 4 branches in registers (branch_tile: k = 2, 3, 4; one and two words per
# pixel; strips with a partial last tile); 5 branches go through the kernels one branch at a time.
@pytest.mark.parametrize("channels, k, h, w", [(24, 3, 7, 9), (64, 4, 13, 21), (128, 2, 9, 30), (70, 4, 5, 11),
                                               (16, 5, 6, 7)])
def test_branches_equal_the_chain_of_single_ops_on_every_kernel_path(tmp_path, channels, k, h, w):
    """FDR in one op (branches=k) is the eager chain out = b_0; out = out + b_i, then BN, then the shortcut."""
    g = torch.Generator().manual_seed(3)
    singles = []
    for _ in range(k):
        conv = BinaryConv2d(channels, channels, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        singles.append(export.pack_layer("conv", conv))
        _random_rprelu_and_post(singles[-1], g)
    post = singles[-1].post
    fused = export.PackedBinaryLayer("conv", torch.cat([p.weight for p in singles]),
                                     torch.cat([p.scale for p in singles]), torch.cat([p.bias for p in singles]),
                                     channels)
    fused.register_buffer("rprelu", torch.cat([p.rprelu for p in singles], dim=1))
    fused.register_buffer("post", post)
    fused.branches = k
    x = 2 * torch.randn(2, 8 + k * channels + 5, h, w, generator=g)
    r = 2 * torch.randn(2, 4 + k * channels, h, w, generator=g)
    shortcut = torch.randn(2, channels, h, w, generator=g)
    with torch.no_grad():
        out = None
        for i, p in enumerate(singles):
            last = i == k - 1
            p.register_buffer("post", post if last else None)
            out = p(x, r, in_offset=8 + channels * i, residual_offset=4 + channels * i, residual_channels=channels,
                    clamp_residual=True, partial=out, shortcut=shortcut if last else None)
        module = Branched(fused, channels).eval()
        assert torch.equal(module(x, r, shortcut), out)
    path = tmp_path / "branches.pte"
    export.save_program(module, (x, r, shortcut), path)
    method, _ = export.load_program(path)
    for kernel_path in kernel_library.supported_paths():
        with kernel_library.using_path(kernel_path):
            assert torch.equal(method.execute([x, r, shortcut])[0], out), kernel_path


@pytest.mark.parametrize("block, h, w", [("DScR", 12, 18), ("DSaR", 12, 18),
                                         ("DScR", 6, 64),  # output rows of 32: the contiguous window paths
                                         ("DScR", 4, 26)])  # rows of 13: AVX2 window path, last block partial
def test_downsampling_lcr_pools_its_residual_in_the_op_bit_exact_on_every_kernel_path(tmp_path, block, h, w):
    """DScR (eq. 8) / DSaR: BN(RPReLU(bconv_s2(a_f)) + AvgPool(a_f)) with a_f = Hardtanh(x), the clamp and the
    2 x 2 pool of the residual inside the op (``residual_pool=2``): no Hardtanh, pool or layout change runs."""
    from bidrn.nn.lcr import DSaR, DScR

    torch.manual_seed(4)
    module = trained_like(DScR(64) if block == "DScR" else DSaR(32, k=2))
    for m in module.modules():
        if isinstance(m, RPReLU):
            for p in (m.beta, m.gamma, m.zeta):
                p.data.copy_(0.2 * torch.randn_like(p))
    fused = torch.nn.Sequential(copy.deepcopy(module)).eval()
    export.convert_binary_layers(fused)
    assert fused[0].pool_in_op
    x = 2 * torch.randn(2, 64 if block == "DScR" else 32, h, w)
    odd = 2 * torch.randn(1, x.shape[1], 11, 13)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), module(x), rtol=1e-5, atol=1e-5)  # BN rounding only
        torch.testing.assert_close(fused(odd), module(odd), rtol=1e-5, atol=1e-5)  # odd size: pool outside
        x[0, 5, 3, 4] = float("nan")  # the op's sign(NaN) = -1; the pooled residual carries the NaN
        want = fused(x)
    path = tmp_path / "dscr.pte"
    assert export.save_program(fused, x, path) == {"binary_conv2d": 1}
    method, _ = export.load_program(path)
    for kernel_path in kernel_library.supported_paths():
        with kernel_library.using_path(kernel_path):
            torch.testing.assert_close(method.execute([x])[0], want, rtol=0, atol=0, equal_nan=True, msg=kernel_path)
