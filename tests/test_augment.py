"""Augmentation (Hand4Whole's scale, rotation, flip, colour) and per-source mixing."""
from __future__ import annotations

import pytest
import torch

from bidrn.data.augment import (JOINT_MIRROR, WHOLE_BODY_JOINTS, AugmentConfig, AugmentParams, augment_sample,
                                draw_params, flip_sample, jitter_color)
from bidrn.data.mix import MixedDataset
from bidrn.data.sample import SHAPES, empty_sample, validate_sample
from bidrn.models.ops import axis_angle_to_rotmat

H, W = 64, 48
J = WHOLE_BODY_JOINTS.index
MIRROR = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))  # reflection across the x = 0 plane


def random_sample(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = {k: torch.randn(shape, generator=g) for k, shape in SHAPES.items()}
    s["img"] = torch.rand(3, H, W, generator=g)
    return s


def projected_sample() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Joints in front of a camera whose projection of joint_cam (+ a root offset) gives joint_img, with a
    bright pixel drawn at each joint."""
    g = torch.Generator().manual_seed(1)
    s = empty_sample((H, W))
    root = torch.tensor([0.1, -0.05, 3.0])
    s["joint_cam"] = torch.randn(65, 3, generator=g) * 0.2
    s["focal"], s["princpt"] = torch.tensor([80.0, 80.0]), torch.tensor([20.0, 30.0])
    cam = s["joint_cam"] + root
    s["joint_img"][:, :2] = cam[:, :2] / cam[:, 2:] * s["focal"] + s["princpt"]
    s["joint_img"][:, 2] = s["joint_cam"][:, 2]
    s["joint_valid"] = s["joint_cam_valid"] = torch.ones(65)
    for x, y in s["joint_img"][:, :2].round().long().tolist():
        if 0 <= x < W and 0 <= y < H:
            s["img"][:, y, x] = 1.0
    return s, root


def test_flipping_twice_is_the_identity():
    s = random_sample()
    twice = flip_sample(flip_sample(s))
    for key in s:
        assert torch.allclose(twice[key], s[key], atol=1e-5), key  # W - 1 - (W - 1 - x): float32 rounding


def test_flipped_sample_keeps_the_training_shapes():
    validate_sample(flip_sample(random_sample()), (H, W))


def test_flipped_joints_land_on_the_flipped_image():
    s, _ = projected_sample()
    f = flip_sample(s)
    pixels = f["joint_img"][:, :2].round().long()
    inside = [j for j in range(65) if 0 <= pixels[j, 0] < W and 0 <= pixels[j, 1] < H]
    assert len(inside) > 20
    for j in inside:
        x, y = pixels[j].tolist()
        assert f["img"][:, y, x].min() == 1.0, WHOLE_BODY_JOINTS[j]


def test_flipped_3d_joints_project_onto_the_flipped_2d_joints():
    s, root = projected_sample()
    f = flip_sample(s)
    cam = f["joint_cam"] + root * torch.tensor([-1.0, 1.0, 1.0])  # the scene mirrors, root included
    proj = cam[:, :2] / cam[:, 2:] * f["focal"] + f["princpt"]
    assert torch.allclose(proj, f["joint_img"][:, :2], atol=1e-3)


def test_flip_swaps_left_and_right_joints():
    s = random_sample()
    f = flip_sample(s)
    assert torch.equal(f["joint_valid"][J("L_Wrist")], s["joint_valid"][J("R_Wrist")])
    assert f["joint_img"][J("R_Thumb_4"), 0] == W - 1 - s["joint_img"][J("L_Thumb_4"), 0]
    assert f["joint_cam"][J("Nose"), 0] == -s["joint_cam"][J("Nose"), 0]
    assert sorted(JOINT_MIRROR) == list(range(65))


def test_flip_mirrors_every_rotation_and_swaps_smplx_sides():
    s = random_sample()
    f = flip_sample(s)
    # A mirrored rotation is M R M: checked on the root and the jaw (centre joints) ...
    for key in ("smplx_root_pose", "smplx_jaw_pose"):
        assert torch.allclose(axis_angle_to_rotmat(f[key]), MIRROR @ axis_angle_to_rotmat(s[key]) @ MIRROR, atol=1e-5)
    # ... and on paired joints, which also trade places: body_pose joint 0 is the left hip, 1 the right hip
    lhip, rhip = s["smplx_body_pose"][0:3], f["smplx_body_pose"][3:6]
    assert torch.allclose(axis_angle_to_rotmat(rhip), MIRROR @ axis_angle_to_rotmat(lhip) @ MIRROR, atol=1e-5)
    spine1 = slice(6, 9)  # SMPL-X joint 3, on the midline: mirrored in place
    assert torch.allclose(f["smplx_body_pose"][spine1], s["smplx_body_pose"][spine1] * torch.tensor([1, -1, -1.0]))
    mirrored_rhand = s["smplx_rhand_pose"].view(15, 3) * torch.tensor([1, -1, -1.0])
    assert torch.allclose(f["smplx_lhand_pose"].view(15, 3), mirrored_rhand)
    assert torch.equal(f["smplx_pose_valid"][22:37], s["smplx_pose_valid"][37:52])
    assert torch.equal(f["smplx_expr"], s["smplx_expr"]) and torch.equal(f["smplx_shape"], s["smplx_shape"])


def test_flip_swaps_and_mirrors_the_hand_boxes():
    s = empty_sample((H, W))
    s["lhand_bbox"], s["lhand_bbox_valid"] = torch.tensor([5.0, 10.0, 15.0, 20.0]), torch.tensor(1.0)
    f = flip_sample(s)
    assert f["rhand_bbox"].tolist() == [W - 1 - 15.0, 10.0, W - 1 - 5.0, 20.0]
    assert (f["rhand_bbox_valid"], f["lhand_bbox_valid"]) == (1, 0)


def test_rotation_turns_image_2d_and_3d_joints_together():
    s = empty_sample((H, W))
    s["joint_img"][0, :2] = torch.tensor([W / 2 + 10, H / 2])  # 10 px right of the patch centre
    s["joint_valid"][0] = 1
    s["joint_cam"][0] = torch.tensor([1.0, 0.0, 0.0])
    s["img"][:, H // 2, W // 2 + 10] = 1.0
    r = augment_sample(s, AugmentParams(rot=90.0))
    # a crop turned by +90 deg turns the content by -90 deg: right of centre becomes above it (y down)
    assert r["joint_img"][0, :2].tolist() == pytest.approx([W / 2, H / 2 - 10], abs=1e-4)
    assert r["joint_cam"][0].tolist() == pytest.approx([0.0, -1.0, 0.0], abs=1e-6)
    lum = r["img"].sum(0)
    assert divmod(int(lum.argmax()), W) == (H // 2 - 10, W // 2)


def test_rotation_turns_the_root_orientation_about_the_camera_axis():
    s = empty_sample((H, W))
    s["smplx_root_pose"] = torch.tensor([0.3, 0.2, -0.1])
    r = augment_sample(s, AugmentParams(rot=30.0))
    turn = axis_angle_to_rotmat(torch.tensor([0.0, 0.0, -torch.pi / 6]))
    expected = turn @ axis_angle_to_rotmat(s["smplx_root_pose"])
    assert torch.allclose(axis_angle_to_rotmat(r["smplx_root_pose"]), expected, atol=1e-5)


def test_scale_two_halves_distances_from_the_centre_and_drops_joints_that_leave():
    s = empty_sample((H, W))
    s["joint_img"][:2, :2] = torch.tensor([[W / 2 + 8, H / 2 - 6], [W + 5.0, H / 2]])
    s["joint_valid"][:2] = 1
    r = augment_sample(s, AugmentParams(scale=2.0))
    assert r["joint_img"][0, :2].tolist() == pytest.approx([W / 2 + 4, H / 2 - 3])
    assert r["joint_valid"][:2].tolist() == [1.0, 1.0]  # x = W + 5 -> W / 2 + 14.5, now inside
    r = augment_sample(s, AugmentParams(scale=0.5))
    assert r["joint_valid"][:2].tolist() == [1.0, 0.0]


def test_colour_jitter_scales_each_channel_and_clips():
    img = torch.full((3, 2, 2), 0.9)
    out = jitter_color(img, (0.8, 1.0, 1.2))
    assert out[:, 0, 0].tolist() == pytest.approx([0.72, 0.9, 1.0])


def test_augmentation_draw_is_deterministic_and_follows_hand4whole():
    cfg = AugmentConfig()
    same = [draw_params(cfg, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert same[0] == same[1]
    g = torch.Generator().manual_seed(0)
    draws = [draw_params(cfg, g) for _ in range(4000)]
    assert all(0.75 <= d.scale <= 1.25 and abs(d.rot) <= 60 for d in draws)
    assert all(0.8 <= c <= 1.2 for d in draws for c in d.color)
    assert sum(d.rot == 0 for d in draws) / 4000 == pytest.approx(0.4, abs=0.03)  # rotation with p = 0.6
    assert sum(d.flip for d in draws) / 4000 == pytest.approx(0.5, abs=0.03)


# ---------------------------------------------------------------- mixing


def test_mixing_proportions_converge_to_the_weights():
    mix = MixedDataset({"h36m": list(range(100)), "coco": list(range(1000, 1030)), "mpii": list(range(2000, 2010))},
                       weights={"h36m": 2.0, "coco": 1.5, "mpii": 0.5}, length=20000, seed=0)
    got = mix.realised_proportions()
    assert got == pytest.approx({"h36m": 0.5, "coco": 0.375, "mpii": 0.125}, abs=0.01)
    items = [mix[i] for i in range(len(mix))]
    assert sum(1000 <= x < 2000 for x in items) / len(items) == pytest.approx(got["coco"])


def test_mixing_is_deterministic_per_seed_and_changes_per_epoch():
    sources = {"a": list(range(50)), "b": list(range(100, 120))}
    one, two = (MixedDataset(sources, length=200, seed=7) for _ in range(2))
    assert [one[i] for i in range(200)] == [two[i] for i in range(200)]
    two.set_epoch(1)
    assert [one[i] for i in range(200)] != [two[i] for i in range(200)]


def test_mixing_visits_a_whole_source_before_repeating_it():
    mix = MixedDataset({"small": list(range(10)), "big": list(range(100, 1100))},
                       weights={"small": 1.0, "big": 1.0}, length=60, seed=1)
    small = [mix[i] for i in range(60) if mix.source_of(i) == "small"]
    assert len(small) >= 10 and sorted(small[:10]) == list(range(10))


def test_mixing_rejects_weights_that_do_not_match_the_sources():
    with pytest.raises(ValueError, match="one per source"):
        MixedDataset({"a": [1]}, weights={"b": 1.0})
