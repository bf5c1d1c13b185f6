"""How the export schedules work (mobile_export/export.py): encoders one image at a time, BatchNorms folded into
convs that share a weight, and the lowered graph ordered depth first."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mobile_export import export

class _TwoChains(nn.Module):
    """Two independent chains written interleaved, layer by layer, as the XNNPACK partitioner leaves them."""

    def forward(self, x):
        a1 = torch.relu(x)
        b1 = torch.sigmoid(x)
        a2 = a1 * 2.0
        b2 = b1 * 3.0
        a3 = a2 + 1.0
        b3 = b2 + 1.0
        return torch.cat((a3, b3))


def test_depth_first_order_runs_each_independent_chain_to_its_end():
    gm = torch.fx.symbolic_trace(_TwoChains())
    x = torch.randn(2, 3)
    want = gm(x)
    ops = lambda: [n.name for n in gm.graph.nodes if n.op == "call_function"]  # noqa: E731
    assert ops() == ["relu", "sigmoid", "mul", "mul_1", "add", "add_1", "cat"]  # interleaved
    export.depth_first_order(gm)
    assert ops() == ["relu", "mul", "add", "sigmoid", "mul_1", "add_1", "cat"]
    names = [n.op for n in gm.graph.nodes]
    assert names[0] == "placeholder" and names[-1] == "output"
    assert torch.equal(gm(x), want)


class _SharedConvBn(nn.Module):
    """One conv + BN applied to two images separately: what ImageAtATime makes of an encoder's stem."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.cat([self.bn(self.conv(x[i:i + 1])) for i in range(2)])


def test_conv_batch_norm_folds_once_per_shared_weight():
    torch.manual_seed(0)
    model = _SharedConvBn().eval()
    with torch.no_grad():  # a BN far from the identity, so that folding it twice would show
        model.bn.weight.uniform_(2.0, 3.0)
        model.bn.bias.uniform_(-1.0, 1.0)
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
        gm = torch.export.export(model, (x,), strict=False).module()
    assert export.fold_conv_batch_norms(gm) == 2
    targets = [n.target for n in gm.graph.nodes]
    assert torch.ops.aten.batch_norm.default not in targets
    convs = [n for n in gm.graph.nodes if n.target is torch.ops.aten.conv2d.default]
    assert len(convs) == 2 and {c.args[1].target for c in convs} == {"_bn_folded_0_weight"}  # one buffer
    # The folded conv is conv(x) * g / sqrt(v + eps) + (b - m g / sqrt(v + eps)): BN after the conv, as eager.
    with torch.no_grad():
        torch.testing.assert_close(gm(x), want, rtol=1e-5, atol=1e-5)


def test_image_at_a_time_gives_the_batched_encoder_output():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    wrapped = export.ImageAtATime(encoder)
    x = torch.randn(3, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), encoder(x), rtol=1e-6, atol=1e-6)
        assert torch.equal(wrapped(x[:1]), encoder(x[:1]))  # batch 1: the encoder itself


def test_prepare_for_export_runs_encoders_one_image_at_a_time_when_asked():
    from bidrn import create_model

    model = create_model("bidrn-tiny").eval()
    prepared, _ = export.prepare_for_export(model, body_model=False, image_at_a_time=True)
    assert all(isinstance(getattr(prepared, name), export.ImageAtATime) for name in export.ENCODERS)
    plain, _ = export.prepare_for_export(model, body_model=False)  # the default: batched
    assert not any(isinstance(getattr(plain, name), export.ImageAtATime) for name in export.ENCODERS)
    x = export.example_image(model.cfg)
    with torch.no_grad():
        a, b = prepared(x), plain(x)
    for key in ("lhand_pose", "rhand_pose", "body_pose", "rhand_joint_img"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)


