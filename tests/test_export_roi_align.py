"""bidrn::roi_align (mobile_export/kernels/roi_align.cpp): the exported network's crops, against
bidrn.models.ops.roi_align (itself tested against torchvision's semantics in test_ops.py)."""
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
