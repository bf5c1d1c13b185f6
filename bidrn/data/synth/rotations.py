"""Axis-angle helpers the samplers need beyond the body layer's Rodrigues formula."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bidrn.body.lbs import axis_angle_to_matrix


def matrix_to_axis_angle(rot: Tensor) -> Tensor:
    """... x 3 x 3 -> ... x 3, through the quaternion (stable near 0 and pi, unlike acos of the trace)."""
    m = rot.reshape(-1, 9).unbind(-1)  # m00 m01 m02 m10 m11 m12 m20 m21 m22
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    # Shepperd's method: four estimates of 4 * q * q_k; the one with the largest |q_k| is well conditioned.
    cand = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], 1)  # N x 4 x 4 (w, x, y, z), each row a multiple of the quaternion
    best = torch.stack([cand[:, k, k] for k in range(4)], -1).argmax(-1)
    q = F.normalize(cand[torch.arange(len(best)), best], dim=-1)
    q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)  # w >= 0: the rotation angle lies in [0, pi]
    vec_norm = q[:, 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(vec_norm, q[:, :1])
    return (q[:, 1:] * angle / vec_norm.clamp(min=1e-12)).reshape(rot.shape[:-1])


def compose(*axis_angles: Tensor) -> Tensor:
    """Axis-angle of R_n ... R_2 R_1: the rotations applied in the order given. Each ... x 3."""
    rot = axis_angle_to_matrix(axis_angles[0])
    for aa in axis_angles[1:]:
        rot = axis_angle_to_matrix(aa) @ rot
    return matrix_to_axis_angle(rot)


def rotation_between(a: Tensor, b: Tensor) -> Tensor:
    """Axis-angle of the smallest rotation taking unit vector a to unit vector b. ... x 3 each."""
    axis = torch.cross(a.expand_as(b), b, dim=-1)
    angle = torch.atan2(axis.norm(dim=-1, keepdim=True), (a * b).sum(-1, keepdim=True))
    return F.normalize(axis, dim=-1, eps=1e-12) * angle
