"""Specification of the head ops: numbers come from hand computation, closed-form rotations, and a slow loop
transcription of torchvision's RoIAlign kernel (roi_align_kernel.cpp), never from the code under test."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from bidrn.models import ops


# ---------------------------------------------------------------- helpers

class _Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def assert_exports_and_matches(fn, *args, atol=1e-6):
    """torch.export (non-strict) traces fn without data-dependent control flow and agrees with eager."""
    program = torch.export.export(_Fn(fn), args, strict=False)
    torch.testing.assert_close(program.module()(*args), fn(*args), atol=atol, rtol=0)


def reference_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's CPU RoIAlign forward, one sample at a time."""
    out_h, out_w = output_size
    height, width = features.shape[-2:]

    def bilinear(img, y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return torch.zeros(img.shape[0], dtype=img.dtype)
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1.0 - ly, 1.0 - lx
        return (hy * hx * img[:, y_low, x_low] + hy * lx * img[:, y_low, x_high]
                + ly * hx * img[:, y_high, x_low] + ly * lx * img[:, y_high, x_high])

    out = torch.zeros(rois.shape[0], features.shape[1], out_h, out_w, dtype=features.dtype)
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois.tolist()):
        img = features[int(roi[0])]
        x1, y1 = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        roi_w, roi_h = roi[3] * spatial_scale - offset - x1, roi[4] * spatial_scale - offset - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        count = max(grid_h * grid_w, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = torch.zeros(features.shape[1], dtype=features.dtype)
                for iy in range(grid_h):
                    y = y1 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += bilinear(img, y, x)
                out[k, :, ph, pw] = acc / count
    return out


def ramp_image():
    """1 x 1 x 4 x 4 with v[y, x] = 4 y + x: bilinear sampling of it at (x, y) inside the image gives 4 y + x."""
    return torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def random_axis_angles(n, low, high, generator, dtype=torch.float64):
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=dtype), dim=-1)
    angle = low + (high - low) * torch.rand(n, 1, generator=generator, dtype=dtype)
    return axis * angle


# ---------------------------------------------------------------- roi_align: hand-computed values

@pytest.mark.parametrize("box, output_size, sampling_ratio, expected", [
    # 2 x 2 roi, one bin, samples at 0.5 and 1.5 per axis: mean of the ramp at (1, 1) = 5.
    ([0, 0, 0, 2, 2], (1, 1), 2, [[5.0]]),
    # Four unit bins, one sample at each bin centre.
    ([0, 0, 0, 2, 2], (2, 2), 1, [[2.5, 3.5], [6.5, 7.5]]),
    # Box from -2 to 1: samples at -1.5 (outside [-1, H], so 0), -0.5 (read at the border, 0) and 0.5 per axis;
    # the four valid ones are 0, 0.5, 2, 2.5 and the bin divides by all 9 samples.
    ([0, -2, -2, 1, 1], (1, 1), 3, [[5.0 / 9.0]]),
    # Box from 2 to 6: samples at 3 (last pixel, 15) and 5 (> H = 4, so 0) per axis: 15 / 4.
    ([0, 2, 2, 6, 6], (1, 1), 2, [[15.0 / 4.0]]),
    # A zero-size box grows to 1 x 1 (aligned=False): one sample at (1.5, 1.5).
    ([0, 1, 1, 1, 1], (1, 1), 1, [[7.5]]),
    # Adaptive grid: roi 3 / output 1 -> ceil(3) = 3 samples per axis at 0.5, 1.5, 2.5 -> ramp at (1.5, 1.5).
    ([0, 0, 0, 3, 3], (1, 1), 0, [[7.5]]),
])
def test_roi_align_matches_hand_computed_values(box, output_size, sampling_ratio, expected):
    out = ops.roi_align(ramp_image(), torch.tensor([box], dtype=torch.float64), output_size,
                        sampling_ratio=sampling_ratio)
    torch.testing.assert_close(out[0, 0], torch.tensor(expected, dtype=torch.float64))


def test_roi_align_aligned_true_shifts_by_half_a_pixel():
    # [0.5, 2.5] shifted by -0.5 is [0, 2]: the same samples as the unaligned [0, 2] box, mean 5.
    out = ops.roi_align(ramp_image(), torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]], dtype=torch.float64), (1, 1),
                        sampling_ratio=2, aligned=True)
    assert out.item() == pytest.approx(5.0)


