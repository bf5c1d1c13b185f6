"""Parity of our SMPL-X layer with the reference `smplx` package on random parameters."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .layer import SMPLXLayer
from .model_file import NUM_BETAS, NUM_EXPRESSION

TOLERANCE_M = 1e-5


def reference_smplx(layer: SMPLXLayer):
    """smplx.SMPLX built from the same file (neutral, flat hand mean, no PCA, face contour on).

    smplx hard-codes the real mesh's vertex ids for its 21 vertex joints; for other meshes its selector
    is swapped for one built from the file's own ids (its constructor refuses a `vertex_ids` argument).
    """
    import smplx
    from smplx.vertex_joint_selector import VertexJointSelector

    from .joint_sets import SMPLX_VERTEX_JOINT_IDS

    model = smplx.SMPLX(
        str(layer.path), ext="npz", use_pca=False, flat_hand_mean=True, num_betas=NUM_BETAS,
        num_expression_coeffs=NUM_EXPRESSION, use_face_contour=True,
    )
    smplx_keys = ("nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
                  "RSmallToe", "RHeel", *(s + t for s in "lr" for t in ("thumb", "index", "middle", "ring", "pinky")))
    ids = layer.vertex_joint_ids.tolist()
    if ids != list(SMPLX_VERTEX_JOINT_IDS):
        model.vertex_joint_selector = VertexJointSelector(vertex_ids=dict(zip(smplx_keys, ids)))
    return model


def random_parameters(batch: int, generator: torch.Generator, pose_scale: float = 0.5) -> dict[str, torch.Tensor]:
    """Random SMPL-X parameters (axis-angle poses of up to about pose_scale * sqrt(3) rad per joint)."""
    def rand(n: int, scale: float) -> torch.Tensor:
        return (torch.rand(batch, n, generator=generator) * 2 - 1) * scale

    return {
        "betas": rand(NUM_BETAS, 2.0), "global_orient": rand(3, pose_scale), "body_pose": rand(63, pose_scale),
        "left_hand_pose": rand(45, pose_scale), "right_hand_pose": rand(45, pose_scale),
        "jaw_pose": rand(3, pose_scale), "expression": rand(NUM_EXPRESSION, 2.0), "transl": rand(3, 1.0),
    }


@dataclass(frozen=True)
class ParityReport:
    path: Path
    max_vertex_error_m: float
    max_joint_error_m: float

    @property
    def ok(self) -> bool:
        return max(self.max_vertex_error_m, self.max_joint_error_m) <= TOLERANCE_M


@torch.no_grad()
def check_parity(layer: SMPLXLayer, batch: int = 8, seed: int = 0) -> ParityReport:
    ref = reference_smplx(layer)
    params = random_parameters(batch, torch.Generator().manual_seed(seed))
    ours = layer(**params)
    eyes = torch.zeros(batch, 3)
    theirs = ref(**params, leye_pose=eyes, reye_pose=eyes)
    return ParityReport(
        layer.path,
        float((ours.vertices - theirs.vertices).norm(dim=-1).max()),
        float((ours.joints - theirs.joints).norm(dim=-1).max()),
    )
