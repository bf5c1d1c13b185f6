"""Space-to-depth stems (mobile_export/stems.py): a stride-2 conv of few channels as a stride-1 conv on the 2 x 2
pixel phases is the same conv (float32 up to summation order; int8 to the integer)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bidrn import create_model
from mobile_export import export, stems


@pytest.mark.parametrize("c, k, p, h, w, bias", [
    (3, 7, 3, 64, 48, False),  # the ResNet stem
    (3, 7, 3, 33, 40, False),  # odd height
    (1, 5, 2, 20, 21, True),
    (4, 3, 1, 16, 17, True),
    (3, 3, 0, 15, 16, False),  # no padding
    (2, 4, 1, 18, 18, False),  # even kernel
])
def test_the_rewrite_is_the_same_conv(c, k, p, h, w, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(c, 8, k, stride=2, padding=p, bias=bias)
    x = torch.randn(2, c, h, w)
    rewritten = stems.SpaceToDepthConv2d(conv)
    with torch.no_grad():
        want, got = conv(x), rewritten(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_only_stride_2_convs_of_few_channels_are_rewritten():
    assert not stems.rewritable(nn.Conv2d(3, 8, 3, stride=1, padding=1))
    assert not stems.rewritable(nn.Conv2d(16, 8, 3, stride=2, padding=1))
    assert not stems.rewritable(nn.Conv2d(3, 8, 1, stride=2))
    with pytest.raises(ValueError, match="stride-2 conv"):
        stems.SpaceToDepthConv2d(nn.Conv2d(64, 8, 3, stride=2))
    model = create_model("bidrn-tiny").eval()
    assert stems.space_to_depth_stems(model) == 3  # body, hand and face stems, nothing else


def test_int8_stem_gives_the_same_integers(tmp_path):
    """Per-channel weight scales are unchanged by the rewrite (zero taps added) and the pixels only move, so the
    int8 programs agree to one output step (its quantization parameters come from a calibration whose float
    outputs differ in the last bits; measured: 5.8 % of the values one step apart, none more)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 16, 7, stride=2, padding=3, bias=False)).eval()
    rewritten = nn.Sequential(stems.SpaceToDepthConv2d(conv[0])).eval()
    x = torch.rand(1, 3, 64, 48)
    calibration = [torch.rand(1, 3, 64, 48) for _ in range(2)]
    outputs = []
    for i, module in enumerate((conv, rewritten)):
        program = torch.export.export(module, (x,), strict=False)
        path = tmp_path / f"stem{i}.pte"
        export.save_program(export._quantize_int8(program, calibration), x, path)
        method, _ = export.load_program(path)
        outputs.append(method.execute([x])[0])
    step = (outputs[0] - outputs[1]).abs()
    one_step = (outputs[0].abs().max() / 127).item() * 1.01  # at most one int8 step of the output
    assert step.max().item() <= one_step and (step > 0).float().mean().item() < 0.1
