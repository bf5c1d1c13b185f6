"""Body poses: an anatomically limited random sampler mixed with jittered archetypes.

Angles are written for the LEFT side (and the midline) in degrees about the parent's axes in SMPL-X's rest
frame (Y up, +Z forward, the left arm along +X); a right joint uses the same numbers, mirrored (x, -y, -z),
so one table means the same anatomy on both sides. Signs, left side: hip x < 0 flexes the thigh forward,
z > 0 abducts; knee x > 0 bends; ankle x < 0 lifts the toes; spine, neck and head x > 0 bend forward,
y > 0 turns to the person's left; elbow y < 0 bends; wrist z < 0 flexes towards the palm.
Shoulders are (elevation, azimuth, twist): the arm points at elevation degrees above horizontal (-90: hanging)
and azimuth degrees from straight sideways towards the front, then twists about itself.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from bidrn.body.joint_sets import SKELETON_JOINTS

from .rng import BatchRandom
from .rotations import compose, rotation_between

BODY_POSE_JOINTS = SKELETON_JOINTS[1:22]  # the 21 joints of smplx's body_pose, in order

# (x, y, z) ranges; shoulders (elevation, azimuth, twist). Chosen from clinical ranges of motion, narrowed
# where the mesh has no pose correctives to keep deep bends from collapsing.
LIMITS: dict[str, tuple[tuple[float, float], ...]] = {
    "hip": ((-110, 30), (-35, 35), (-15, 45)),
    "knee": ((0, 135), (-5, 5), (-5, 5)),
    "ankle": ((-25, 40), (-15, 15), (-15, 15)),
    "foot": ((-20, 20), (0, 0), (0, 0)),
    "spine": ((-15, 30), (-20, 20), (-12, 12)),
    "neck": ((-25, 35), (-35, 35), (-20, 20)),
    "head": ((-20, 25), (-30, 30), (-15, 15)),
    "collar": ((-10, 10), (-15, 10), (-10, 20)),
    "shoulder": ((-80, 85), (-40, 100), (-60, 60)),
    "elbow": ((-30, 30), (-140, 0), (-5, 5)),
    "wrist": ((-50, 50), (-25, 25), (-65, 55)),
}
# Centre of the random sampler: relaxed standing (arms hanging, slight bends).
NEUTRAL: dict[str, tuple[float, float, float]] = {
    "hip": (-5, 0, 5), "knee": (15, 0, 0), "ankle": (0, 0, 0), "foot": (0, 0, 0), "spine": (3, 0, 0),
    "neck": (0, 0, 0), "head": (0, 0, 0), "collar": (0, 0, 0), "shoulder": (-65, 15, 0), "elbow": (0, -30, 0),
    "wrist": (0, 0, 0),
}


def _kind(joint: str) -> str:
    return "spine" if joint.startswith("spine") else joint.removeprefix("left_").removeprefix("right_")


def _table(rows: dict[str, tuple[float, float, float]]) -> list[list[float]]:
    """21 x 3 left-convention degrees: the standing pose overridden by the given joints."""
    base = {"shoulder": (-75, 5, 0), "elbow": (0, -10, 0), "hip": (0, 0, 3)}
    out = []
    for joint in BODY_POSE_JOINTS:
        out.append(list(rows.get(joint, base.get(_kind(joint), (0.0, 0.0, 0.0)))))
    return out


ARCHETYPES: dict[str, list[list[float]]] = {
    "standing": _table({}),
    "walking": _table({
        "left_hip": (-25, 0, 2), "right_hip": (15, 0, 2), "left_knee": (10, 0, 0), "right_knee": (35, 0, 0),
        "left_ankle": (-5, 0, 0), "right_ankle": (15, 0, 0), "spine2": (2, 5, 0),
        "left_shoulder": (-75, -15, 0), "right_shoulder": (-72, 25, 0),
        "left_elbow": (0, -20, 0), "right_elbow": (0, -35, 0)}),
    "sitting": _table({
        "left_hip": (-90, 0, 8), "right_hip": (-90, 0, 8), "left_knee": (90, 0, 0), "right_knee": (90, 0, 0),
        "spine1": (5, 0, 0), "left_shoulder": (-60, 35, 0), "right_shoulder": (-60, 35, 0),
        "left_elbow": (0, -60, 0), "right_elbow": (0, -60, 0)}),
    "reaching": _table({
        "left_shoulder": (5, 75, 0), "left_elbow": (0, -10, 0), "left_wrist": (0, 0, 15),
        "spine1": (8, -5, 0), "spine2": (8, -5, 0), "spine3": (5, 0, 0), "neck": (10, 10, 0),
        "right_hip": (-10, 0, 5), "right_knee": (20, 0, 0)}),
    "arms_raised": _table({
        "left_shoulder": (75, 15, 0), "right_shoulder": (75, 15, 0), "left_elbow": (0, -15, 0),
        "right_elbow": (0, -15, 0), "neck": (-10, 0, 0), "head": (-10, 0, 0)}),
    "crouching": _table({
        "left_hip": (-105, 0, 15), "right_hip": (-105, 0, 15), "left_knee": (130, 0, 0), "right_knee": (130, 0, 0),
        "left_ankle": (-25, 0, 0), "right_ankle": (-25, 0, 0), "spine1": (15, 0, 0), "spine2": (10, 0, 0),
        "left_shoulder": (-45, 55, 0), "right_shoulder": (-45, 55, 0), "left_elbow": (0, -50, 0),
        "right_elbow": (0, -50, 0), "neck": (-15, 0, 0)}),
}


def _limit_tensors() -> tuple[Tensor, Tensor, Tensor]:
    lo = torch.tensor([[r[0] for r in LIMITS[_kind(j)]] for j in BODY_POSE_JOINTS])
    hi = torch.tensor([[r[1] for r in LIMITS[_kind(j)]] for j in BODY_POSE_JOINTS])
    neutral = torch.tensor([NEUTRAL[_kind(j)] for j in BODY_POSE_JOINTS], dtype=torch.float32)
    return lo, hi, neutral  # 21 x 3 each, degrees


_LEFT = [i for i, j in enumerate(BODY_POSE_JOINTS) if j.startswith("left_")]
_RIGHT = [BODY_POSE_JOINTS.index(BODY_POSE_JOINTS[i].replace("left_", "right_")) for i in _LEFT]
_MIDLINE = [i for i, j in enumerate(BODY_POSE_JOINTS) if not j.startswith(("left_", "right_"))]
_SHOULDERS = [BODY_POSE_JOINTS.index("left_shoulder"), BODY_POSE_JOINTS.index("right_shoulder")]
MIRROR = torch.tensor([1.0, -1.0, -1.0])  # axis-angle of a rotation reflected through the body's midplane


def mirror_table(params: Tensor) -> Tensor:
    """The left-right mirror image of left-convention parameters: B x 21 x 3 -> B x 21 x 3."""
    out = params.clone()
    out[:, _LEFT], out[:, _RIGHT] = params[:, _RIGHT], params[:, _LEFT]
    out[:, _MIDLINE, 1:] = -params[:, _MIDLINE, 1:]  # turns and side bends change direction
    return out


def table_to_body_pose(params: Tensor) -> Tensor:
    """Left-convention degrees B x 21 x 3 -> smplx body_pose B x 63 (axis-angle, radians)."""
    rad = params * (math.pi / 180)
    aa = rad.clone()
    elev, azim, twist = rad[:, _SHOULDERS].unbind(-1)  # B x 2 each
    direction = torch.stack([elev.cos() * azim.cos(), elev.sin(), elev.cos() * azim.sin()], -1)  # B x 2 x 3
    swing = rotation_between(torch.tensor([1.0, 0.0, 0.0]), direction)
    aa[:, _SHOULDERS] = compose(swing, direction * twist.unsqueeze(-1))
    right = [i for i, j in enumerate(BODY_POSE_JOINTS) if j.startswith("right_")]
    aa[:, right] = aa[:, right] * MIRROR
    return aa.reshape(-1, 63)


def sample_body_pose(rng: BatchRandom, archetype_prob: float = 0.6, jitter_deg: float = 8.0) -> Tensor:
    """B x 63 body poses: archetypes (randomly mirrored) plus jitter, or draws around NEUTRAL, all clamped to LIMITS."""
    lo, hi, neutral = _limit_tensors()
    table = torch.tensor(list(ARCHETYPES.values()))  # A x 21 x 3
    which = rng.choice([1.0] * len(table))
    arch = table[which] + rng.normal(21, 3, std=jitter_deg)
    arch = torch.where(rng.chance(0.5).view(-1, 1, 1), mirror_table(arch), arch)
    free = neutral + rng.normal(21, 3) * (hi - lo) / 5  # one sigma: a fifth of the range of motion
    params = torch.where(rng.chance(archetype_prob).view(-1, 1, 1), arch, free)
    return table_to_body_pose(torch.maximum(torch.minimum(params, hi), lo))