def test_roi_align_spatial_scale_maps_boxes_to_feature_pixels():
    # Input-pixel box [0, 4] at scale 0.5 is feature box [0, 2]: mean 5 as above.
    out = ops.roi_align(ramp_image(), torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float64), (1, 1),
                        spatial_scale=0.5, sampling_ratio=2)
    assert out.item() == pytest.approx(5.0)


# ---------------------------------------------------------------- roi_align: against the loop reference

def _random_rois(generator, num_images, height, width):
    """Boxes inside, straddling every border, fully outside, degenerate and inverted."""
    boxes = [
        [0, 1.3, 0.7, 6.2, 5.9],
        [1, -3.0, -2.5, 4.1, 3.3],
        [1, 5.5, 4.0, width + 4.0, height + 3.0],
        [0, -6.0, -5.0, -2.0, -1.5],
        [1, 2.2, 2.2, 2.2, 2.2],
        [0, 4.0, 3.0, 1.0, 1.5],
    ]
    for _ in range(4):
        x1, y1 = (torch.rand(2, generator=generator) * torch.tensor([width, height]) * 1.4 - 2).tolist()
        w, h = (torch.rand(2, generator=generator) * torch.tensor([width, height]) * 1.2 + 0.2).tolist()
        boxes.append([int(torch.randint(num_images, (1,), generator=generator)), x1, y1, x1 + w, y1 + h])
    return torch.tensor(boxes, dtype=torch.float64)


@pytest.mark.parametrize("sampling_ratio", [1, 2, 0])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_roi_align_matches_torchvision_reference(sampling_ratio, aligned, spatial_scale):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 7, 9, generator=generator, dtype=torch.float64)
    rois = _random_rois(generator, 2, 7 / spatial_scale, 9 / spatial_scale)
    expected = reference_roi_align(features, rois, (3, 4), spatial_scale, sampling_ratio, aligned)
    out = ops.roi_align(features, rois, (3, 4), spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_roi_align_one_box_per_image_equals_indexed_boxes():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(3, 2, 6, 5, generator=generator)
    boxes = torch.tensor([[0.5, 1.0, 4.0, 5.5], [-1.0, -1.0, 3.0, 2.0], [2.0, 3.0, 7.0, 8.0]])
    indexed = torch.cat((torch.arange(3.0)[:, None], boxes), dim=1)
    torch.testing.assert_close(ops.roi_align(features, boxes, 4), ops.roi_align(features, indexed, 4))


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
def test_roi_align_mirror_is_the_flipped_crop_bit_for_bit(sampling_ratio):
    # Hand4Whole feeds the left hand mirrored; the crop itself comes out mirrored, with no flip op.
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 3, 40, 52, generator=generator)
    boxes = torch.tensor([[3.3, 5.1, 35.7, 30.2], [-5.0, 10.0, 60.0, 45.0]])
    plain = ops.roi_align(features, boxes, (9, 7), sampling_ratio=sampling_ratio)
    assert torch.equal(ops.roi_align(features, boxes, (9, 7), sampling_ratio=sampling_ratio, mirror=True),
                       torch.flip(plain, [3]))


def test_roi_align_hand4whole_crop_matches_adaptive_grid_for_boxes_smaller_than_the_patch():
    # A 120 px hand box cropped to 256 x 256: ceil(120 / 256) = 1, so the export ratio is torchvision's choice.
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 512, 384, generator=generator)
    box = torch.tensor([[0.0, 150.0, 200.0, 270.0, 320.0]])
    torch.testing.assert_close(ops.roi_align(image, box, (256, 256), sampling_ratio=ops.EXPORT_SAMPLING_RATIO),
                               ops.roi_align(image, box, (256, 256), sampling_ratio=0))


def test_roi_align_gradient_reaches_features():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(1, 2, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, -0.7, 0.4, 4.3, 3.8]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: ops.roi_align(f, rois, (2, 3), sampling_ratio=2), (features,))


def test_roi_align_exports_with_a_fixed_sampling_ratio():
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(2, 3, 32, 24, generator=generator)
    boxes = torch.tensor([[3.0, 4.0, 20.0, 25.0], [-5.0, 10.0, 30.0, 40.0]])
    crop = functools.partial(ops.roi_align, output_size=(16, 16), sampling_ratio=ops.EXPORT_SAMPLING_RATIO)
    assert_exports_and_matches(crop, features, boxes, atol=1e-5)
    program = torch.export.export(_Fn(crop), (features, boxes), strict=False)
    other_boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [10.0, -3.0, 22.0, 12.0]])
    torch.testing.assert_close(program.module()(features, other_boxes), crop(features, other_boxes))


