"""bidrn::roi_align and bidrn::sample_points (mobile_export/kernels/roi_align.cpp): the exported network's crops,
against bidrn.models.ops.roi_align (itself tested against torchvision's semantics in test_ops.py), and its heads'
bilinear point lookups, against bidrn.models.ops.sample_joint_features (grid_sample)."""
from __future__ import annotations

import pytest
import torch

from bidrn.models import ops as model_ops
from mobile_export import export, kernel_library, ops


class Crops(torch.nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, features, boxes):
        return ops.roi_align(features, boxes, **self.kw)


@pytest.mark.parametrize("kw", [
    dict(output_size=(24, 20), sampling_ratio=1, mirror=True),  # the left-hand crop
    dict(output_size=(12, 33), sampling_ratio=1),  # the export's grid: 4 rows of 8 lanes and a tail
    dict(output_size=(16, 16), sampling_ratio=2, spatial_scale=0.5),
    dict(output_size=(9, 13), sampling_ratio=3, aligned=True),
])
def test_the_kernel_matches_the_reference_crop(tmp_path, kw):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 2, 40, 52, generator=g)
    # Inside, overhanging the border, and a box smaller than a pixel (no `aligned`: sides clamped to 1 px).
    boxes = torch.tensor([[3.3, 5.1, 35.7, 30.2], [-9.0, 20.0, 70.0, 55.0], [10.2, 10.1, 10.4, 10.3]])
    module = Crops(**kw)
    path = tmp_path / "crop.pte"
    assert export.save_program(module, (features, boxes), path) == {"roi_align": 1}
    method, _ = export.load_program(path)
    want = model_ops.roi_align(features, boxes, kw["output_size"], kw.get("spatial_scale", 1.0),
                               kw["sampling_ratio"], kw.get("aligned", False), kw.get("mirror", False))
    for kernel_path in kernel_library.supported_paths():  # AVX2 gathers on the x86 paths, else the plain loop
        with kernel_library.using_path(kernel_path):
            got = method.execute([features, boxes])[0]
        # The reference goes through grid_sample's normalised coordinates (x / (W - 1) * 2 - 1 and back), which
        # moves a sample by up to 1e-5 px; the kernel uses pixel coordinates. Values are O(1), O(1) gradients.
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_boxes_with_a_batch_index_fall_back_to_the_reference():
    features = torch.randn(2, 1, 8, 8)
    boxes = torch.tensor([[1.0, 0.5, 0.5, 6.0, 7.0]])
    torch.testing.assert_close(ops.roi_align(features, boxes, 4), model_ops.roi_align(features, boxes, 4))


class Points(torch.nn.Module):
    def forward(self, features, coords):
        return ops.sample_points(features, coords)


def test_point_lookup_op_matches_grid_sample_inside_on_the_border_and_outside(tmp_path):
    """bidrn::sample_points (the heads' joint-feature lookup in the exported network) against
    bidrn.models.ops.sample_joint_features (grid_sample, bilinear, zero padding, align_corners=True)."""
    g = torch.Generator().manual_seed(1)
    features = torch.randn(2, 37, 8, 6, generator=g)
    # pixel centres, the last row / column, between pixels, half outside (fading to zero), wholly outside
    coords = torch.tensor([[0.0, 0.0], [5.0, 7.0], [2.5, 3.25], [-0.5, 1.0], [5.4, 7.8], [-1.2, 3.0],
                           [6.5, 2.0], [3.0, 9.0], [1.0, 1.0]]).repeat(2, 1, 1)
    coords[1] += torch.rand(9, 2, generator=g)
    path = tmp_path / "points.pte"
    assert export.save_program(Points(), (features, coords), path) == {"sample_points": 1}
    method, _ = export.load_program(path)
    got = method.execute([features, coords])[0]
    want = model_ops.sample_joint_features(features, coords)
    assert got.shape == want.shape == (2, 9, 37)
    assert torch.equal(got[0, 7], torch.zeros(37)) and torch.equal(got[0, 0], features[0, :, 0, 0])
    # grid_sample's vectorised CPU kernel forms the four weights in another order: a few float32 ulps
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_exported_heads_look_points_up_with_the_op():
    from bidrn import create_model

    model, _ = export.prepare_for_export(create_model("bidrn-tiny"), body_model=False)
    heads = [m for m in model.modules() if hasattr(type(m), "sample_op")]
    assert len(heads) == 3 and all(m.sample_op is ops.sample_points for m in heads)  # BoxNet, 2 rotation nets
