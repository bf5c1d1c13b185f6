"""The one sample format every data source yields (real-data loaders and the synthetic engine alike).

A sample is a dict of tensors for one person, already cropped and resized to the model's input (H x W =
``ModelConfig.input_size``). Joints use Hand4Whole's whole-body set: 25 body joints, then 20 left-hand and 20
right-hand joints (``bidrn.body.joint_sets``), 65 in all. Everything a source does not know is zero with its
validity flag at 0, so sources mix in one batch.

| key | shape | meaning |
|---|---|---|
| img | 3 x H x W | RGB float32 in [0, 1] |
| joint_img | 65 x 3 | x, y in input pixels; z = depth relative to the pelvis, metres |
| joint_valid | 65 | 1 where the 2D joint is annotated and inside the image |
| joint_cam | 65 x 3 | camera-space joints relative to the pelvis, metres |
| joint_cam_valid | 65 | 1 where joint_cam is known |
| smplx_root_pose, smplx_body_pose | 3, 63 | axis-angle, SMPL-X camera frame |
| smplx_lhand_pose, smplx_rhand_pose | 45, 45 | axis-angle, flat-hand mean |
| smplx_jaw_pose | 3 | axis-angle |
| smplx_shape, smplx_expr | 10, 10 | betas, expression |
| smplx_pose_valid | 53 | per SMPL-X joint (root, 21 body, 15 + 15 hand, jaw) 0/1 |
| smplx_shape_valid, smplx_expr_valid | scalar | 0/1 |
| lhand_bbox, rhand_bbox, face_bbox | 4 | x1, y1, x2, y2 in input pixels |
| lhand_bbox_valid, rhand_bbox_valid, face_bbox_valid | scalar | 0/1 |
| focal, princpt | 2, 2 | the camera in input pixels (the synthetic engine's; Hand4Whole's virtual one otherwise) |
| mesh_cam | V x 3 | ground-truth SMPL-X vertices relative to the pelvis (evaluation sets only) |
"""
from __future__ import annotations

import torch

NUM_BODY_JOINTS, NUM_HAND_JOINTS = 25, 20
NUM_JOINTS = NUM_BODY_JOINTS + 2 * NUM_HAND_JOINTS
NUM_POSE_JOINTS = 1 + 21 + 15 + 15 + 1
BODY_SLICE = slice(0, NUM_BODY_JOINTS)
LHAND_SLICE = slice(NUM_BODY_JOINTS, NUM_BODY_JOINTS + NUM_HAND_JOINTS)
RHAND_SLICE = slice(NUM_BODY_JOINTS + NUM_HAND_JOINTS, NUM_JOINTS)

SHAPES: dict[str, tuple] = {
    "joint_img": (NUM_JOINTS, 3), "joint_valid": (NUM_JOINTS,),
    "joint_cam": (NUM_JOINTS, 3), "joint_cam_valid": (NUM_JOINTS,),
    "smplx_root_pose": (3,), "smplx_body_pose": (63,), "smplx_lhand_pose": (45,), "smplx_rhand_pose": (45,),
    "smplx_jaw_pose": (3,), "smplx_shape": (10,), "smplx_expr": (10,),
    "smplx_pose_valid": (NUM_POSE_JOINTS,), "smplx_shape_valid": (), "smplx_expr_valid": (),
    "lhand_bbox": (4,), "rhand_bbox": (4,), "face_bbox": (4,),
    "lhand_bbox_valid": (), "rhand_bbox_valid": (), "face_bbox_valid": (),
    "focal": (2,), "princpt": (2,),
}


def empty_sample(input_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """A sample with every key present, zero, and invalid: sources fill in what they know."""
    sample = {k: torch.zeros(s) for k, s in SHAPES.items()}
    sample["img"] = torch.zeros(3, *input_size)
    return sample


def validate_sample(sample: dict[str, torch.Tensor], input_size: tuple[int, int]) -> None:
    """Raise ValueError naming the first key that is missing or mis-shaped."""
    expected = dict(SHAPES, img=(3, *input_size))
    for key, shape in expected.items():
        if key not in sample:
            raise ValueError(f"sample is missing {key!r} (expected shape {shape})")
        if tuple(sample[key].shape) != shape:
            raise ValueError(f"sample[{key!r}] has shape {tuple(sample[key].shape)}, expected {shape}")
