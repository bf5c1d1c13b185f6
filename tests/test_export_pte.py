"""The .pte export (mobile_export/export.py): bidrn-tiny exports with its body model, runs in ExecuTorch's
runtime with the bidrn:: kernel library and matches eager; binary accumulators are bit-exact; an unsupported
layer is refused by name; the file is smaller than the full-precision twin's. Tolerances: docs/export.md."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from bidrn import create_model
from bidrn.body import load_body_model
from bidrn.models import ops as model_ops
from bidrn.nn.layers import BinaryLayer, RPReLU
from mobile_export import export, kernel_library, ops

POSE_KEYS = ("root_pose", "body_pose", "lhand_pose", "rhand_pose", "jaw_pose")


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """BN statistics and affine terms as after training (random, not the init's mean 0, var 1, beta 0).

    At init every BN maps an integer accumulator of 0 to exactly 0, whose sign in eager mode is decided by the
    rounding noise of ScaledSignWeight's w + (alpha sign(w) - w); with a bias it is well defined (docs/export.md).
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def body_model():
    return load_body_model()


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, body_model):
    """bidrn-tiny (trained-like BN) with the body model, exported once for the module: (eager model, report)."""
    torch.manual_seed(0)
    model = trained_like(create_model("bidrn-tiny", body_model=body_model))
    path = tmp_path_factory.mktemp("pte") / "bidrn-tiny.pte"
    return model, export.export_pte(model, path)