def test_roi_align_adaptive_grid_refuses_export_with_an_explanation():
    crop = functools.partial(ops.roi_align, output_size=(2, 2), sampling_ratio=0)
    with pytest.raises(ValueError, match="cannot be exported"):
        torch.export.export(_Fn(crop), (torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0.0, 3.0, 3.0]])), strict=False)


def test_roi_align_rejects_boxes_of_the_wrong_shape():
    with pytest.raises(ValueError, match="K x 5"):
        ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(2, 3), 2)


# ---------------------------------------------------------------- soft-argmax

def test_soft_argmax_2d_of_a_peaked_heatmap_is_the_peak():
    heatmap = torch.zeros(2, 3, 8, 6)
    peaks = [[(0, 0), (5, 7), (2, 3)], [(4, 1), (1, 6), (3, 3)]]  # (x, y)
    for b, row in enumerate(peaks):
        for j, (x, y) in enumerate(row):
            heatmap[b, j, y, x] = 100.0
    torch.testing.assert_close(ops.soft_argmax_2d(heatmap), torch.tensor(peaks, dtype=torch.float32))


def test_soft_argmax_2d_of_a_flat_heatmap_is_the_centre():
    out = ops.soft_argmax_2d(torch.zeros(1, 1, 8, 6))
    torch.testing.assert_close(out, torch.tensor([[[2.5, 3.5]]]))  # ((W - 1) / 2, (H - 1) / 2)


def test_soft_argmax_2d_averages_two_equal_peaks():
    heatmap = torch.zeros(1, 1, 8, 6)
    heatmap[0, 0, 1, 1] = heatmap[0, 0, 5, 3] = 100.0
    torch.testing.assert_close(ops.soft_argmax_2d(heatmap), torch.tensor([[[2.0, 3.0]]]))


def test_soft_argmax_3d_of_a_peaked_heatmap_is_the_peak():
    heatmap = torch.zeros(1, 2, 8, 8, 6)
    heatmap[0, 0, 7, 2, 5] = 100.0  # z = 7, y = 2, x = 5
    heatmap[0, 1, 0, 6, 1] = 100.0
    torch.testing.assert_close(ops.soft_argmax_3d(heatmap), torch.tensor([[[5.0, 2.0, 7.0], [1.0, 6.0, 0.0]]]))


def test_soft_argmax_3d_of_a_flat_heatmap_is_the_centre():
    torch.testing.assert_close(ops.soft_argmax_3d(torch.zeros(1, 1, 8, 8, 6)), torch.tensor([[[2.5, 3.5, 3.5]]]))


def test_soft_argmax_is_differentiable_and_exports():
    heatmap2d = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    heatmap3d = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.soft_argmax_2d, (heatmap2d,))
    assert torch.autograd.gradcheck(ops.soft_argmax_3d, (heatmap3d,))
    assert_exports_and_matches(ops.soft_argmax_2d, heatmap2d.detach().float(), atol=1e-5)
    assert_exports_and_matches(ops.soft_argmax_3d, heatmap3d.detach().float(), atol=1e-5)


def test_soft_argmax_3d_equals_the_marginal_sums_of_integral_regression():
    """Sun et al.'s form written out (marginal of each axis, weighted by the index), against the one product
    the function computes: equal up to the order of the float sums."""
    logits = torch.randn(2, 5, 4, 6, 3, dtype=torch.float64) * 3
    prob = torch.softmax(logits.flatten(-3), -1).view_as(logits)
    want = torch.stack([(prob.sum(dims) * torch.arange(n, dtype=torch.float64)).sum(-1)
                        for dims, n in (((-3, -2), 3), ((-3, -1), 6), ((-2, -1), 4))], dim=-1)
    torch.testing.assert_close(ops.soft_argmax_3d(logits), want, rtol=0, atol=1e-12)
    prob2 = torch.softmax(logits[:, :, 0].flatten(-2), -1).view_as(logits[:, :, 0])
    want2 = torch.stack([(prob2.sum(-2) * torch.arange(3.0, dtype=torch.float64)).sum(-1),
                         (prob2.sum(-1) * torch.arange(6.0, dtype=torch.float64)).sum(-1)], dim=-1)
    torch.testing.assert_close(ops.soft_argmax_2d(logits[:, :, 0]), want2, rtol=0, atol=1e-12)


