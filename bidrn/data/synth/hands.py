"""Hand poses: a small library (open, relaxed, fist, point, grasp, victory) with jitter, or random within limits.

A hand is 4 fingers x (spread, curl of joints 1-3) plus the thumb's (opposition, adduction, flexion 2, flexion 3),
in degrees, left-hand convention: the rest hand lies along +X palm down, so a finger curls about -z and spreads
about y; the right hand mirrors (x, -y, -z). Finger order is SMPL-X's: index, middle, pinky, ring, thumb.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
import torch.nn.functional as F

from .rng import BatchRandom

# Thumb IP joints flex about this axis (measured on the mesh: it moves the tip under the palm, towards the index).
THUMB_FLEX_AXIS = F.normalize(torch.tensor([0.4, 1.0, 0.0]), dim=0)
SPREAD = (-10.0, 0.0, 14.0, 7.0)  # open-hand spread of index, middle, pinky, ring: fan out from the middle

# name: (curl of joints 1-3 for index, middle, pinky, ring; thumb opposition, adduction, flexion 2, flexion 3)
LIBRARY: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float, float]]] = {
    "open": (((3, 3, 3),) * 4, (0, -5, 0, 0)),
    "relaxed": (((15, 25, 15), (20, 30, 15), (30, 35, 20), (25, 30, 20)), (15, 10, 10, 15)),
    "fist": (((80, 95, 60),) * 4, (45, 25, 30, 45)),
    "point": (((0, 0, 0), (80, 95, 60), (80, 95, 60), (80, 95, 60)), (40, 25, 30, 40)),
    "grasp": (((45, 50, 30), (50, 50, 30), (55, 50, 30), (50, 50, 30)), (55, 0, 15, 20)),
    "victory": (((0, 0, 0), (0, 0, 0), (80, 95, 60), (80, 95, 60)), (45, 25, 30, 45)),
}
CURL_LIMITS = ((-15.0, 90.0), (0.0, 110.0), (0.0, 80.0))
THUMB_LIMITS = ((-10.0, 70.0), (-20.0, 40.0), (-10.0, 60.0), (-10.0, 80.0))
MIRROR = torch.tensor([1.0, -1.0, -1.0])


def hand_pose(curl: Tensor, spread: Tensor, thumb: Tensor, right: bool) -> Tensor:
    """curl B x 4 x 3, spread B x 4, thumb B x 4 (degrees) -> smplx hand pose B x 45 (axis-angle)."""
    b = curl.shape[0]
    rad = math.pi / 180
    fingers = torch.zeros(b, 4, 3, 3)
    fingers[..., 2] = -curl * rad
    fingers[:, :, 0, 1] = spread * rad
    t = thumb * rad
    thumb_aa = torch.stack([
        torch.stack([t[:, 0], t[:, 1], torch.zeros(b)], -1),
        t[:, 2:3] * THUMB_FLEX_AXIS, t[:, 3:4] * THUMB_FLEX_AXIS,
    ], 1)  # B x 3 joints x 3
    aa = torch.cat([fingers.reshape(b, 12, 3), thumb_aa], 1)
    return (aa * MIRROR if right else aa).reshape(b, 45)


def sample_hand_pose(rng: BatchRandom, right: bool, random_prob: float = 0.2, jitter_deg: float = 6.0) -> Tensor:
    """B x 45 hand poses: a library pose plus jitter, or (random_prob) random curls within the limits."""
    curls = torch.tensor([c for c, _ in LIBRARY.values()])  # L x 4 x 3
    thumbs = torch.tensor([t for _, t in LIBRARY.values()])  # L x 4
    which = rng.choice([1.0] * len(LIBRARY))
    lo = torch.tensor([lim[0] for lim in CURL_LIMITS])
    hi = torch.tensor([lim[1] for lim in CURL_LIMITS])
    # Random hands curl each finger as a whole (joints move together), then vary each joint a little.
    random_curl = rng.uniform(4, 1) * (hi - lo) * 0.9 + lo + rng.normal(4, 3, std=10.0)
    tlo, thi = (torch.tensor(x) for x in zip(*THUMB_LIMITS))
    random_thumb = tlo + (thi - tlo) * rng.uniform(4)
    is_random = rng.chance(random_prob)
    curl = torch.where(is_random.view(-1, 1, 1), random_curl, curls[which] + rng.normal(4, 3, std=jitter_deg))
    thumb = torch.where(is_random.view(-1, 1), random_thumb, thumbs[which] + rng.normal(4, std=jitter_deg))
    spread = torch.tensor(SPREAD) * (1 - curl[:, :, 0] / 90).clamp(0, 1) + rng.normal(4, std=4.0)
    return hand_pose(curl.clamp(lo, hi), spread, thumb.clamp(tlo, thi), right)
