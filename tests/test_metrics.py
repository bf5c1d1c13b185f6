"""The metrics against cases whose answer is known by hand (all inputs in metres, outputs in mm)."""
import math

import pytest
import torch

from bidrn.body import load_body_model
from bidrn.body.procedural import write_procedural_model
from bidrn.eval import mean_point_error, mpvpe, pa_error, procrustes_align, whole_body_metrics


def rotation_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.fixture
def points() -> torch.Tensor:
    return torch.randn(3, 200, 3, generator=torch.Generator().manual_seed(0)) * 0.3  # B x N x 3


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    return load_body_model(write_procedural_model(tmp_path_factory.mktemp("m") / "procedural.npz"))


def test_identical_point_sets_have_zero_error(points):
    assert torch.equal(mean_point_error(points, points), torch.zeros(3))
    assert torch.allclose(pa_error(points, points), torch.zeros(3), atol=1e-4)


def test_translation_error_is_its_length_in_mm(points):
    offset = torch.tensor([0.03, -0.04, 0.0])  # a 3-4-5 triangle: 50 mm
    assert torch.allclose(mean_point_error(points + offset, points), torch.full((3,), 50.0), atol=1e-3)


def test_anchor_alignment_removes_a_translation(points):
    moved = points + torch.tensor([0.1, 0.2, -0.3])
    err = mpvpe(moved, points, moved[:, 0], points[:, 0])
    assert torch.allclose(err, torch.zeros(3), atol=1e-4)


def test_per_vertex_offsets_give_their_mean_norm(points):
    # Half the points move 10 mm along x, half 30 mm along y: the mean is 20 mm.
    offsets = torch.zeros_like(points)
    offsets[:, :100, 0] = 0.010
    offsets[:, 100:, 1] = 0.030
    assert torch.allclose(mean_point_error(points + offsets, points), torch.full((3,), 20.0), atol=1e-3)


def test_procrustes_undoes_a_similarity_transform(points):
    moved = 1.7 * points @ rotation_z(0.8).T + torch.tensor([0.5, -1.0, 2.0])
    assert torch.allclose(procrustes_align(moved, points), points, atol=1e-5)
    assert torch.allclose(pa_error(moved, points), torch.zeros(3), atol=1e-3)


def test_procrustes_does_not_reflect(points):
    mirrored = points * torch.tensor([-1.0, 1.0, 1.0])
    aligned = procrustes_align(mirrored, points)
    # A rotation cannot undo a mirror image, so some error must remain.
    assert (mean_point_error(aligned, points) > 1.0).all()


def test_rigid_motion_gives_its_offset_before_and_zero_after_alignment(points):
    offset = torch.tensor([0.0, 0.0, 0.25])  # 250 mm
    moved = points + offset
    assert torch.allclose(mean_point_error(moved, points), torch.full((3,), 250.0), atol=1e-2)
    assert torch.allclose(pa_error(moved, points), torch.zeros(3), atol=1e-3)


def test_whole_body_metrics_of_identical_meshes_are_zero(layer):
    verts = layer(body_pose=torch.full((2, 63), 0.2)).vertices
    for name, value in whole_body_metrics(verts, verts, layer).items():
        assert torch.allclose(value, torch.zeros(2), atol=1e-3), name


def test_whole_body_mpvpe_ignores_a_global_translation(layer):
    verts = layer(body_pose=torch.full((2, 63), 0.2)).vertices
    metrics = whole_body_metrics(verts + torch.tensor([0.3, 0.1, 2.0]), verts, layer)
    for name in ("mpvpe_all", "mpvpe_hand", "mpvpe_face", "pa_mpvpe_all", "pa_mpjpe_body"):
        assert torch.allclose(metrics[name], torch.zeros(2), atol=1e-3), name


def test_whole_body_mpvpe_of_a_uniform_offset_on_the_face_only(layer):
    gt = layer(betas=torch.zeros(1, 10)).vertices
    pred = gt.clone()
    pred[:, layer.face_vertex_idx] += torch.tensor([0.0, 0.006, 0.008])  # 10 mm, face only
    metrics = whole_body_metrics(pred, gt, layer)
    # The neck does not move, so every face vertex is 10 mm off after neck alignment.
    assert torch.allclose(metrics["mpvpe_face"], torch.tensor([10.0]), atol=1e-3)
    assert torch.allclose(metrics["pa_mpvpe_face"], torch.tensor([0.0]), atol=1e-3)
