"""The phase decomposition of full-precision transposed convs (mobile_export/deconv.py) against PyTorch."""
import pytest
import torch
from torch import nn

from mobile_export.deconv import PhasedConvTranspose2d, fold_into_phases, phase_transposed_convs, phaseable


@pytest.mark.parametrize("k,s,p,bias,size", [(4, 2, 1, False, (5, 3)), (4, 2, 1, True, (1, 1)),
                                             (2, 2, 0, True, (3, 4)), (3, 1, 1, True, (4, 5)),
                                             (6, 2, 2, False, (4, 3)), (5, 3, 1, True, (2, 3))])
def test_phased_transposed_conv_equals_conv_transpose2d(k, s, p, bias, size):
    g = torch.Generator().manual_seed(k * 10 + s)
    d = nn.ConvTranspose2d(5, 7, k, s, p, bias=bias)
    with torch.no_grad():
        d.weight.copy_(torch.randn(d.weight.shape, generator=g))
    x = torch.randn(2, 5, *size, generator=g)
    want = d(x)
    got = PhasedConvTranspose2d(d)(x)
    assert got.shape == want.shape == (2, 7, size[0] * s, size[1] * s)
    # Same products, summed in another order: float32 rounding of sums of 5 * taps terms of size ~3.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_only_the_shapes_with_output_stride_times_input_are_rewritten():
    model = nn.Sequential(nn.ConvTranspose2d(4, 4, 4, 2, 1), nn.ConvTranspose2d(4, 4, 3, 2, 1),
                          nn.ConvTranspose2d(4, 4, 4, 2, 1, output_padding=1), nn.ConvTranspose2d(4, 4, 4, 2, 1, groups=2))
    assert [phaseable(m) for m in model] == [True, False, False, False]
    assert phase_transposed_convs(model) == 1
    assert isinstance(model[0], PhasedConvTranspose2d) and type(model[1]) is nn.ConvTranspose2d
    with pytest.raises(ValueError, match="kernel = stride \\+ 2 padding"):
        PhasedConvTranspose2d(nn.ConvTranspose2d(4, 4, 3, 2, 1))


def _random_bn(channels: int, g: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.weight.copy_(torch.randn(channels, generator=g))
        bn.bias.copy_(torch.randn(channels, generator=g))
    return bn.eval()


@pytest.mark.parametrize("bias,relu", [(False, True), (True, False)])
def test_batch_norm_and_relu_fold_into_the_phase_convs(bias, relu):
    g = torch.Generator().manual_seed(3)
    d = nn.ConvTranspose2d(6, 5, 4, 2, 1, bias=bias)
    with torch.no_grad():
        d.weight.copy_(torch.randn(d.weight.shape, generator=g))
    tail = [nn.ReLU()] if relu else [nn.Identity()]
    model = nn.Sequential(d, _random_bn(5, g), *tail).eval()
    x = torch.randn(2, 6, 4, 3, generator=g)
    want = model(x)
    assert phase_transposed_convs(model) == 1 and fold_into_phases(model) == 1
    assert [type(m) for m in model] == [PhasedConvTranspose2d, nn.Identity, nn.Identity]
    assert all(c.bias is not None for c in model[0].convs)
    assert (model[0].activation is not None) == relu
    got = model(x)
    if relu:
        assert (got == 0).sum() == (want == 0).sum() > 0  # the clamp kept its zeros where they were
    # BN's scale folded into the weights: float rounding of 6 * 4 products of size ~3, times |gamma| / sigma ~ 2.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_a_training_batch_norm_or_one_after_something_else_is_not_folded():
    g = torch.Generator().manual_seed(4)
    training = nn.Sequential(nn.ConvTranspose2d(3, 3, 4, 2, 1), nn.BatchNorm2d(3))  # train mode: batch statistics
    apart = nn.Sequential(nn.ConvTranspose2d(3, 3, 4, 2, 1), nn.ReLU(), _random_bn(3, g))
    for model in (training, apart):
        phase_transposed_convs(model)
        assert fold_into_phases(model) == 0
    assert type(training[1]) is nn.BatchNorm2d and type(apart[2]) is nn.BatchNorm2d
    with pytest.raises(ValueError, match="eval mode"):
        training[0].fold_batch_norm(training[1])
