"""Joint names and the joint sets Hand4Whole (and so BiDRN) predicts, as indices into the layer's output.

The layer's joints follow smplx's order with ``use_face_contour=True``:
55 skeleton joints, 21 vertex joints (face keypoints, feet, fingertips), 51 face landmarks, 17 face contour points.
"""
from __future__ import annotations

SIDES = ("left", "right")
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X's own finger order in the skeleton

# SMPL-X's 55 skeleton joints, in the order of its kinematic tree.
SKELETON_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar",
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "jaw", "left_eye", "right_eye",
    *(f"{side}_{finger}{k}" for side in SIDES for finger in FINGERS for k in (1, 2, 3)),
)

# SMPL-X's parent of each skeleton joint (-1 for the root): the tree every model file must carry.
SKELETON_PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)

# The 21 joints smplx reads off single vertices, in its order.
VERTEX_JOINTS = (
    "nose", "right_eye_vertex", "left_eye_vertex", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    *(f"{side}_{finger}_tip" for side in SIDES for finger in ("thumb", "index", "middle", "ring", "pinky")),
)

# Vertex ids of those joints on the real SMPL-X mesh (10,475 vertices); other meshes carry their own.
SMPLX_VERTEX_JOINT_IDS = (
    9120, 9929, 9448, 616, 6, 5770, 5780, 8846, 8463, 8474, 8635,
    5361, 4933, 5058, 5169, 5286, 8079, 7669, 7794, 7905, 8022,
)

NUM_LANDMARKS = 51
NUM_CONTOUR = 17
JOINT_NAMES = (
    *SKELETON_JOINTS,
    *VERTEX_JOINTS,
    *(f"landmark_{i}" for i in range(NUM_LANDMARKS)),
    *(f"contour_{i}" for i in range(NUM_CONTOUR)),
)

# Hand4Whole's 25 body joints (PositionNet order), named as Hand4Whole names them.
BODY_JOINTS = (
    "Pelvis", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Neck",
    "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist",
    "L_Big_toe", "L_Small_toe", "L_Heel", "R_Big_toe", "R_Small_toe", "R_Heel",
    "L_Ear", "R_Ear", "L_Eye", "R_Eye", "Nose",
)
_BODY_SOURCES = (
    "pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "neck",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
    "left_ear", "right_ear", "left_eye_vertex", "right_eye_vertex", "nose",
)

# Hand4Whole's 20 joints per hand (wrist excluded): thumb to pinky, joints 1-3 then the fingertip as 4.
HAND_FINGERS = ("Thumb", "Index", "Middle", "Ring", "Pinky")
HAND_JOINTS = tuple(f"{finger}_{k}" for finger in HAND_FINGERS for k in (1, 2, 3, 4))
HAND_MCP = tuple(HAND_JOINTS.index(f"{f}_1") for f in ("Index", "Middle", "Ring", "Pinky"))  # (4, 8, 12, 16)


def _hand_sources(side: str) -> tuple[str, ...]:
    return tuple(
        f"{side}_{finger.lower()}_tip" if k == 4 else f"{side}_{finger.lower()}{k}"
        for finger in HAND_FINGERS for k in (1, 2, 3, 4)
    )


def joint_index(names: tuple[str, ...]) -> list[int]:
    """Indices of named joints in the layer's output (JOINT_NAMES)."""
    return [JOINT_NAMES.index(n) for n in names]


BODY_JOINT_IDX = joint_index(_BODY_SOURCES)
LHAND_JOINT_IDX = joint_index(_hand_sources("left"))
RHAND_JOINT_IDX = joint_index(_hand_sources("right"))
PELVIS_IDX = JOINT_NAMES.index("pelvis")
NECK_IDX = JOINT_NAMES.index("neck")
LWRIST_IDX = JOINT_NAMES.index("left_wrist")
RWRIST_IDX = JOINT_NAMES.index("right_wrist")