def test_soft_argmax_first_called_in_inference_or_fake_mode_still_trains():
    """The coordinate table is cached: a first call under inference mode or an export's fake tensors must not
    leave a tensor that a later training step cannot use."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops._grid_coords.cache_clear()
    with FakeTensorMode():
        ops.soft_argmax_3d(torch.empty(1, 2, 3, 4, 5))
    with torch.inference_mode():
        ops.soft_argmax_3d(torch.randn(1, 2, 3, 4, 5))
    logits = torch.randn(1, 2, 3, 4, 5, requires_grad=True)
    ops.soft_argmax_3d(logits).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- sample_joint_features

def _plane_features(height, width):
    """1 x 2 x H x W with channel 0 = 2 x + 3 y + 1 and channel 1 = -x + 0.5 y, exact under bilinear sampling."""
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    return torch.stack((2 * x + 3 * y + 1, -x + 0.5 * y))[None]


def test_sample_joint_features_reads_pixel_centres_at_integer_coordinates():
    feat = torch.randn(2, 4, 8, 6, dtype=torch.float64)
    coords = torch.tensor([[[0.0, 0.0], [5.0, 7.0]], [[3.0, 2.0], [0.0, 7.0]]], dtype=torch.float64)
    out = ops.sample_joint_features(feat, coords)
    expected = torch.stack([torch.stack([feat[b, :, int(y), int(x)] for x, y in coords[b].tolist()])
                            for b in range(2)])
    torch.testing.assert_close(out, expected)


def test_sample_joint_features_interpolates_bilinearly():
    coords = torch.tensor([[[1.25, 2.5], [4.9, 0.1], [0.0, 6.75]]], dtype=torch.float64)
    x, y = coords[..., 0], coords[..., 1]
    expected = torch.stack((2 * x + 3 * y + 1, -x + 0.5 * y), dim=-1)
    torch.testing.assert_close(ops.sample_joint_features(_plane_features(8, 6), coords), expected)


def test_sample_joint_features_is_differentiable_and_exports():
    feat = torch.randn(2, 3, 8, 6, dtype=torch.float64, requires_grad=True)
    coords = (torch.rand(2, 5, 2, dtype=torch.float64) * torch.tensor([5.0, 7.0], dtype=torch.float64))
    assert torch.autograd.gradcheck(ops.sample_joint_features, (feat, coords.requires_grad_()))
    assert_exports_and_matches(ops.sample_joint_features, feat.detach().float(), coords.detach().float(), atol=1e-5)


# ---------------------------------------------------------------- rotations

def test_rot6d_of_the_identity_columns_is_the_identity():
    # R[:, :2] read row by row: (1, 0), (0, 1), (0, 0).
    out = ops.rot6d_to_rotmat(torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.eye(3)[None])


def test_rot6d_uses_the_first_two_columns_row_by_row():
    rotmat = rot_z(math.pi / 2)
    six = rotmat[:, :2].reshape(1, 6)  # (0, -1, 1, 0, 0, 0)
    torch.testing.assert_close(ops.rot6d_to_rotmat(six), rotmat[None])


def test_rot6d_gram_schmidt_ignores_scale_and_the_second_columns_parallel_part():
    # Column 1 = 3 e_x, column 2 = 2 e_x + 5 e_y: normalised and orthogonalised to e_x, e_y, so R = I.
    six = torch.tensor([[3.0, 2.0, 0.0, 5.0, 0.0, 0.0]])
    torch.testing.assert_close(ops.rot6d_to_rotmat(six), torch.eye(3)[None])


def test_rot6d_gives_proper_rotations():
    rotmat = ops.rot6d_to_rotmat(torch.randn(64, 6, dtype=torch.float64))
    torch.testing.assert_close(rotmat.transpose(-1, -2) @ rotmat, torch.eye(3, dtype=torch.float64).expand(64, 3, 3))
    torch.testing.assert_close(torch.linalg.det(rotmat), torch.ones(64, dtype=torch.float64))


@pytest.mark.parametrize("axis_angle, expected", [
    ((0.0, 0.0, math.pi / 2), [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    ((math.pi / 2, 0.0, 0.0), [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
    ((0.0, math.pi, 0.0), [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]),
    ((0.0, 0.0, 0.0), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
])
def test_axis_angle_to_rotmat_gives_known_rotations(axis_angle, expected):
    out = ops.axis_angle_to_rotmat(torch.tensor([axis_angle], dtype=torch.float64))
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64))


def test_axis_angle_to_rotmat_of_a_120_degree_turn_about_the_diagonal_cycles_the_axes():
    axis_angle = torch.full((1, 3), 2 * math.pi / 3 / math.sqrt(3), dtype=torch.float64)
    cycle = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(ops.axis_angle_to_rotmat(axis_angle)[0], cycle)


def test_rotmat_to_axis_angle_of_90_degrees_about_z():
    out = ops.rotmat_to_axis_angle(rot_z(math.pi / 2)[None])
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))


@pytest.mark.parametrize("dtype, atol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
def test_axis_angle_round_trips_for_angles_in_zero_to_pi(dtype, atol):
    generator = torch.Generator().manual_seed(5)
    axis_angle = random_axis_angles(512, 1e-3, math.pi - 1e-3, generator).to(dtype)
    torch.testing.assert_close(ops.rotmat_to_axis_angle(ops.axis_angle_to_rotmat(axis_angle)), axis_angle,
                               atol=atol, rtol=0)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5])
def test_axis_angle_round_trips_at_and_near_zero(angle):
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=torch.float64), dim=-1)
    axis_angle = axis * angle
    torch.testing.assert_close(ops.rotmat_to_axis_angle(ops.axis_angle_to_rotmat(axis_angle)), axis_angle,
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("gap", [1e-3, 1e-6])
def test_axis_angle_round_trips_near_pi(gap):
    generator = torch.Generator().manual_seed(6)
    axis_angle = random_axis_angles(64, math.pi - gap, math.pi - gap, generator)
    torch.testing.assert_close(ops.rotmat_to_axis_angle(ops.axis_angle_to_rotmat(axis_angle)), axis_angle,
                               atol=1e-8, rtol=0)


def test_rotmat_to_axis_angle_at_exactly_pi_returns_the_same_rotation():
    # At pi the axis sign is arbitrary (r and -r agree): the angle and the rotation must survive.
    generator = torch.Generator().manual_seed(7)
    axis_angle = random_axis_angles(64, math.pi, math.pi, generator)
    rotmat = ops.axis_angle_to_rotmat(axis_angle)
    recovered = ops.rotmat_to_axis_angle(rotmat)
    torch.testing.assert_close(recovered.norm(dim=-1), torch.full((64,), math.pi, dtype=torch.float64))
    torch.testing.assert_close(ops.axis_angle_to_rotmat(recovered), rotmat)


def test_rotation_gradients_are_finite_at_identity_and_at_pi():
    axis_angle = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.pi], [0.0, math.pi, 0.0]], dtype=torch.float64,
                              requires_grad=True)
    ops.rotmat_to_axis_angle(ops.axis_angle_to_rotmat(axis_angle)).sum().backward()
    assert torch.isfinite(axis_angle.grad).all()
    six = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 1.0, 0.0, 0.0]], requires_grad=True)
    ops.rot6d_to_axis_angle(six).sum().backward()
    assert torch.isfinite(six.grad).all()


def test_rotation_conversions_are_differentiable_where_smooth():
    generator = torch.Generator().manual_seed(8)
    axis_angle = random_axis_angles(4, 0.2, 2.8, generator).requires_grad_()
    assert torch.autograd.gradcheck(ops.axis_angle_to_rotmat, (axis_angle,))
    assert torch.autograd.gradcheck(ops.rot6d_to_axis_angle, (torch.randn(4, 6, dtype=torch.float64,
                                                                          requires_grad=True),))


def test_rot6d_to_axis_angle_recovers_the_rotation_of_its_columns():
    generator = torch.Generator().manual_seed(9)
    axis_angle = random_axis_angles(32, 0.0, math.pi - 1e-3, generator)
    six = ops.axis_angle_to_rotmat(axis_angle)[..., :2].flatten(-2)
    torch.testing.assert_close(ops.rot6d_to_axis_angle(six), axis_angle, atol=1e-10, rtol=0)


def test_rotation_ops_export():
    generator = torch.Generator().manual_seed(10)
    axis_angle = random_axis_angles(8, 0.0, math.pi, generator, torch.float32)
    axis_angle[0] = 0.0
    assert_exports_and_matches(ops.axis_angle_to_rotmat, axis_angle, atol=1e-6)
    assert_exports_and_matches(ops.rotmat_to_axis_angle, ops.axis_angle_to_rotmat(axis_angle), atol=1e-6)
    assert_exports_and_matches(ops.rot6d_to_rotmat, torch.randn(8, 6, generator=generator), atol=1e-6)
    assert_exports_and_matches(ops.rot6d_to_axis_angle, torch.randn(8, 15, 6, generator=generator), atol=1e-6)


# ---------------------------------------------------------------- boxes and flips

def test_restore_bbox_makes_a_hand_box_square_and_doubles_it():
    # Center (3, 4) cells -> (96, 128) px; size (1, 0.5) cells -> 32 x 16 px -> square 32 -> x2 = 64.
    box = ops.restore_bbox(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.5]]), 1.0, 2.0)
    torch.testing.assert_close(box, torch.tensor([[64.0, 96.0, 128.0, 160.0]]))


def test_restore_bbox_grows_the_short_side_of_a_tall_face_box():
    # Size (0.5, 1) cells -> 16 x 32 px -> 32 x 32 -> x1.5 = 48 about (96, 128).
    box = ops.restore_bbox(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.5, 1.0]]), 1.0, 1.5)
    torch.testing.assert_close(box, torch.tensor([[72.0, 104.0, 120.0, 152.0]]))


def test_restore_bbox_reaches_a_non_square_aspect_ratio():
    # 32 x 32 px at W / H = 0.75: the height grows to 32 / 0.75 = 42.67 px.
    box = ops.restore_bbox(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 1.0]]), 0.75, 1.0)
    half_h = 32.0 / 0.75 / 2
    torch.testing.assert_close(box, torch.tensor([[16.0, 32.0 - half_h, 48.0, 32.0 + half_h]]))


def test_restore_bbox_exports():
    generator = torch.Generator().manual_seed(11)
    restore = functools.partial(ops.restore_bbox, aspect_ratio=1.0, extension=2.0)
    assert_exports_and_matches(restore, torch.rand(4, 2, generator=generator) * 6,
                               torch.rand(4, 2, generator=generator), atol=1e-5)


def test_flip_x_mirrors_pixel_centres():
    coords = torch.tensor([[[0.0, 1.0, 2.0], [7.0, 3.0, 4.0], [2.5, 0.0, 0.0]]])
    torch.testing.assert_close(ops.flip_x(coords, 8), torch.tensor([[[7.0, 1.0, 2.0], [0.0, 3.0, 4.0],
                                                                     [4.5, 0.0, 0.0]]]))
    torch.testing.assert_close(ops.flip_x(ops.flip_x(coords, 8), 8), coords)


def test_flip_axis_angle_is_the_mirror_conjugate_rotation():
    generator = torch.Generator().manual_seed(12)
    axis_angle = random_axis_angles(16, 0.0, math.pi, generator)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ops.axis_angle_to_rotmat(ops.flip_axis_angle(axis_angle)),
                               mirror @ ops.axis_angle_to_rotmat(axis_angle) @ mirror)


def test_flips_export():
    coords = torch.rand(2, 20, 3) * 8
    assert_exports_and_matches(functools.partial(ops.flip_x, width=8), coords)
    assert_exports_and_matches(ops.flip_axis_angle, torch.randn(2, 15, 3))


def test_position_net_takes_one_softmax_for_its_heatmap_and_its_soft_argmax():
    from bidrn.models.heads import PositionNet

    torch.manual_seed(0)
    net = PositionNet(16, joint_num=5, depth=4).eval()
    feat = torch.randn(2, 16, 6, 3)
    heatmap, joint_img = net(feat)
    logits = net.conv(feat).view(2, 5, 4, 6, 3)
    # Bit for bit what the two separate calls gave: the same softmax, the same product.
    assert torch.equal(heatmap, torch.softmax(logits.flatten(2), dim=2).view_as(logits))
    assert torch.equal(joint_img, ops.soft_argmax_3d(logits))
    assert heatmap.shape == (2, 5, 4, 6, 3) and joint_img.shape == (2, 5, 3)
