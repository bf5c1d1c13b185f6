"""Whole-body mesh metrics in millimetres, following Hand4Whole's EHF / AGORA protocol.

MPVPE: mean per-vertex distance after translating the prediction so that an anchor joint matches the
ground truth's (pelvis for the whole body, each wrist for its hand, the neck for the face).
PA-MPVPE / PA-MPJPE: the same after a similarity (Procrustes with scale) alignment of each part on its own.
Hand figures are the mean of the left and right hand. Inputs are in metres; every function is batched.
"""
from __future__ import annotations

import torch
from torch import Tensor

MM_PER_M = 1000.0


def mean_point_error(pred: Tensor, gt: Tensor) -> Tensor:
    """Mean Euclidean distance in mm. pred, gt: B x N x 3 (metres) -> B."""
    return (pred - gt).norm(dim=-1).mean(dim=-1) * MM_PER_M


def align_anchor(pred: Tensor, pred_anchor: Tensor, gt_anchor: Tensor) -> Tensor:
    """Translate pred so its anchor lands on the ground truth's. pred: B x N x 3, anchors: B x 3."""
    return pred - pred_anchor.unsqueeze(1) + gt_anchor.unsqueeze(1)


def procrustes_align(pred: Tensor, gt: Tensor) -> Tensor:
    """The similarity transform s R x + t of pred closest to gt in least squares (Umeyama 1991, Eq. 40-42).

    pred, gt: B x N x 3 -> B x N x 3 (pred aligned).
    """
    # float64: the SVD of a near-degenerate covariance loses digits in float32.
    x, y = pred.double(), gt.double()
    mu_x, mu_y = x.mean(dim=1, keepdim=True), y.mean(dim=1, keepdim=True)
    xc, yc = x - mu_x, y - mu_y
    cov = yc.transpose(1, 2) @ xc  # B x 3 x 3, Sigma_xy up to 1/N
    u, sigma, vt = torch.linalg.svd(cov)
    # Reflection guard: flip the last axis when det(U V^T) < 0 so R is a proper rotation.
    d = torch.ones_like(sigma)
    d[:, -1] = torch.sign(torch.linalg.det(u @ vt))
    rot = u @ torch.diag_embed(d) @ vt
    scale = (sigma * d).sum(dim=1) / xc.pow(2).sum(dim=(1, 2))
    aligned = scale.view(-1, 1, 1) * xc @ rot.transpose(1, 2) + mu_y
    return aligned.to(pred.dtype)


def mpvpe(pred: Tensor, gt: Tensor, pred_anchor: Tensor, gt_anchor: Tensor) -> Tensor:
    """MPVPE in mm after anchor alignment. pred, gt: B x N x 3, anchors: B x 3 -> B."""
    return mean_point_error(align_anchor(pred, pred_anchor, gt_anchor), gt)


def pa_error(pred: Tensor, gt: Tensor) -> Tensor:
    """PA-MPVPE / PA-MPJPE in mm. pred, gt: B x N x 3 -> B."""
    return mean_point_error(procrustes_align(pred, gt), gt)


def whole_body_metrics(pred_vertices: Tensor, gt_vertices: Tensor, layer) -> dict[str, Tensor]:
    """All of Table 1's figures for meshes of the layer's topology, each B values in mm.

    pred_vertices, gt_vertices: B x V x 3 (metres). Joints are regressed from both meshes with the
    layer's regressor, as the EHF protocol does for its ground-truth meshes.
    """
    if layer.lhand_vertex_idx.numel() == 0 or layer.face_vertex_idx.numel() == 0:
        raise ValueError(
            f"body model {layer.path} has no hand/face vertex sets: add 'lhand_vertex_ids', 'rhand_vertex_ids' "
            "and 'face_vertex_ids' arrays, or put MANO_SMPLX_vertex_ids.pkl and SMPL-X__FLAME_vertex_ids.npy "
            "(from https://smpl-x.is.tue.mpg.de) beside the model file."
        )
    from bidrn.body import joint_sets as js

    pj, gj = layer.regress_joints(pred_vertices), layer.regress_joints(gt_vertices)
    hands = (
        (layer.lhand_vertex_idx, js.LWRIST_IDX, layer.lhand_joint_idx),
        (layer.rhand_vertex_idx, js.RWRIST_IDX, layer.rhand_joint_idx),
    )
    face = layer.face_vertex_idx

    def hand_mean(fn) -> Tensor:
        return sum(fn(*hand) for hand in hands) / 2

    def hand_joints(joints: Tensor, wrist: int, idx: Tensor) -> Tensor:
        return torch.cat([joints[:, wrist:wrist + 1], joints[:, idx]], dim=1)  # wrist + 20 joints

    return {
        "mpvpe_all": mpvpe(pred_vertices, gt_vertices, pj[:, js.PELVIS_IDX], gj[:, js.PELVIS_IDX]),
        "mpvpe_hand": hand_mean(lambda v, w, _: mpvpe(pred_vertices[:, v], gt_vertices[:, v], pj[:, w], gj[:, w])),
        "mpvpe_face": mpvpe(pred_vertices[:, face], gt_vertices[:, face], pj[:, js.NECK_IDX], gj[:, js.NECK_IDX]),
        "pa_mpvpe_all": pa_error(pred_vertices, gt_vertices),
        "pa_mpvpe_hand": hand_mean(lambda v, w, _: pa_error(pred_vertices[:, v], gt_vertices[:, v])),
        "pa_mpvpe_face": pa_error(pred_vertices[:, face], gt_vertices[:, face]),
        "pa_mpjpe_body": pa_error(pj[:, layer.body_joint_idx], gj[:, layer.body_joint_idx]),
        "pa_mpjpe_hand": hand_mean(lambda _, w, j: pa_error(hand_joints(pj, w, j), hand_joints(gj, w, j))),
    }