def test_an_int8_program_of_an_encoder_run_one_image_at_a_time_loads_and_matches_eager(tmp_path):
    """The encoder's convs then appear twice with one weight; prepare_pt2e's own BN folding scaled that weight
    twice and XNNPACK refused the program ("Failed to create convolution node"): fold_conv_batch_norms."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                            nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)).eval()
    with torch.no_grad():  # BNs far from the identity, so that folding one twice would show
        for bn in (encoder[1], encoder[4]):
            bn.weight.uniform_(2.0, 3.0)
            bn.bias.uniform_(-1.0, 1.0)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    model = export.ImageAtATime(encoder).eval()
    x = torch.randn(2, 3, 16, 16)
    quiet = lambda msg: None  # noqa: E731
    program = export._export_program(model, x, "encoder", quiet)
    quantized = export._quantize_int8(program, [torch.randn(2, 3, 16, 16) for _ in range(4)])
    path = tmp_path / "encoder.pte"
    export.save_program(export._export_program(quantized, x, "encoder", quiet), x, path)
    method, _ = export.load_program(path)
    got = method.execute([x])[0]
    with torch.no_grad():
        want = encoder(x)
    # int8 of activations and weights: a few per cent of the output's scale (folding a BN twice: about 2.5x).
    assert (got - want).abs().mean() < 0.05 * want.abs().mean()


class _Subsample(nn.Module):
    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        from mobile_export import ops

        return ops.subsample(x, self.stride)


@pytest.mark.parametrize("shape, stride", [((1, 5, 7, 9), (2, 2)), ((2, 3, 8, 6), (2, 2)), ((1, 2, 9, 10), (3, 2))])
def test_subsample_kernel_takes_every_stride_th_pixel(tmp_path, shape, stride):
    x = torch.randn(*shape)
    path = tmp_path / "subsample.pte"
    assert export.save_program(_Subsample(stride), (x,), path) == {"subsample": 1}
    method, _ = export.load_program(path)
    got = method.execute([x])[0]
    assert torch.equal(got, x[:, :, ::stride[0], ::stride[1]])  # a copy: the same bits


def test_strided_block_residuals_read_a_subsampled_input_with_the_same_numbers():
    from bidrn import create_model

    torch.manual_seed(0)
    model = create_model("bidrn-tiny").eval()
    prepared, stats = export.prepare_for_export(model, body_model=False, image_at_a_time=False)
    subsampled = [m for m in prepared.modules() if isinstance(m, export.SubsampledPointwise)]
    # 3 encoders x 3 stage transitions, each a strided 1 x 1 BR conv (eq. 11) in a fused BiDRN block.
    assert stats.subsampled_residuals == len(subsampled) == 9
    x = torch.randn(1, subsampled[0].conv.in_channels, 16, 12)
    conv = nn.Conv2d(x.shape[1], subsampled[0].conv.out_channels, 1, stride=2, bias=False).eval()
    conv.load_state_dict(subsampled[0].conv.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(subsampled[0](x), conv(x), rtol=1e-6, atol=1e-6)
    # Hand4Whole (no bidrn:: ops in front of its convs) keeps them whole.
    twin = create_model(export.full_precision_twin(model.cfg)).eval()
    _, twin_stats = export.prepare_for_export(twin, body_model=False)
    assert twin_stats.subsampled_residuals == 0


def test_whole_factor_nearest_resize_is_a_subsample_with_the_same_pixels(tmp_path):
    from mobile_export import ops

    x = torch.randn(1, 3, 512, 384)
    want = torch.nn.functional.interpolate(x, size=(256, 192), mode="nearest")
    assert torch.equal(ops.subsample_reference(x, (2, 2)), want)  # ATen's floor(i * 2) = 2 i

    class Resize(nn.Module):
        def forward(self, img):
            return ops.resize(img, (256, 192))

    path = tmp_path / "resize.pte"
    assert export.save_program(Resize(), (x,), path) == {"subsample": 1}
    method, _ = export.load_program(path)
    assert torch.equal(method.execute([x])[0], want)
    # Not a whole factor: F.interpolate itself.
    y = torch.randn(1, 3, 50, 40)
    assert torch.equal(ops.resize(y, (20, 16)), torch.nn.functional.interpolate(y, size=(20, 16), mode="nearest"))
