"""A tiny SMPL-X-format model made from random numbers: an octahedron around each of the 55 joints.

It exercises every term of the forward (including pose correctives, which the Anny default lacks) in a
few hundred vertices, so tests of the layer run in milliseconds. It is not a body; it is a fixture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .joint_sets import NUM_CONTOUR, NUM_LANDMARKS, SKELETON_JOINTS, SKELETON_PARENTS
from .model_file import NUM_POSE_BASIS

_OCTAHEDRON = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
_OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def procedural_model_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of an SMPL-X .npz (plus this project's vertex-set arrays) for a 330-vertex model."""
    rng = np.random.default_rng(seed)
    nj = len(SKELETON_JOINTS)
    joints = np.zeros((nj, 3))
    for j, p in enumerate(SKELETON_PARENTS[1:], start=1):
        joints[j] = joints[p] + rng.normal(0.0, 0.08, 3)
    verts = (joints[:, None] + 0.03 * _OCTAHEDRON).reshape(-1, 3)
    owner = np.repeat(np.arange(nj), len(_OCTAHEDRON))
    faces = (_OCTA_FACES[None] + len(_OCTAHEDRON) * np.arange(nj)[:, None, None]).reshape(-1, 3)
    v, f = len(verts), len(faces)

    weights = np.zeros((v, nj))
    parent_of_owner = np.maximum(np.asarray(SKELETON_PARENTS)[owner], 0)
    share = rng.uniform(0.0, 0.4, v)
    weights[np.arange(v), owner] += 1.0 - share
    weights[np.arange(v), parent_of_owner] += share
    # Each joint is a random convex combination of its own octahedron's vertices.
    j_regressor = np.zeros((nj, v))
    mix = rng.dirichlet(np.ones(len(_OCTAHEDRON)), nj)
    j_regressor[owner, np.arange(v)] = mix.reshape(-1)

    def bary(*shape):
        return rng.dirichlet(np.ones(3), shape).astype(np.float32)

    # SMPL-X lists the 30 finger joints last, left hand first.
    hand_joint = np.arange(nj) >= SKELETON_JOINTS.index("left_index1")
    left = np.array([n.startswith("left_") for n in SKELETON_JOINTS])
    head = np.isin(np.arange(nj), [SKELETON_JOINTS.index(n) for n in ("head", "jaw", "left_eye", "right_eye")])
    return {
        "v_template": verts.astype(np.float32),
        "f": faces.astype(np.int64),
        "J_regressor": j_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.array(SKELETON_PARENTS), np.arange(nj)]).astype(np.int64),
        "shapedirs": rng.normal(0.0, 0.01, (v, 3, 20)).astype(np.float32),
        "posedirs": rng.normal(0.0, 0.002, (v, 3, NUM_POSE_BASIS)).astype(np.float32),
        "hands_componentsl": np.eye(45, dtype=np.float32),
        "hands_componentsr": np.eye(45, dtype=np.float32),
        "hands_meanl": np.zeros(45, np.float32),
        "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": rng.integers(0, f, NUM_LANDMARKS),
        "lmk_bary_coords": bary(NUM_LANDMARKS),
        "dynamic_lmk_faces_idx": rng.integers(0, f, (79, NUM_CONTOUR)),
        "dynamic_lmk_bary_coords": bary(79, NUM_CONTOUR),
        "vertex_joint_ids": rng.integers(0, v, 21),
        "lhand_vertex_ids": np.flatnonzero(np.repeat(hand_joint & left, len(_OCTAHEDRON))),
        "rhand_vertex_ids": np.flatnonzero(np.repeat(hand_joint & ~left, len(_OCTAHEDRON))),
        "face_vertex_ids": np.flatnonzero(np.repeat(head, len(_OCTAHEDRON))),
        "source": np.array("procedural test model (bidrn.body.procedural)"),
        "license": np.array("CC0-1.0 (generated from random numbers)"),
    }


def write_procedural_model(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    np.savez(path, **procedural_model_arrays(seed))
    return path
