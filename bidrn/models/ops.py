"""Small differentiable tensor ops shared by the Hand4Whole / BiDRN heads.

Every op is batched, written in plain torch and free of data-dependent Python control flow, so the heads that use
them go through ``torch.export`` (the one exception, RoIAlign's adaptive sampling grid, is documented on
``roi_align``). Coordinates follow Hand4Whole (Moon et al., CVPR-W 2022): heatmap pixels with x along the width,
and 6D rotations laid out as the first two columns of the rotation matrix read row by row (``R[:, :2]``
flattened, i.e. ``x.view(3, 2)`` gives the two columns).
"""
from __future__ import annotations

import functools

import numpy as np

import torch
from torch.nn import functional as F

# RoIAlign sampling grid for export. Hand4Whole crops hands to 256x256 and faces to 192x192 from a 512x384 image;
# a hand box is the hand made square and doubled, a face box 1.5x the face. For a person filling the 512x384 crop
# (hand ~50 px, face ~65 px tall) the boxes are ~100 px, smaller than the patch, so torchvision's adaptive grid
# ceil(roi / output) is 1 and a fixed ratio of 1 reproduces the crops the network was trained on exactly, at a
# quarter of the cost of ratio 2. Only boxes larger than the patch (hand box > 256 px, face box > 192 px:
# close-ups) differ: one sample per bin instead of torchvision's 2x2 average, a slightly sharper, more aliased
# crop of the same region.
EXPORT_SAMPLING_RATIO = 1


