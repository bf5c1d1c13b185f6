"""The LCR family (eqs. 7-10) and BiDRB (eq. 11): structure, equations and parameter arithmetic."""
import pytest
import torch
from torch.nn import functional as F

from bidrn.models.config import EncoderConfig
from bidrn.models.resnet import BiDRBasic, BiDRBottleneck
from bidrn.nn import BinaryConv2d, RPReLU, sign
from bidrn.nn.lcr import DSaR, DScR, FDR, FUR, BaseLCR, PlainBinaryConv


def _binary_weights(module):
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, BinaryConv2d))


def _rprelu_params(module):
    return sum(p.numel() for m in module.modules() if isinstance(m, RPReLU) for p in m.parameters())


def _bconv_ref(conv, a):
    wb = conv.weight.abs().mean(dim=(1, 2, 3), keepdim=True) * sign(conv.weight)
    return F.conv2d(sign(a), wb, stride=conv.stride, padding=conv.padding)


def test_base_lcr_is_eq7():
    torch.manual_seed(0)
    m = BaseLCR(4, 3).eval()  # eval BN with fresh stats is the identity (up to eps)
    x = 2 * torch.randn(2, 4, 6, 5)
    a_f = x.clamp(-1, 1)  # eq. 3
    branch = m.branch
    expected = branch.act(_bconv_ref(branch.conv, a_f)) + a_f
    assert torch.allclose(m(x), expected / (1 + 1e-5) ** 0.5, atol=1e-5)


def test_dscr_adds_the_average_pooled_activation_eq8():
    torch.manual_seed(0)
    m = DScR(3).eval()
    x = torch.randn(1, 3, 8, 6)
    a_f = x.clamp(-1, 1)
    expected = m.branch.act(_bconv_ref(m.branch.conv, a_f)) + F.avg_pool2d(a_f, 2)
    assert m(x).shape == (1, 3, 4, 3)
    assert torch.allclose(m(x), expected / (1 + 1e-5) ** 0.5, atol=1e-5)


def test_fur_concatenates_k_residual_branches_eq9():
    torch.manual_seed(0)
    m = FUR(3, k=4).eval()
    x = torch.randn(1, 3, 5, 5)
    a_f = x.clamp(-1, 1)
    parts = [b.act(_bconv_ref(b.conv, a_f)) + a_f for b in m.branches]
    assert torch.allclose(m(x), torch.cat(parts, 1) / (1 + 1e-5) ** 0.5, atol=1e-5)


def test_fdr_sums_branches_over_channel_chunks_eq10():
    torch.manual_seed(0)
    m = FDR(2, k=3).eval()
    x = torch.randn(1, 6, 4, 4)
    a = x.clamp(-1, 1).chunk(3, dim=1)
    expected = sum(b.act(_bconv_ref(b.conv, c)) + c for b, c in zip(m.branches, a))
    assert torch.allclose(m(x), expected / (1 + 1e-5) ** 0.5, atol=1e-5)


def test_dsar_doubles_channels_and_halves_resolution():
    assert DSaR(8, k=2)(torch.randn(1, 8, 10, 6)).shape == (1, 16, 5, 3)


def test_lcr_modules_keep_the_binary_weights_of_the_conv_they_replace():
    c = 8
    # k-fold FUR/FDR/DSaR: k convs of C x C(x k x k) = the weights of one kC <-> C conv; RPReLU adds 3 per channel.
    assert _binary_weights(FUR(c, 4)) == 4 * c * c and _rprelu_params(FUR(c, 4)) == 3 * 4 * c
    assert _binary_weights(FDR(c, 4)) == 4 * c * c and _rprelu_params(FDR(c, 4)) == 3 * 4 * c
    assert _binary_weights(DSaR(c, 2)) == 2 * c * c * 9 and _rprelu_params(DSaR(c, 2)) == 3 * 2 * c
    assert _binary_weights(BaseLCR(c, 3)) == c * c * 9 and _rprelu_params(BaseLCR(c, 3)) == 3 * c
    assert _rprelu_params(PlainBinaryConv(c, 4 * c, 1)) == 0


@pytest.mark.parametrize("in_ch,width,stride,kinds", [
    (64, 64, 1, ("BaseLCR", "BaseLCR", "FUR")),  # stage 1, block 1
    (256, 64, 1, ("FDR", "BaseLCR", "FUR")),  # identity block: FDR k=4
    (256, 128, 2, ("FDR", "DScR", "FUR")),  # first block of stage 2: FDR k=2, stride-2 DScR
])
def test_bidrb_bottleneck_mapping(in_ch, width, stride, kinds):
    block = BiDRBottleneck(in_ch, width, stride, EncoderConfig())
    assert tuple(type(m).__name__ for m in block.chain) == kinds
    x = torch.randn(1, in_ch, 8, 8)
    assert block(x).shape == (1, 4 * width, 8 // stride, 8 // stride)


def test_bidrb_block_residual_variants():
    fp = BiDRBottleneck(256, 128, 2, EncoderConfig())
    assert isinstance(fp.block_residual[0], torch.nn.Conv2d)  # full-precision 1x1 conv + BN
    binary = BiDRBottleneck(256, 128, 2, EncoderConfig(block_residual="binary"))
    assert isinstance(binary.block_residual, PlainBinaryConv)
    assert BiDRBottleneck(256, 128, 2, EncoderConfig(block_residual="none")).block_residual is None
    assert isinstance(BiDRBottleneck(512, 128, 1, EncoderConfig()).block_residual, torch.nn.Identity)


def test_bidrb_basic_uses_dsar_when_downsampling():
    block = BiDRBasic(64, 128, 2, EncoderConfig(depth=18))
    assert [type(m).__name__ for m in block.chain] == ["DSaR", "BaseLCR"]
    off = BiDRBasic(64, 128, 2, EncoderConfig(depth=18, lcr=()))
    assert [type(m).__name__ for m in off.chain] == ["PlainBinaryConv", "BaseLCR"]


def test_ablation_switches_lcr_modules_off():
    block = BiDRBottleneck(256, 128, 2, EncoderConfig(lcr=()))
    assert [type(m).__name__ for m in block.chain] == ["PlainBinaryConv"] * 3
