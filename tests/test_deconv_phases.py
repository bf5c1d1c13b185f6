"""The phase decomposition of full-precision transposed convs (mobile_export/deconv.py) against PyTorch."""
import pytest
import torch
from torch import nn

from mobile_export.deconv import PhasedConvTranspose2d, phase_transposed_convs, phaseable


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