def _boxes_with_batch_index(boxes: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """K x 5 [batch_idx, x1, y1, x2, y2] or B x 4 -> (batch index K or None, K x 4 xyxy)."""
    if boxes.dim() != 2 or boxes.shape[-1] not in (4, 5):
        raise ValueError(
            f"roi_align: boxes must be K x 5 [batch_idx, x1, y1, x2, y2] or B x 4 [x1, y1, x2, y2] (one per image), "
            f"got shape {tuple(boxes.shape)}"
        )
    if boxes.shape[-1] == 4:
        return None, boxes
    return boxes[:, 0].long(), boxes[:, 1:]


def _bin_samples(start: torch.Tensor, bin_size: torch.Tensor, grid: torch.Tensor, out: int, max_grid: int,
                 extent: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample positions and weights along one axis of RoIAlign.

    start, bin_size, grid: K; returns positions K x (out * max_grid), clamped into the image as torchvision does,
    and weights K x out x max_grid: 1 for a sample inside [-1, extent] and inside this roi's own grid, else 0.
    """
    bins = torch.arange(out, device=start.device, dtype=start.dtype)
    steps = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    grid_f = grid.to(start.dtype).clamp_min(1)[:, None, None]
    # Sample iy of bin p sits at start + p * bin + (iy + 0.5) * bin / grid (bin-centred regular grid).
    pos = start[:, None, None] + bin_size[:, None, None] * (bins[None, :, None] + (steps[None, None, :] + 0.5) / grid_f)
    inside = (pos >= -1.0) & (pos <= float(extent))
    in_grid = steps[None, None, :] < grid[:, None, None].to(start.dtype)
    weight = (inside & in_grid).to(start.dtype)
    # Between -1 and 0 torchvision reads the border pixel; past extent - 1 it reads the last one.
    clamped = pos.clamp(0.0, float(extent - 1))
    return clamped.reshape(pos.shape[0], -1), weight


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = EXPORT_SAMPLING_RATIO,
              aligned: bool = False, mirror: bool = False) -> torch.Tensor:
    """RoIAlign (He et al., Mask R-CNN, 2017) with torchvision.ops.roi_align's exact semantics.

    features: B x C x H x W; boxes: K x 5 [batch_idx, x1, y1, x2, y2] or B x 4 (box k crops image k), in input
    pixels that ``spatial_scale`` maps to feature pixels. Returns K x C x out_h x out_w.

    aligned=False (Hand4Whole) keeps torchvision's legacy convention: no half-pixel shift and roi sides clamped to
    >= 1 px. Each bin averages a grid of bilinear samples; a sample outside [-1, H] x [-1, W] contributes 0.
    sampling_ratio > 0 fixes that grid (exportable; see EXPORT_SAMPLING_RATIO for the model's choice);
    sampling_ratio <= 0 uses torchvision's adaptive ceil(roi_h / out_h) x ceil(roi_w / out_w), whose size depends
    on the box values, so it runs in eager mode only.
    mirror=True returns the crop flipped left-right, bit for bit ``torch.flip(roi_align(...), [3])``: the bins are
    taken in reverse order and each bin's samples in their usual order, so every sum rounds as unmirrored, and
    no flip of the crop itself runs (a slow portable op in ExecuTorch).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    batch_index, xyxy = _boxes_with_batch_index(boxes)
    if batch_index is None and boxes.shape[0] != features.shape[0]:
        raise ValueError(f"roi_align: B x 4 boxes need one box per image, got {boxes.shape[0]} boxes for "
                         f"{features.shape[0]} images; pass K x 5 boxes with a batch index instead")
    height, width = features.shape[-2:]
    xyxy = xyxy.to(features.dtype) * spatial_scale - (0.5 if aligned else 0.0)
    x1, y1, x2, y2 = xyxy.unbind(-1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w

    if sampling_ratio > 0:
        grid_h = torch.full_like(bin_h, sampling_ratio)
        grid_w = grid_h
        max_grid_h = max_grid_w = sampling_ratio
    else:
        if torch.compiler.is_exporting():
            raise ValueError("roi_align: the adaptive sampling grid (sampling_ratio <= 0) depends on the box values "
                             "and cannot be exported; pass a fixed sampling_ratio such as EXPORT_SAMPLING_RATIO")
        grid_h, grid_w = torch.ceil(bin_h), torch.ceil(bin_w)
        max_grid_h = max(int(grid_h.max().item()) if grid_h.numel() else 1, 1)
        max_grid_w = max(int(grid_w.max().item()) if grid_w.numel() else 1, 1)

    ys, weight_y = _bin_samples(y1, bin_h, grid_h, out_h, max_grid_h, height)
    xs, weight_x = _bin_samples(x1, bin_w, grid_w, out_w, max_grid_w, width)
    if mirror:  # reverse the bins, not the samples within a bin (tiny K x out_w x G tensors)
        xs = xs.unflatten(1, (out_w, max_grid_w)).flip(1).flatten(1)
        weight_x = weight_x.flip(1)
    # grid_sample with align_corners=True reads pixel i at -1 + 2 i / (n - 1): exact bilinear interpolation on
    # coordinates already clamped into the image, which is what torchvision's bilinear_interpolate does.
    gy = ys / max(height - 1, 1) * 2 - 1
    gx = xs / max(width - 1, 1) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # K x outh*G x outw*G x 2
    source = features if batch_index is None else features.index_select(0, batch_index)
    samples = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    samples = samples.unflatten(3, (out_w, max_grid_w)).unflatten(2, (out_h, max_grid_h))  # K x C x oh x Gh x ow x Gw
    weight = weight_y[:, None, :, :, None, None] * weight_x[:, None, None, None, :, :]
    count = (grid_h.clamp_min(0) * grid_w.clamp_min(0)).clamp_min(1.0)
    return (samples * weight).sum(dim=(3, 5)) / count[:, None, None, None]


@functools.lru_cache(maxsize=32)
def _grid_coords(sizes: tuple[int, ...]) -> np.ndarray:
    """Cell coordinates of a grid of the given sizes (slowest axis first), row-major: prod(sizes) x len(sizes),
    columns in reverse order of the axes (x = the last axis first), float32; read only. A NumPy array, so the
    cache holds no tensor of whatever mode the first call ran in (an export's fake tensors, inference mode)."""
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in sizes), indexing="ij")
    return np.ascontiguousarray(np.stack([g.reshape(-1) for g in reversed(grid)], axis=-1))


def expected_coords(prob: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    """The expected cell index along each axis of a grid of the given sizes (slowest first), for probabilities
    over its cells (... x prod(sizes), row-major): ... x len(sizes), x (the last axis) first. One matrix product
    of the probabilities with the cells' coordinates (prob (... x N) @ coords (N x ndim)): the same value as
    summing the marginals and weighting them (the form of Sun et al.), in another order of the float sums; it
    runs as one matmul in eager and in the exported program (the marginal sums were six generic reductions
    there, about 0.4 ms of the int8 BiDRN's 58 ms)."""
    coords = torch.from_numpy(_grid_coords(tuple(int(n) for n in sizes)))  # shares the cached array: never written
    # Converted only where it differs, so an exported graph (float32, CPU) gets no copy between the
    # constant and the product (export.drop_constant_copies removes the one torch.export adds).
    if coords.dtype != prob.dtype or coords.device != prob.device:
        coords = coords.to(device=prob.device, dtype=prob.dtype)
    return torch.matmul(prob, coords)


def _expected_coords(logits: torch.Tensor, ndim: int) -> torch.Tensor:
    """Softmax over the last ndim axes, then the expected cell index along each (expected_coords)."""
    return expected_coords(F.softmax(logits.flatten(-ndim), dim=-1), tuple(logits.shape[-ndim:]))


def soft_argmax_2d(heatmap: torch.Tensor) -> torch.Tensor:
    """Integral regression (Sun et al., ECCV 2018): B x J x H x W logits -> B x J x 2 (x, y) in heatmap pixels.

    Softmax over all H*W cells, then the expected pixel index along each axis.
    """
    return _expected_coords(heatmap, 2)


def soft_argmax_3d(heatmap: torch.Tensor) -> torch.Tensor:
    """Integral regression (Sun et al., ECCV 2018): B x J x D x H x W logits -> B x J x 3 (x, y, z) in voxels."""
    return _expected_coords(heatmap, 3)


def sample_joint_features(feat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear feature lookup: feat B x C x H x W, coords B x J x 2 (x, y) in feature pixels -> B x J x C.

    x = 0 and x = W - 1 are the centres of the first and last pixels (align_corners=True), as Hand4Whole samples
    joint features and BoxNet's box-centre features; points outside fade to zero (zero padding).
    """
    height, width = feat.shape[-2:]
    gx = coords[..., 0] / max(width - 1, 1) * 2 - 1
    gy = coords[..., 1] / max(height - 1, 1) * 2 - 1
    grid = torch.stack((gx, gy), dim=-1)[:, :, None, :]  # B x J x 1 x 2
    sampled = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)  # B x C x J x 1
    return sampled[..., 0].transpose(1, 2)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """Continuous 6D rotation (Zhou et al., CVPR 2019) -> rotation matrix: ... x 6 -> ... x 3 x 3.

    The 6 numbers are R[:, :2] read row by row (Hand4Whole's ``view(-1, 3, 2)``); Gram-Schmidt makes column 1 unit,
    column 2 unit and orthogonal to it, and column 3 their cross product.
    """
    cols = x.unflatten(-1, (3, 2))
    a1, a2 = cols[..., 0], cols[..., 1]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """... x 3 -> ... x 3 x 3 cross-product matrix [v]_x."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).unflatten(-1, (3, 3))


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ... x 3 axis-angle (angle = norm) -> ... x 3 x 3.

    R = I + (sin t / t) K + ((1 - cos t) / t^2) K^2 with K = [r]_x; both coefficients switch to their Taylor series
    near t = 0 so the value and the gradient stay finite at the identity.
    """
    theta2 = (axis_angle * axis_angle).sum(-1)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    sin_term = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    cos_term = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / (theta * theta))
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin_term[..., None, None] * k + cos_term[..., None, None] * (k @ k)


def _rotmat_to_quaternion(rotmat: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 -> ... x 4 unit quaternion (w, x, y, z) with w >= 0, without data-dependent branches.

    Each of w, x, y, z can be recovered by dividing the matrix entries by 4 times that component; the division
    by the largest one is well conditioned everywhere (Shepperd, 1978), so all four are formed and the best one is
    gathered by index.
    """
    m = rotmat.flatten(-2)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    four_sq = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), -1)
    candidates = torch.stack((
        torch.stack((four_sq[..., 0], m21 - m12, m02 - m20, m10 - m01), -1),
        torch.stack((m21 - m12, four_sq[..., 1], m10 + m01, m02 + m20), -1),
        torch.stack((m02 - m20, m10 + m01, four_sq[..., 2], m12 + m21), -1),
        torch.stack((m10 - m01, m20 + m02, m21 + m12, four_sq[..., 3]), -1),
    ), -2)
    # The chosen row has 4 c^2 >= 1; the floor only keeps sqrt's gradient finite in the discarded rows.
    candidates = candidates / (2 * torch.sqrt(four_sq.clamp_min(0.1)))[..., None]
    best = four_sq.argmax(-1, keepdim=True)[..., None].expand(*four_sq.shape[:-1], 1, 4)
    quat = torch.gather(candidates, -2, best)[..., 0, :]
    quat = F.normalize(quat, dim=-1)
    return quat * torch.where(quat[..., :1] < 0, -1.0, 1.0).to(quat.dtype)


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """... x 3 x 3 rotation matrix -> ... x 3 axis-angle with angle in [0, pi].

    Goes through a unit quaternion q = (cos(t/2), sin(t/2) n): t = 2 atan2(|v|, w) stays accurate at both ends,
    unlike acos((trace - 1) / 2). At t = pi, r and -r are the same rotation and either may come back.
    """
    quat = _rotmat_to_quaternion(rotmat)
    w, v = quat[..., 0], quat[..., 1:]
    sin_half2 = (v * v).sum(-1)
    small = sin_half2 < 1e-8
    sin_half = torch.sqrt(torch.where(small, torch.ones_like(sin_half2), sin_half2))
    # r = v * t / sin(t/2); near t = 0, 2 atan(s / w) / s = 2 / w - 2 s^2 / (3 w^3) + O(s^4), and w ~ 1 there.
    # Each branch only sees safe inputs: torch.where would turn an infinite gradient in the other branch into NaN.
    w_near_one = torch.where(small, w, torch.ones_like(w))
    series = 2 / w_near_one - 2 * sin_half2 / (3 * w_near_one ** 3)
    scale = torch.where(small, series, 2 * torch.atan2(sin_half, w) / sin_half)
    return v * scale[..., None]


def rot6d_to_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """... x 6 (Zhou et al. 2019, Hand4Whole layout) -> ... x 3 axis-angle, as SMPL-X takes its poses."""
    return rotmat_to_axis_angle(rot6d_to_rotmat(x))


def restore_bbox(center: torch.Tensor, size: torch.Tensor, aspect_ratio: float, extension: float,
                 hm_shape: tuple[int, int] = (8, 6), input_shape: tuple[int, int] = (256, 192)) -> torch.Tensor:
    """BoxNet output -> crop box, as Hand4Whole: center, size B x 2 (x, y) in body heatmap cells -> B x 4 xyxy.

    The box center +- size / 2 is mapped to body-input pixels (x 32 for an 8 x 6 heatmap of a 256 x 192 input),
    its short side grown until width / height = aspect_ratio (the crop's W / H, so the crop is not distorted), then
    both sides multiplied by ``extension`` about the same center (2.0 for hands, 1.5 for the face).
    hm_shape and input_shape are (H, W).
    """
    scale = center.new_tensor((input_shape[1] / hm_shape[1], input_shape[0] / hm_shape[0]))
    center_px = center * scale
    width, height = (size * scale).unbind(-1)
    width = torch.maximum(width, aspect_ratio * height)
    height = width / aspect_ratio
    half = torch.stack((width, height), dim=-1) * (extension / 2)
    return torch.cat((center_px - half, center_px + half), dim=-1)


def flip_x(coords: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror pixel coordinates left-right: ... x (2 or 3) -> same, x' = W - 1 - x (pixel centres at 0 .. W - 1).

    Hand4Whole runs the left hand through the right-hand network on a flipped crop; this maps its joints back.
    """
    return torch.cat((width - 1 - coords[..., :1], coords[..., 1:]), dim=-1)


def flip_axis_angle(axis_angle: torch.Tensor) -> torch.Tensor:
    """Mirror a rotation across the x = 0 plane: ... x 3 -> ... x 3, (x, y, z) -> (x, -y, -z).

    With S = diag(-1, 1, 1), S R S rotates about det(S) S r = (x, -y, -z) by the same angle (an axis is a
    pseudovector), which turns a flipped left-hand pose back into a left-hand pose.
    """
    return axis_angle * axis_angle.new_tensor((1.0, -1.0, -1.0))
