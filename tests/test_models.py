"""The whole-body network: outputs, input checks, gradient flow, and every registered config builds."""
import pytest
import torch

from bidrn import create_model, list_models
from bidrn.nn import BinaryLayer, RPReLU

OUTPUT_SHAPES = {  # Hand4Whole's outputs for a batch of 1 (ARCHITECTURE.md)
    "root_pose": (1, 3), "body_pose": (1, 63), "lhand_pose": (1, 45), "rhand_pose": (1, 45), "jaw_pose": (1, 3),
    "betas": (1, 10), "expression": (1, 10), "cam_param": (1, 3), "cam_trans": (1, 3),
    "body_joint_img": (1, 25, 3), "lhand_joint_img": (1, 20, 3), "rhand_joint_img": (1, 20, 3),
    "box_centers": (1, 3, 2), "box_sizes": (1, 3, 2), "lhand_bbox": (1, 4), "rhand_bbox": (1, 4), "face_bbox": (1, 4),
}


@pytest.fixture(scope="module")
def bidrn_full():
    torch.manual_seed(0)
    return create_model("bidrn")


def test_full_bidrn_forward_on_512x384(bidrn_full):
    with torch.no_grad():
        out = bidrn_full.eval()(torch.rand(1, 3, 512, 384))
    assert {k: tuple(v.shape) for k, v in out.items()} == OUTPUT_SHAPES
    assert all(torch.isfinite(v).all() for v in out.values())
    # Body joints live on the 8 x 6 x 8 heatmap grid (x < 6, y < 8, z < 8).
    j = out["body_joint_img"][0]
    assert (j >= 0).all() and (j[:, 0] <= 5).all() and (j[:, 1] <= 7).all() and (j[:, 2] <= 7).all()


def test_one_training_step_reaches_every_latent_weight_and_rprelu(bidrn_full):
    model = bidrn_full.train()
    model.zero_grad()
    torch.manual_seed(1)
    out = model(torch.rand(1, 3, 512, 384))
    loss = sum((v * torch.randn_like(v)).sum() for v in out.values() if v.requires_grad)
    loss.backward()
    binary = [(n, m.weight) for n, m in model.named_modules() if isinstance(m, BinaryLayer)]
    rprelu = [(f"{n}.{pn}", p) for n, m in model.named_modules() if isinstance(m, RPReLU)
              for pn, p in m.named_parameters()]
    # Binary convs per BiDRB (FDR/FUR split into k branches): ResNet-50 = 24 + 34 + 52 + 25 = 135 per encoder,
    # ResNet-18 = 4 + 3 x 5 = 19; BoxNet adds 2 deconvs + 3 linears. Every LCR branch has one RPReLU (3 params).
    assert len(binary) == 2 * 135 + 19 + 5
    assert len(rprelu) == 3 * (2 * 135 + 19)
    dead = [n for n, p in binary + rprelu if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("-tiny")])
def test_tiny_configs_run_forward_and_backward(name):
    model = create_model(name).train()
    h, w = model.cfg.input_size
    out = model(torch.rand(2, 3, h, w))
    assert out["body_pose"].shape == (2, 63) and out["face_bbox"].shape == (2, 4)
    sum((v * torch.randn_like(v)).sum() for v in out.values() if v.requires_grad).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_boxes_are_square_for_hands_and_match_the_face_crop_aspect():
    model = create_model("hand4whole-tiny").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 192))
    for key in ("lhand_bbox", "rhand_bbox"):
        x1, y1, x2, y2 = out[key][0]
        assert torch.isclose(x2 - x1, y2 - y1, rtol=1e-5)


@pytest.mark.parametrize("bad,err,words", [
    (torch.rand(1, 3, 256, 256), ValueError, "B x 3 x 256 x 192"),
    (torch.rand(1, 1, 256, 192), ValueError, "B x 3 x 256 x 192"),
    (torch.rand(3, 256, 192), ValueError, "B x 3 x 256 x 192"),
    (torch.zeros(1, 3, 256, 192, dtype=torch.uint8), TypeError, "floating-point"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_wrong_input_names_what_was_expected(bad, err, words):
    model = create_model("bidrn-tiny")
    with pytest.raises(err, match=words):
        model(bad)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known models: hand4whole"):
        create_model("resnet-9000")


def test_baseline_encoders_contain_only_binary_convs_after_the_stem():
    model = create_model("bnn-tiny")
    for part in ("body_backbone", "hand_backbone", "face_backbone"):
        convs = [(n, m) for n, m in getattr(model, part).named_modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs[0][0] == "stem.0" and not isinstance(convs[0][1], BinaryLayer)
        assert all(isinstance(m, BinaryLayer) for _, m in convs[1:])


def test_bidrn_keeps_block_residual_convs_full_precision():
    model = create_model("bidrn-tiny")
    fp_convs = [n for n, m in model.body_backbone.named_modules()
                if isinstance(m, torch.nn.Conv2d) and not isinstance(m, BinaryLayer)]
    # the stem and one BR 1x1 conv per stage (the 4 shape-changing blocks)
    assert fp_convs == ["stem.0"] + [f"stages.{i}.0.block_residual.0" for i in range(4)]


def test_full_bidrn_produces_a_mesh_end_to_end_with_the_embedded_body_model():
    from bidrn.body import load_body_model

    body = load_body_model()
    torch.manual_seed(0)
    model = create_model("bidrn", body_model=body).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 512, 384))
    assert out["vertices"].shape == (1, body.num_vertices, 3)
    assert out["joints"].shape[:2] == (1, 144) and out["joint_proj"].shape == (1, 144, 2)
    # Root-relative: the pelvis (joint 0) sits at the origin.
    assert torch.allclose(out["joints"][0, 0], torch.zeros(3), atol=1e-6)
    assert torch.isfinite(out["vertices"]).all()


def test_body_rotation_head_reads_the_mirrored_left_hand_without_a_flip():
    """Sampling the left hand's (mirrored-frame) feature map at the unmirrored joints equals mirroring the map
    and sampling at the mirrored joints: bilinear sampling commutes with x -> W - 1 - x."""
    from bidrn.models import ops as model_ops
    from bidrn.models.heads import BodyRotationNet

    torch.manual_seed(0)
    net = BodyRotationNet(64, 32, feat_ch=16).eval()
    body_feat, body_joints = torch.randn(2, 64, 8, 6), torch.rand(2, 25, 3) * 5
    hand_feat, raw = torch.randn(2, 32, 8, 8), torch.rand(2, 4, 3) * 7
    mirrored = model_ops.flip_x(raw, 8)
    with torch.no_grad():
        flipped = net(body_feat, body_joints, torch.flip(hand_feat, [3]), mirrored, hand_feat, raw)
        direct = net(body_feat, body_joints, hand_feat, mirrored, hand_feat, raw, lhand_feat_mcp=raw)
    for a, b in zip(flipped, direct):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