def rotation_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between axis-angle rotations (r and -r at pi are the same rotation)."""
    ra, rb = (model_ops.axis_angle_to_rotmat(t.reshape(-1, 3)) for t in (a, b))
    cos = ((ra.transpose(-1, -2) @ rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.rad2deg(torch.arccos(cos.clamp(-1, 1)))


def test_bidrn_tiny_exports_with_every_binary_layer_on_the_bidrn_ops(tiny_export):
    model, report = tiny_export
    binary = sum(1 for m in model.modules() if isinstance(m, BinaryLayer))
    assert report.stats["binary_layers"] == binary == 70
    # 65 LCR branch RPReLUs + BoxNet deconv2's ReLU + 3 size-MLP ReLUs; 2 BoxNet BNs; deconv1 -> deconv2.
    assert (report.stats["folded_activation"], report.stats["folded_bn"], report.stats["packed_links"]) == (69, 2, 1)
    # Every BiDRB block's last op writes over its shortcut: one block per stage, 4 stages x 3 encoders.
    from bidrn.models.resnet import _BiDRB

    blocks = sum(1 for m in model.modules() if isinstance(m, _BiDRB))
    assert report.stats["shared_shortcuts"] == blocks == 12
    assert "binary_conv2d" in report.ops_outside_xnnpack and "convolution" not in report.ops_outside_xnnpack
    assert {"vertices", "joints", "joint_proj"} <= set(report.outputs)


def test_exported_program_runs_in_executorch_and_matches_eager(tiny_export):
    model, report = tiny_export
    img = export.example_image(model.cfg, seed=7)
    got = export.run_pte(report.path, img)
    with torch.no_grad():
        want = model(img)
    assert list(got) == list(want)
    assert_within_rounding_and_crop_bounds(got, want)  # measured 1.8 deg, 0.032, 2.5 mm, 0.26 px after the crops


def assert_within_rounding_and_crop_bounds(got: dict, want: dict) -> None:
    """Before any crop the only differences are float rounding (XNNPACK vs ATen, or x86 vs Arm kernels): tight.
    After the crops the binary hand and face encoders turn a float difference that changes a sign into a changed
    bit (docs/export.md, "The C++ runner"): bounds in degrees, metres, heatmap cells and pixels."""
    for key in ("betas", "cam_param", "cam_trans", "body_joint_img", "box_centers", "box_sizes", "lhand_bbox",
                "rhand_bbox", "face_bbox"):
        assert (got[key] - want[key]).abs().max() < 1e-4, key
    for key in POSE_KEYS:
        assert rotation_angle_deg(got[key], want[key]).max() < 5.0, key
    assert (got["expression"] - want["expression"]).abs().max() < 0.1
    for key in ("vertices", "joints"):
        assert (got[key] - want[key]).norm(dim=-1).max() < 0.01, key  # metres
    for key in ("lhand_joint_img", "rhand_joint_img", "joint_proj"):
        assert (got[key] - want[key]).abs().max() < 1.0, key  # heatmap cells / pixels


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake")),
                    reason="aarch64 cross toolchain absent; apt-get install g++-aarch64-linux-gnu qemu-user cmake")
def test_the_program_runs_in_the_cpp_runtime_here_and_on_aarch64(tiny_export):
    """The same .pte in the C++ runner (mobile_export/runner.py): on this machine exactly the Python runtime's
    outputs; on aarch64 (the aarch64 executorch wheel's runtime under qemu: XNNPACK's Arm kernels and our NEON
    ones, dotprod dispatched) within float rounding before the crops and the eager bounds above after them."""
    from mobile_export import runner

    _, report = tiny_export
    host = runner.run(report.path, "host", runs=1)
    assert set(runner.compare(host).values()) == {0.0}
    arm = runner.run(report.path, "aarch64", qemu_cpu="neoverse-n1", runs=1, warmup=0)
    assert arm["kernel_path"] == "neon_dotprod" and list(arm["outputs"]) == list(host["outputs"])
    got, want = ({k: torch.from_numpy(v.copy()) for k, v in r["outputs"].items()} for r in (arm, host))
    assert_within_rounding_and_crop_bounds(got, want)  # measured 1.5e-6 before, 0.87 deg, 4.4 mm, 0.28 px after


@pytest.mark.parametrize("layer_name", ["body_backbone.stages.1.0.chain.1.branch.conv",  # DScR 3x3 stride 2
                                        "hand_backbone.stages.3.0.chain.2.branches.0.conv",  # FUR 1x1
                                        "box_net.deconv.0"])  # transposed k4 s2, 712 channels
def test_binary_layer_accumulators_in_executorch_equal_eager_bit_for_bit(tiny_export, tmp_path, layer_name):
    model, _ = tiny_export
    layer = model.get_submodule(layer_name)
    captured = {}
    handle = layer.register_forward_pre_hook(lambda m, args: captured.update(x=args[0].detach()))
    with torch.no_grad():
        model(export.example_image(model.cfg, seed=3))
    handle.remove()
    x = captured["x"]
    with torch.no_grad():  # eq. 5's integer sum over sign(x) . sign(W), computed exactly in float32
        signs_x, signs_w = layer.input_quantizer(x), ops.signs_from_bits(ops.is_negative(layer.weight))
        conv = F.conv_transpose2d if isinstance(layer, torch.nn.ConvTranspose2d) else F.conv2d
        want = conv(signs_x, signs_w, stride=layer.stride, padding=layer.padding).to(torch.int32)
    packed = export.pack_layer(layer_name, layer)
    packed.output = ops.Output.ACCUMULATOR
    path = tmp_path / "layer.pte"
    export.save_program(packed, x, path)
    got = export.run_pte(path, x)[0]
    assert got.dtype == torch.int32 and torch.equal(got, want)


@pytest.mark.parametrize("lcr", ["DScR", "FUR"])
def test_fused_lcr_epilogue_is_bit_exact_against_the_reference_on_every_kernel_path(tmp_path, lcr):
    """BN(RPReLU(bconv(a_f)) + residual) in one op: the C++ epilogue rounds exactly like the PyTorch reference."""
    from bidrn.nn.lcr import DScR, FUR

    torch.manual_seed(0)
    module = trained_like(DScR(64) if lcr == "DScR" else FUR(32, k=4))
    for m in module.modules():
        if isinstance(m, RPReLU):  # away from the PReLU init, so every eq. 6 term matters
            for p in (m.beta, m.gamma, m.zeta):
                p.data.copy_(0.2 * torch.randn_like(p))
    wrapper = torch.nn.Sequential(copy.deepcopy(module)).eval()
    stats = export.convert_binary_layers(wrapper)
    assert stats.fused_lcr == 1
    x = torch.randn(2, 64 if lcr == "DScR" else 32, 10, 14)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), module(x), rtol=1e-5, atol=1e-5)  # reference kernels vs eager
        a_f = module.pre_act(x)
        conv = wrapper[0].conv  # the fused op, fed its inputs directly so nothing else rounds
        residual = wrapper[0].residual(a_f)
        want = conv(a_f, residual)
    path = tmp_path / "lcr.pte"
    export.save_program(OpWithResidual(conv), (a_f, residual), path)
    method, _ = export.load_program(path)
    for kernel_path in kernel_library.supported_paths():
        with kernel_library.using_path(kernel_path):
            assert torch.equal(method.execute([a_f, residual])[0], want), kernel_path


class OpWithResidual(torch.nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, a_f, residual):
        return self.conv(a_f, residual)


def test_soft_argmax_runs_inside_xnnpack_as_one_product(tmp_path):
    """The soft-argmax's coordinate table is a constant the exported product reads directly
    (export.drop_constant_copies): no portable mm or sum is left outside the delegate, and the program matches
    eager."""
    class SoftArgmax(torch.nn.Module):
        def forward(self, x):
            return model_ops.soft_argmax_3d(x)

    x = torch.randn(2, 20, 8, 8, 8) * 4
    outside = export.save_program(SoftArgmax(), x, tmp_path / "soft_argmax.pte")
    assert not outside, outside
    method, _ = export.load_program(tmp_path / "soft_argmax.pte")
    torch.testing.assert_close(method.execute([x])[0], model_ops.soft_argmax_3d(x), rtol=0, atol=1e-4)


def test_unsupported_layer_is_refused_naming_the_layer_and_the_reason():
    model = create_model("reactnet-tiny").eval()
    with pytest.raises(export.UnsupportedLayerError, match=r"'body_backbone\.stages\.0\.0\.conv1'.*rsign"):
        export.convert_binary_layers(model)


def test_cli_reports_an_unsupported_model_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bidrn", "export", "xnor-tiny", "--out", str(tmp_path / "x.pte"),
                           "--no-reference"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "XnorConv2d" in done.stderr and "body_backbone.stages.0.0.conv1" in done.stderr
    assert "Traceback" not in done.stderr


def test_file_is_smaller_than_the_full_precision_twin_weights_alone(tiny_export, body_model):
    model, report = tiny_export
    # An fp32 .pte stores every float parameter and buffer at 4 bytes: a lower bound on the twin's file size.
    twin = create_model(export.full_precision_twin(model.cfg), body_model=body_model)
    twin_floor = sum(t.numel() * 4 for t in twin.state_dict().values() if t.is_floating_point())
    assert report.bytes < twin_floor


def test_a_program_exported_for_older_op_schemas_is_refused_before_loading(tmp_path):
    """ExecuTorch reads op arguments by position and aborts on a mismatch: the report's ops_version guards."""
    path = tmp_path / "old.pte"
    path.write_bytes(b"\x1c\x00\x00\x00ET12" + bytes(56))  # a .pte's first bytes, the rest not a program
    report = {"model": "bidrn", "outputs": [], "ops_outside_xnnpack": {"binary_conv2d": 3}}  # no ops_version: 1
    (tmp_path / "old.pte.json").write_text(json.dumps(report))
    with pytest.raises(export.ExportError, match=r"version 1 of the bidrn:: ops.*export it again"):
        export.load_program(path)
    report["ops_version"] = ops.OPS_VERSION
    (tmp_path / "old.pte.json").write_text(json.dumps(report))
    # Past the version check the runtime refuses the damaged file; the error names it ...
    with pytest.raises(ValueError, match=r"old.pte: ExecuTorch could not load its forward method .*export it again"):
        export.load_program(path)
    # ... and bytes that are no ExecuTorch program at all (the flatbuffer's file identifier, 'ET' and two
    # digits, sits at byte 4 of every .pte) are refused before the runtime reads them.
    path.write_bytes(b"not loaded")
    with pytest.raises(export.ExportError, match=r"old.pte: not an ExecuTorch program .*found b'load'"):
        export.load_program(path)


def test_importing_mobile_export_silences_only_the_known_upstream_messages():
    # torchao's failed loads of its CUDA-only extensions and torch's pytree Enum warning print at import;
    # the LeafSpec FutureWarning is torch's, raised from copy.deepcopy inside executorch's lowering
    code = ("import warnings, mobile_export, torchao, torch.export\n"
            "warnings.warn('`isinstance(treespec, LeafSpec)` is deprecated, use ...', FutureWarning)\n"
            "warnings.warn('some other upstream change', FutureWarning)\n")
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "some other upstream change" in quiet.stderr  # any other warning still shows
    for known in ("Failed to load", "is an Enum subclass", "LeafSpec"):
        assert known not in quiet.stderr, quiet.stderr
