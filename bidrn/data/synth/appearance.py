"""Per-vertex colours (skin, hair, eyes, clothing regions from the skinning weights) and per-image lighting.

Clothing follows the body model's own parts: a vertex is covered by a garment when the skinning weights of the
joints that garment covers sum past one half, so sleeves end near the elbow or wrist and trousers near the knee
or ankle on any SMPL-X-format mesh. Hair is the head's skin above a hairline and behind the ears, found from
joint positions on the template, so it also follows the model.
"""
from __future__ import annotations

import torch
from torch import Tensor

from bidrn.body.joint_sets import SKELETON_JOINTS

from .rng import BatchRandom

# Light to dark, sRGB albedo (roughly the Fitzpatrick scale, sampled from photographs of skin under white light).
SKIN_TONES = torch.tensor([
    [0.96, 0.80, 0.69], [0.92, 0.73, 0.60], [0.85, 0.64, 0.50], [0.76, 0.55, 0.40],
    [0.62, 0.42, 0.29], [0.47, 0.31, 0.21], [0.36, 0.23, 0.16], [0.27, 0.18, 0.13],
])
HAIR = torch.tensor([[0.05, 0.04, 0.04], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12], [0.72, 0.58, 0.35],
                     [0.50, 0.22, 0.10], [0.62, 0.62, 0.60]])
GARMENT = torch.tensor([  # black, white, greys, navy, denim, khaki, olive, maroon, red, forest, mustard, pink
    [0.08, 0.08, 0.09], [0.88, 0.88, 0.86], [0.45, 0.45, 0.47], [0.22, 0.23, 0.25], [0.12, 0.15, 0.30],
    [0.25, 0.35, 0.52], [0.70, 0.62, 0.45], [0.35, 0.38, 0.22], [0.40, 0.10, 0.12], [0.75, 0.12, 0.12],
    [0.10, 0.30, 0.18], [0.80, 0.62, 0.15], [0.85, 0.55, 0.62],
])
SHOES = torch.tensor([[0.06, 0.06, 0.06], [0.85, 0.85, 0.85], [0.30, 0.20, 0.12], [0.20, 0.22, 0.30]])

_J = {name: i for i, name in enumerate(SKELETON_JOINTS)}
TOP = ("spine1", "spine2", "spine3", "left_collar", "right_collar")
UPPER_ARM = ("left_shoulder", "right_shoulder")
FOREARM = ("left_elbow", "right_elbow")
HIPS = ("pelvis", "left_hip", "right_hip")
SHIN = ("left_knee", "right_knee")
FEET = ("left_ankle", "right_ankle", "left_foot", "right_foot")
HEAD = ("head", "jaw", "left_eye", "right_eye")


class BodyRegions:
    """Per-vertex region weights and template geometry of one body model, computed once."""

    def __init__(self, layer):
        weights = layer.lbs_weights  # V x 55

        def part(names):
            return weights[:, [_J[n] for n in names]].sum(1)  # V

        self.top, self.upper_arm, self.forearm = part(TOP), part(UPPER_ARM), part(FOREARM)
        self.hips, self.shin, self.feet, self.head = part(HIPS), part(SHIN), part(FEET), part(HEAD)
        v, j = layer.v_template, layer.j_template  # V x 3, 55 x 3 (rest pose, Y up, +Z forward)
        self.height = v[:, 1]  # V, for stripes
        eye = (j[_J["left_eye"]] + j[_J["right_eye"]]) / 2
        self.above_eyes = v[:, 1] - eye[1]  # V
        self.behind_eyes = eye[2] - v[:, 2]  # V: the back of the head is ~0.15-0.2 m behind the eyes
        self.above_head = v[:, 1] - j[_J["head"]][1]
        # Irises: skin in front of each eyeball centre, within a fifth of the eye spacing (~1.2 cm).
        eyes = j[[_J["left_eye"], _J["right_eye"]]]  # 2 x 3
        eye_dist = torch.cdist(v, eyes).min(1).values
        self.eyes = (eye_dist < 0.2 * (eyes[0] - eyes[1]).norm()) & (v[:, 2] > eye[2]) & (self.head > 0.5)


