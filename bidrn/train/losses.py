"""The training loss, eq. 12: L = L_smplx + L_joint + L_box, every term an L1 distance (Hand4Whole's recipe).

- L_smplx: pose (axis-angle, per joint validity), shape, expression.
- L_joint: PositionNet's 2.5D joints (body and hand heatmap cells), the SMPL-X joints projected to the image,
  and the SMPL-X joints in camera space (root-relative).
- L_box: hand and face box centers and sizes (body heatmap cells).

Targets come from the sample format of :mod:`bidrn.data.sample`. Coordinates are moved into each prediction's
own frame here, once, so the model stays free of training-only code.
"""
from __future__ import annotations

import torch
from torch import Tensor

from bidrn.data.sample import BODY_SLICE, LHAND_SLICE, RHAND_SLICE
from bidrn.models.config import ModelConfig
from bidrn.models.ops import axis_angle_to_rotmat

LWRIST, RWRIST = 12, 13  # in Hand4Whole's 25 body joints


def _l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean |pred - target| over valid entries; valid broadcasts against pred (1 = use)."""
    valid = valid.to(pred.dtype).expand_as(pred)
    return ((pred - target).abs() * valid).sum() / valid.sum().clamp(min=1.0)


def _depth_to_cells(z_rel: Tensor, size_3d: float, depth: int) -> Tensor:
    """Hand4Whole's depth discretisation: z in [-size/2, size/2] metres -> [0, D] heatmap cells."""
    return (z_rel / (size_3d / 2) + 1) / 2 * depth


def _hand_targets(joint_img: Tensor, wrist_z: Tensor, box_px: Tensor, cfg: ModelConfig, hm_hw: tuple[int, int]):
    """GT hand joints (B x 20 x 3: input px, pelvis-relative z) -> cells of the crop cut by the predicted box.

    Hand4Whole supervises the hand PositionNet in the crop its own (detached) BoxNet chose; joints that fall
    outside that crop are masked out.
    """
    x1, y1, x2, y2 = (box_px[:, i:i + 1] for i in range(4))
    hm_h, hm_w = hm_hw
    x = (joint_img[..., 0] - x1) / (x2 - x1).clamp(min=1e-6) * hm_w
    y = (joint_img[..., 1] - y1) / (y2 - y1).clamp(min=1e-6) * hm_h
    z = _depth_to_cells(joint_img[..., 2] - wrist_z[:, None], cfg.hand_box_size, cfg.heatmap_depth)
    inside = (x >= 0) & (x < hm_w) & (y >= 0) & (y < hm_h)
    return torch.stack((x, y, z), dim=-1), inside


def sample_joint_index(body_model) -> Tensor:
    """Indices of the sample format's 65 joints (25 body, 20 + 20 hand) in the body layer's joint output."""
    return torch.cat([body_model.body_joint_idx, body_model.lhand_joint_idx, body_model.rhand_joint_idx])


def whole_body_loss(out: dict[str, Tensor], batch: dict[str, Tensor], cfg: ModelConfig,
                    joint_index: Tensor, pose_space: str = "axis_angle") -> dict[str, Tensor]:
    """Every term of eq. 12 and their sum ("total").

    ``out`` must hold the mesh (a body model attached); ``joint_index`` is :func:`sample_joint_index`.
    pose_space: "axis_angle" compares the SMPL-X pose parameters themselves (the paper, Hand4Whole);
    "rotmat" compares their rotation matrices, which avoids axis-angle's jump at 180 degrees (a person seen
    from behind has a root rotation near pi, where (pi, 0, 0) and (-pi, 0, 0) are the same rotation).
    """
    (in_h, in_w), (b_h, b_w) = cfg.input_size, cfg.body_input
    body_hm_h, body_hm_w = b_h // 32, b_w // 32
    to_cells = batch["joint_img"].new_tensor((body_hm_w / in_w, body_hm_h / in_h))
    joint_img, valid = batch["joint_img"], batch["joint_valid"]
    losses: dict[str, Tensor] = {}

    # L_smplx
    pose = torch.cat([out[k] for k in ("root_pose", "body_pose", "lhand_pose", "rhand_pose", "jaw_pose")], dim=1)
    gt_pose = torch.cat([batch[f"smplx_{k}"] for k in ("root_pose", "body_pose", "lhand_pose", "rhand_pose",
                                                        "jaw_pose")], dim=1)
    pose, gt_pose = pose.view(pose.shape[0], -1, 3), gt_pose.view(pose.shape[0], -1, 3)
    if pose_space == "rotmat":
        pose, gt_pose = axis_angle_to_rotmat(pose).flatten(2), axis_angle_to_rotmat(gt_pose).flatten(2)
    elif pose_space != "axis_angle":
        raise ValueError(f"pose_space must be 'axis_angle' or 'rotmat', got {pose_space!r}")
    losses["smplx_pose"] = _l1(pose, gt_pose, batch["smplx_pose_valid"][..., None])
    losses["smplx_shape"] = _l1(out["betas"], batch["smplx_shape"], batch["smplx_shape_valid"][:, None])
    losses["smplx_expr"] = _l1(out["expression"], batch["smplx_expr"], batch["smplx_expr_valid"][:, None])

    # L_joint: PositionNet (2.5D heatmap cells)
    body_gt = torch.cat((joint_img[:, BODY_SLICE, :2] * to_cells,
                         _depth_to_cells(joint_img[:, BODY_SLICE, 2:], cfg.body_box_size, cfg.heatmap_depth)), -1)
    losses["joint_img"] = _l1(out["body_joint_img"], body_gt, valid[:, BODY_SLICE, None])
    hand_terms = []
    scale = joint_img.new_tensor((in_w / b_w, in_h / b_h, in_w / b_w, in_h / b_h))
    hm_hw = (cfg.hand_input[0] // 32, cfg.hand_input[1] // 32)
    for side, sl, wrist in (("lhand", LHAND_SLICE, LWRIST), ("rhand", RHAND_SLICE, RWRIST)):
        target, inside = _hand_targets(joint_img[:, sl], joint_img[:, wrist, 2], out[f"{side}_bbox"] * scale, cfg, hm_hw)
        hand_terms.append(_l1(out[f"{side}_joint_img"], target, (valid[:, sl] * inside)[..., None]))
    losses["hand_joint_img"] = sum(hand_terms) / 2

    # L_joint: SMPL-X joints, projected and in camera space
    idx = joint_index
    # In body heatmap cells, as Hand4Whole: pixels would outweigh every other term by ~30x.
    proj = out["joint_proj"][:, idx] * joint_img.new_tensor((body_hm_w / b_w, body_hm_h / b_h))
    losses["joint_proj"] = _l1(proj, joint_img[..., :2] * to_cells, valid[..., None])
    losses["joint_cam"] = _l1(out["joints"][:, idx], batch["joint_cam"], batch["joint_cam_valid"][..., None])

    # L_box
    box_terms = []
    for i, key in enumerate(("lhand_bbox", "rhand_bbox", "face_bbox")):
        box = batch[key]
        center = (box[:, :2] + box[:, 2:]) / 2 * to_cells
        size = (box[:, 2:] - box[:, :2]) * to_cells
        v = batch[f"{key}_valid"][:, None]
        box_terms.append(_l1(out["box_centers"][:, i], center, v) + _l1(out["box_sizes"][:, i], size, v))
    losses["box"] = sum(box_terms)

    losses["total"] = sum(losses.values())
    return losses

