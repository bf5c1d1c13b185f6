"""An export-friendly SMPL-X layer: same vertices and joints as ``smplx.SMPLX`` (neutral, flat hand mean,
no hand PCA, face contour on, zero eye pose), with no data-dependent Python control flow.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import joint_sets as js
from .lbs import KinematicChain, axis_angle_to_matrix, skin
from .model_file import NUM_BETAS, NUM_EXPRESSION, BodyModelData, load_model_file, resolve_model_path


class SMPLXOutput(NamedTuple):
    vertices: Tensor  # B x V x 3
    joints: Tensor  # B x 144 x 3, ordered as joint_sets.JOINT_NAMES


def _buffer(module: nn.Module, name: str, array, dtype=torch.float32, persistent: bool = True) -> None:
    module.register_buffer(name, torch.as_tensor(array).to(dtype), persistent=persistent)


class SMPLXLayer(nn.Module):
    """SMPL-X forward (SMPL-X paper Eq. 1-4): blend shapes, pose correctives, joint regression, LBS,
    vertex joints and face landmarks.

    Joint sets (Hand4Whole's): ``body_joint_idx`` (25), ``lhand_joint_idx`` / ``rhand_joint_idx`` (20 each,
    wrist excluded, MCP at 4, 8, 12, 16) index ``out.joints``; names in ``body_joint_names`` and
    ``hand_joint_names``. Vertex sets: ``lhand_vertex_idx``, ``rhand_vertex_idx``, ``face_vertex_idx``.
    """

    joint_names = js.JOINT_NAMES
    body_joint_names = js.BODY_JOINTS
    hand_joint_names = js.HAND_JOINTS
    hand_mcp = js.HAND_MCP
    num_betas = NUM_BETAS
    num_expression = NUM_EXPRESSION
    # The skinning step: ``lbs.skin`` on the dense weights unless :meth:`use_skin_op` set one (the exporter's
    # bidrn::skin, as it gives the network its crop op and the heads their point lookup).
    skin_op = None

    def __init__(self, data: BodyModelData):
        super().__init__()
        self.source, self.license, self.path = data.source, data.license, data.path
        v = data.num_vertices
        _buffer(self, "faces", data.faces, torch.long)
        _buffer(self, "v_template", data.v_template)
        shape_dirs = torch.cat([torch.as_tensor(data.betas_dirs), torch.as_tensor(data.expression_dirs)], dim=2)
        _buffer(self, "shape_dirs", shape_dirs.reshape(v * 3, -1).T)  # 20 x 3V
        _buffer(self, "j_regressor", data.j_regressor)
        # Joints are linear in the shape coefficients (Eq. 3), so regress template and directions once.
        j_reg = torch.as_tensor(data.j_regressor, dtype=torch.float64)
        _buffer(self, "j_template", j_reg @ torch.as_tensor(data.v_template, dtype=torch.float64))  # 55 x 3
        _buffer(self, "j_shape_dirs", torch.einsum("jv,vck->kjc", j_reg, shape_dirs.double()).reshape(20, -1))
        posedirs = torch.as_tensor(data.posedirs)
        # An all-zero corrective basis (the Anny default has none) costs nothing and changes nothing: skip it.
        self.has_pose_correctives = bool(posedirs.abs().max() > 0)
        _buffer(self, "posedirs", posedirs.reshape(v * 3, -1).T if self.has_pose_correctives else torch.zeros(0))
        _buffer(self, "lbs_weights", data.weights)
        self.chain = KinematicChain(data.parents)
        self.neck_chain = _chain_to_root(data.parents, js.NECK_IDX)
        _buffer(self, "vertex_joint_ids", data.vertex_joint_ids, torch.long)
        faces = torch.as_tensor(data.faces)
        _buffer(self, "lmk_vertex_ids", faces[torch.as_tensor(data.lmk_faces_idx)], torch.long)  # 51 x 3
        _buffer(self, "lmk_bary", data.lmk_bary_coords)
        _buffer(self, "contour_vertex_ids", faces[torch.as_tensor(data.dynamic_lmk_faces_idx)], torch.long)  # 79x17x3
        _buffer(self, "contour_bary", data.dynamic_lmk_bary_coords)
        _buffer(self, "body_joint_idx", js.BODY_JOINT_IDX, torch.long, persistent=False)
        _buffer(self, "lhand_joint_idx", js.LHAND_JOINT_IDX, torch.long, persistent=False)
        _buffer(self, "rhand_joint_idx", js.RHAND_JOINT_IDX, torch.long, persistent=False)
        for name in ("lhand_vertex_ids", "rhand_vertex_ids", "face_vertex_ids"):
            ids = getattr(data, name)
            _buffer(self, name.replace("_ids", "_idx"), ids if ids is not None else torch.zeros(0), torch.long)

    def sparse_skinning(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The skinning weights as a CSR matrix with its rows in a chosen order: vertices (V, the vertex of each
        row), offsets (V + 1) and joints, all int32, and weights of the non-zero entries, joints ascending within
        a row. The rows go by their entry count (fewest first, vertex order within a count), so a kernel's loop
        over a row has a predictable length. A vertex of the embedded model takes 1.9 of the 55 joints on
        average, at most 7."""
        nonzero = self.lbs_weights.nonzero()  # row-major: by vertex, then joint
        counts = torch.bincount(nonzero[:, 0], minlength=self.num_vertices)
        vertices = torch.sort(counts, stable=True).indices
        offsets = torch.cat([counts.new_zeros(1), counts[vertices].cumsum(0)])
        # The entries in the rows' order: a stable sort by their vertex's count keeps vertex, then joint order.
        picked = nonzero[torch.sort(counts[nonzero[:, 0]], stable=True).indices]
        weights = self.lbs_weights[picked[:, 0], picked[:, 1]]
        return vertices.int(), offsets.int(), picked[:, 1].int(), weights

    def use_skin_op(self, op) -> None:
        """Skin with ``op(points, rot, trans, vertices, offsets, joints, weights)`` on the CSR weights of
        :meth:`sparse_skinning` (kept as buffers, so an exported program holds them as constants)."""
        names = ("skin_vertices", "skin_offsets", "skin_joints", "skin_weights")
        for name, tensor in zip(names, self.sparse_skinning()):
            self.register_buffer(name, tensor, persistent=False)
        self.skin_op = op

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def forward(
        self,
        betas: Tensor | None = None,  # B x 10
        global_orient: Tensor | None = None,  # B x 3
        body_pose: Tensor | None = None,  # B x 63
        left_hand_pose: Tensor | None = None,  # B x 45
        right_hand_pose: Tensor | None = None,  # B x 45
        jaw_pose: Tensor | None = None,  # B x 3
        expression: Tensor | None = None,  # B x 10
        transl: Tensor | None = None,  # B x 3
    ) -> SMPLXOutput:
        """Axis-angle poses; a parameter left out is zero. Returns vertices B x V x 3, joints B x 144 x 3."""
        given = [t for t in (betas, global_orient, body_pose, left_hand_pose, right_hand_pose, jaw_pose,
                             expression, transl) if t is not None]
        b = given[0].shape[0] if given else 1
        dtype, device = self.v_template.dtype, self.v_template.device

        def param(t: Tensor | None, n: int) -> Tensor:
            return torch.zeros(b, n, dtype=dtype, device=device) if t is None else t.reshape(b, n).to(dtype)

        coeffs = torch.cat([param(betas, NUM_BETAS), param(expression, NUM_EXPRESSION)], dim=1)  # B x 20
        pose = torch.cat([
            param(global_orient, 3), param(body_pose, 63), param(jaw_pose, 3),
            torch.zeros(b, 6, dtype=dtype, device=device),  # eyes stay at rest, as in Hand4Whole
            param(left_hand_pose, 45), param(right_hand_pose, 45),
        ], dim=1).reshape(b, -1, 3)
        rot = axis_angle_to_matrix(pose)  # B x 55 x 3 x 3

        v_shaped = self.v_template + (coeffs @ self.shape_dirs).reshape(b, -1, 3)  # Eq. 2: T + B_S + B_E
        joints = self.j_template + (coeffs @ self.j_shape_dirs).reshape(b, -1, 3)  # Eq. 3: J(beta)
        if self.has_pose_correctives:  # Eq. 4: B_P from (R - I) of every non-root joint
            eye = torch.eye(3, dtype=dtype, device=device)
            pose_feature = (rot[:, 1:] - eye).reshape(b, -1)
            v_shaped = v_shaped + (pose_feature @ self.posedirs).reshape(b, -1, 3)
        posed_joints, a_rot, a_trans = self.chain(rot, joints)
        if self.skin_op is None:
            vertices = skin(self.lbs_weights, a_rot, a_trans, v_shaped)
        else:
            vertices = self.skin_op(v_shaped, a_rot, a_trans, self.skin_vertices, self.skin_offsets,
                                    self.skin_joints, self.skin_weights)

        all_joints = torch.cat([
            posed_joints,
            vertices[:, self.vertex_joint_ids],
            self._landmarks(vertices, self.lmk_vertex_ids, self.lmk_bary),
            self._contour(vertices, rot),
        ], dim=1)
        if transl is not None:
            offset = transl.reshape(b, 1, 3).to(dtype)
            vertices, all_joints = vertices + offset, all_joints + offset
        return SMPLXOutput(vertices, all_joints)

    def regress_joints(self, vertices: Tensor) -> Tensor:
        """Joints read off any mesh of this topology, as EHF/AGORA evaluation does for ground-truth meshes:
        the 55 regressed skeleton joints, then the 21 vertex joints. vertices B x V x 3 -> B x 76 x 3.
        The joint-set indices (body_joint_idx, lhand_joint_idx, ...) all fall in this range.
        """
        return torch.cat([self.j_regressor @ vertices, vertices[:, self.vertex_joint_ids]], dim=1)

    @staticmethod
    def _landmarks(vertices: Tensor, vertex_ids: Tensor, bary: Tensor) -> Tensor:
        """Barycentric points on faces. vertices B x V x 3, vertex_ids (B x) L x 3, bary (B x) L x 3 -> B x L x 3."""
        b = vertices.shape[0]
        ids = vertex_ids.expand(b, -1, -1).reshape(b, -1, 1).expand(-1, -1, 3)
        corners = torch.gather(vertices, 1, ids).reshape(b, -1, 3, 3)  # B x L x corner x xyz
        return (corners * bary.expand(b, -1, -1).unsqueeze(-1)).sum(dim=2)

    def _contour(self, vertices: Tensor, rot: Tensor) -> Tensor:
        """Face contour that follows the head's yaw (SMPL-X's dynamic landmarks): a look-up table row is
        chosen from the rotation of the neck relative to the world. vertices B x V x 3, rot B x 55 x 3 x 3.
        """
        rel = rot[:, self.neck_chain[-1]]
        for j in reversed(self.neck_chain[:-1]):  # root-most first: R_pelvis R_spine1 ... R_neck
            rel = rel @ rot[:, j]
        # Yaw about the vertical axis, in whole degrees, folded into the table's 79 rows (0..39 one way,
        # 40..78 the other), as smplx does.
        yaw = torch.atan2(-rel[:, 2, 0], torch.sqrt(rel[:, 0, 0] ** 2 + rel[:, 1, 0] ** 2))
        deg = torch.round(torch.clamp(-yaw * (180.0 / torch.pi), max=39.0)).long()
        row = torch.where(deg < 0, torch.where(deg < -39, torch.full_like(deg, 78), 39 - deg), deg)
        return self._landmarks(vertices, self.contour_vertex_ids[row], self.contour_bary[row])


def _chain_to_root(parents: tuple[int, ...], joint: int) -> tuple[int, ...]:
    chain = [joint]
    while parents[chain[-1]] >= 0:
        chain.append(parents[chain[-1]])
    return tuple(chain)


def load_body_model(path: str | os.PathLike | None = None) -> SMPLXLayer:
    """The SMPL-X layer for an explicit path, else $BIDRN_BODY_MODEL, a model folder, or the embedded default."""
    return SMPLXLayer(load_model_file(resolve_model_path(path)))