def _pick(rng: BatchRandom, palette: Tensor, jitter: float) -> Tensor:
    """B x 3 colours: a palette entry, jittered per channel."""
    return (palette[rng.choice([1.0] * len(palette))] + rng.normal(3, std=jitter)).clamp(0.02, 0.98)


def sample_colors(rng: BatchRandom, regions: BodyRegions) -> Tensor:
    """B x V x 3 albedo in [0, 1]."""
    t = rng.uniform(low=0.0, high=len(SKIN_TONES) - 1.0)  # B, a point between palette entries
    lo = t.floor().long().clamp(max=len(SKIN_TONES) - 2)
    skin = torch.lerp(SKIN_TONES[lo], SKIN_TONES[lo + 1], (t - lo).unsqueeze(-1)) * rng.uniform(3, low=0.95, high=1.05)
    colors = skin.unsqueeze(1).expand(-1, regions.height.shape[0], -1).clone()  # B x V x 3

    # Hair: above a hairline, and behind the ears for longer styles; some people are bald.
    hairline = rng.uniform(1, low=0.035, high=0.06)  # B x 1, metres above the eyes
    nape = rng.uniform(1, low=-0.08, high=0.0)  # B x 1, metres relative to the head joint
    hair = (regions.head > 0.5) & ((regions.above_eyes > hairline) | ((regions.behind_eyes > 0.1) & (regions.above_head > nape)))
    hair &= rng.chance(0.9).unsqueeze(-1)
    colors = torch.where(hair.unsqueeze(-1), _pick(rng, HAIR, 0.03).unsqueeze(1), colors)
    colors = torch.where(regions.eyes.view(1, -1, 1), torch.tensor([0.12, 0.08, 0.06]), colors)

    # Garments: sleeves none / short (upper arm) / long; shorts or trousers; shoes.
    sleeves = rng.choice([0.2, 0.4, 0.4])
    w_top = regions.top + regions.upper_arm * (sleeves >= 1).float().unsqueeze(-1) + regions.forearm * (sleeves == 2).float().unsqueeze(-1)
    trousers = rng.chance(0.65).float().unsqueeze(-1)
    w_bottom = regions.hips + regions.shin * trousers + regions.feet * trousers * 0.3
    threshold = rng.uniform(1, low=0.4, high=0.6)  # moves hems a little
    top_color = _pick(rng, GARMENT, 0.05)
    stripe = torch.sin(regions.height * rng.uniform(1, low=40.0, high=120.0) + rng.uniform(1, high=6.3)) > 0  # B x V
    stripe &= rng.chance(0.25).unsqueeze(-1)
    top = torch.where(stripe.unsqueeze(-1), _pick(rng, GARMENT, 0.05).unsqueeze(1), top_color.unsqueeze(1))
    covered_top = (w_top > threshold) & (w_top >= w_bottom)
    colors = torch.where(covered_top.unsqueeze(-1), top, colors)
    colors = torch.where(((w_bottom > threshold) & ~covered_top).unsqueeze(-1), _pick(rng, GARMENT, 0.05).unsqueeze(1), colors)
    shoes = (regions.feet > 0.5) & rng.chance(0.9).unsqueeze(-1)
    colors = torch.where(shoes.unsqueeze(-1), _pick(rng, SHOES, 0.04).unsqueeze(1), colors)
    # Per-vertex grain so flat regions read as fabric and skin rather than plastic.
    return (colors * (1 + rng.normal(regions.height.shape[0], 1, std=0.04))).clamp(0, 1)


def sample_lighting(rng: BatchRandom) -> tuple[Tensor, Tensor, Tensor]:
    """Light direction B x 3 (camera frame, pointing from the light into the scene: mostly from above and
    in front), ambient B, and a colour gain B x 3 (exposure and white balance)."""
    direction = torch.stack([rng.uniform(low=-1.0, high=1.0), rng.uniform(low=-0.2, high=1.0),
                             rng.uniform(low=0.3, high=1.5)], -1)
    ambient = rng.uniform(low=0.3, high=0.6)
    gain = rng.uniform(1, low=0.8, high=1.15) * (1 + rng.normal(3, std=0.04))
    return direction, ambient, gain
