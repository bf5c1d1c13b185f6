"""Where the person stands and how the camera frames them.

The person is placed in front of an OpenCV camera (x right, y down, z forward); SMPL-X's frame (Y up, +Z towards
the viewer) is turned upright by a rotation of pi about x, which is part of the global orientation, as in
Hand4Whole's camera-space parameters. Framing then does what a detector plus Hand4Whole's crop would do: take
the person's box, widen it to the input's aspect, scale it by ~1.25 with jitter, and resize it to the input.
A crop of a pinhole image is again a pinhole camera, so the result is the focal length and principal point of
the input image itself.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .rng import BatchRandom
from .rotations import compose

FLIP = torch.tensor([math.pi, 0.0, 0.0])  # SMPL-X (Y up, Z to the viewer) -> OpenCV camera (y down, z away)


def sample_global_orient(rng: BatchRandom) -> Tensor:
    """B x 3 camera-frame global orientation: a yaw (mostly facing the camera, sometimes any way), the flip
    into the camera frame, then a small camera pitch and roll."""
    yaw = torch.where(rng.chance(0.6), rng.normal(std=0.7), rng.uniform(low=-math.pi, high=math.pi))
    zero = torch.zeros_like(yaw)
    pitch, roll = rng.normal(std=0.12), rng.normal(std=0.06)
    return compose(torch.stack([zero, yaw, zero], -1), FLIP.expand(len(yaw), 3),
                   torch.stack([pitch, zero, zero], -1), torch.stack([zero, zero, roll], -1))


def sample_position(rng: BatchRandom) -> Tensor:
    """B x 3 pelvis position in metres: 2.5-9 m away, off the optical axis as people are in photos
    (mostly below it: cameras are held near head height)."""
    z = rng.uniform(low=2.5, high=9.0)
    return torch.stack([z * rng.uniform(low=-0.35, high=0.35), z * rng.uniform(low=-0.1, high=0.3), z], -1)


def frame(points: Tensor, rng: BatchRandom, input_size: tuple[int, int], scale: tuple[float, float] = (1.15, 1.4),
          shift: float = 0.06) -> tuple[Tensor, Tensor]:
    """Focal B x 2 and principal point B x 2 (input pixels) of a crop around points B x N x 3 (camera frame).

    The crop is the points' box on the normalised image plane (x/z, y/z), made to the input's aspect
    (Hand4Whole's process_bbox), scaled by a random factor in `scale`, its centre moved by up to `shift` of its size.
    """
    h, w = input_size
    uv = points[..., :2] / points[..., 2:]  # B x N x 2
    lo, hi = uv.min(1).values, uv.max(1).values
    centre, size = (lo + hi) / 2, hi - lo
    box_h = torch.maximum(size[:, 1], size[:, 0] * h / w) * rng.uniform(low=scale[0], high=scale[1])  # B
    centre = centre + rng.normal(2, std=shift) * box_h.unsqueeze(-1) * torch.tensor([w / h, 1.0])
    f = h / box_h  # B: the crop's height maps onto the input's height
    focal = torch.stack([f, f], -1)
    principal = torch.tensor([w / 2, h / 2]) - focal * centre
    return focal, principal


def project(points: Tensor, focal: Tensor, principal: Tensor) -> Tensor:
    """Pixel coordinates B x N x 2 of camera-frame points B x N x 3."""
    return focal.unsqueeze(1) * points[..., :2] / points[..., 2:] + principal.unsqueeze(1)
