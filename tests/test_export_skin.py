"""bidrn::skin (mobile_export/kernels/skin.cpp): the exported body layer's linear blend skinning (SMPL-X Eq. 1)
on the sparse skinning weights, against hand-computed values, its pure-PyTorch reference and the eager layer's
dense blend (bidrn.body.lbs.skin)."""
from __future__ import annotations

import math

import pytest
import torch

from bidrn.body import load_body_model
from bidrn.body.lbs import axis_angle_to_matrix, skin
from mobile_export import export, ops


class Skin(torch.nn.Module):
    def forward(self, points, rot, trans, vertices, offsets, joints, weights):
        return ops.skin(points, rot, trans, vertices, offsets, joints, weights)


def _program(tmp_path, args):
    path = tmp_path / "skin.pte"
    assert export.save_program(Skin(), args, path) == {"skin": 1}
    return export.load_program(path)[0]


def test_two_vertices_blend_their_joints_as_eq_1_says(tmp_path):
    # Joint 0: a quarter turn about z and a shift of (1, 2, 3); joint 1: the identity and a shift of (0, 0, 10).
    rot = torch.stack([torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), torch.eye(3)])[None]
    trans = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 10.0]]])
    points = torch.tensor([[[1.0, 0.0, 0.0], [2.0, 1.0, -1.0]]])
    # Vertex 0 follows joint 0 alone; vertex 1 is 1/4 joint 0, 3/4 joint 1 (the rows in either order).
    vertices, offsets = torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0, 1, 3], dtype=torch.int32)
    joints, weights = torch.tensor([0, 0, 1], dtype=torch.int32), torch.tensor([1.0, 0.25, 0.75])
    # R0 (1, 0, 0) + t0 = (0, 1, 0) + (1, 2, 3); R0 (2, 1, -1) = (-1, 2, -1): 1/4 (0, 4, 2) + 3/4 (2, 1, 9).
    want = torch.tensor([[[1.0, 3.0, 3.0], [1.5, 1.75, 7.25]]])
    args = (points, rot, trans, vertices, offsets, joints, weights)
    assert torch.equal(ops.skin_reference(*args), want)
    method = _program(tmp_path, args)
    assert torch.equal(method.execute(list(args))[0], want)
    swapped = (points, rot, trans, *(torch.tensor(t, dtype=torch.int32) for t in ([1, 0], [0, 2, 3], [0, 1, 0])),
               torch.tensor([0.25, 0.75, 1.0]))
    assert torch.equal(method.execute(list(swapped))[0], want)


def test_the_kernel_equals_its_reference_and_the_dense_blend_on_the_body_model(tmp_path):
    layer = load_body_model()
    vertices, offsets, joints, weights = layer.sparse_skinning()
    # Every non-zero weight of the dense matrix is in the CSR form once, at its (vertex, joint); every vertex
    # has a row, and the rows go by their entry count.
    dense = torch.zeros_like(layer.lbs_weights)
    counts = offsets[1:] - offsets[:-1]
    dense[torch.repeat_interleave(vertices.long(), counts.long()), joints.long()] = weights
    assert torch.equal(dense, layer.lbs_weights)
    assert torch.equal(vertices.sort().values, torch.arange(layer.num_vertices, dtype=torch.int32))
    assert bool((counts[1:] >= counts[:-1]).all())
    g = torch.Generator().manual_seed(0)
    j = layer.lbs_weights.shape[1]
    rot = axis_angle_to_matrix(torch.randn(2, j, 3, generator=g))
    trans = torch.randn(2, j, 3, generator=g)
    points = torch.randn(2, layer.num_vertices, 3, generator=g)
    args = (points, rot, trans, vertices, offsets, joints, weights)
    got = _program(tmp_path, args).execute(list(args))[0]
    assert torch.equal(got, ops.skin_reference(*args))  # the same products and sums, in the same order
    # The dense blend adds the zero weights too and sums in its own order: float32 rounding of O(1) values.
    torch.testing.assert_close(got, skin(layer.lbs_weights, rot, trans, points), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", ["joint", "vertex", "repeated vertex", "offsets", "last offset"])
def test_a_bad_sparse_matrix_is_refused_not_read_out_of_bounds(tmp_path, bad, capfd):
    points, rot, trans = torch.randn(1, 2, 3), torch.eye(3).repeat(1, 2, 1, 1), torch.zeros(1, 2, 3)

    def index(*values):
        return torch.tensor(values, dtype=torch.int32)

    good = dict(vertices=index(0, 1), offsets=index(0, 1, 2), joints=index(0, 1), weights=torch.tensor([1.0, 1.0]))
    method = _program(tmp_path, (points, rot, trans, *good.values()))
    change, words = {
        "joint": (dict(joints=index(0, 5)), "every joint index lie in [0, J)"),
        "vertex": (dict(vertices=index(0, 2)), "vertices must be a permutation of [0, V)"),
        "repeated vertex": (dict(vertices=index(1, 1)), "vertices must be a permutation of [0, V)"),
        "offsets": (dict(offsets=index(0, 3, 2)), "offsets rise"),
        "last offset": (dict(offsets=index(0, 1, 1)), "offsets must rise from 0 to len(joints)"),
    }[bad]
    with pytest.raises(RuntimeError):
        method.execute([points, rot, trans, *dict(good, **change).values()])
    assert words in capfd.readouterr().err


def test_the_exported_body_layer_skins_with_the_op(tmp_path):
    from bidrn import create_model

    model, _ = export.prepare_for_export(create_model("bidrn-tiny"))
    assert model.body_model.skin_op is ops.skin
    layer = load_body_model().eval()
    g = torch.Generator().manual_seed(2)
    pose = dict(betas=torch.randn(1, 10, generator=g), body_pose=0.3 * torch.randn(1, 63, generator=g),
                left_hand_pose=0.3 * torch.randn(1, 45, generator=g), global_orient=torch.tensor([[0, math.pi, 0.0]]))
    want = layer(**pose)
    layer.use_skin_op(ops.skin)
    got = layer(**pose)
    # The mesh spans about 1.7 m; the two blends differ in float32 rounding only.
    torch.testing.assert_close(got.vertices, want.vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.joints, want.joints, rtol=0, atol=1e-5)


@pytest.mark.parametrize("vertices", [(1, 1), (0, 2)])
def test_the_reference_refuses_what_the_kernel_refuses(vertices):
    points, rot, trans = torch.randn(1, 2, 3), torch.eye(3).repeat(1, 2, 1, 1), torch.zeros(1, 2, 3)
    index = torch.tensor(vertices, dtype=torch.int32)
    csr = (torch.tensor([0, 1, 2], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32), torch.ones(2))
    with pytest.raises(ValueError, match="permutation"):
        ops.skin_reference(points, rot, trans, index, *csr)
