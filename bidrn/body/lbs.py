"""Linear blend skinning pieces of the SMPL-X forward, written so `torch.export` can trace them.

The kinematic tree is static data (a tuple of parent indices), so the chain of rigid transforms is
unrolled once per tree *depth level* into a few batched matmuls instead of a Python loop over a
parents tensor (the data-dependent loop that stops smplx's own forward from exporting).
Equation numbers refer to the SMPL-X paper (Pavlakos et al., CVPR 2019, Sec. 3).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula R = I + sin(t) K + (1 - cos(t)) K^2, K the cross-product matrix of the unit axis.

    axis_angle: ... x 3  ->  ... x 3 x 3
    """
    out_dtype = axis_angle.dtype
    # Half precision would flush the epsilon below to zero (0/0 at rest): 55 rotations are cheap in float32.
    axis_angle = axis_angle.float() if out_dtype in (torch.float16, torch.bfloat16) else axis_angle
    # The epsilon keeps the gradient finite at zero rotation; the axis is then 0 and R is exactly I.
    angle = torch.sqrt((axis_angle * axis_angle).sum(-1, keepdim=True) + 1e-16)
    x, y, z = (axis_angle / angle).unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))
    s = torch.sin(angle).unsqueeze(-1)
    c = torch.cos(angle).unsqueeze(-1)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return (eye + s * k + (1.0 - c) * (k @ k)).to(out_dtype)


def tree_levels(parents: tuple[int, ...]) -> list[list[int]]:
    """Joints grouped by depth in the kinematic tree (root first); every parent precedes its children."""
    depth = [0] * len(parents)
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError(f"kinematic tree: parent {p} of joint {j} must have a smaller index")
        depth[j] = 0 if p < 0 else depth[p] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


class KinematicChain(torch.nn.Module):
    """Composes local joint transforms into world transforms, one batched step per tree level (Eq. 1's G_k)."""

    def __init__(self, parents: tuple[int, ...]):
        super().__init__()
        self.parents = tuple(int(p) for p in parents)
        levels = tree_levels(self.parents)
        order = [j for level in levels for j in level]
        position = {j: i for i, j in enumerate(order)}
        for i, level in enumerate(levels):
            self.register_buffer(f"level_{i}", torch.tensor(level), persistent=False)
            if i:
                # Where this level's parents sit in the level-ordered concatenation built so far.
                pos = torch.tensor([position[self.parents[j]] for j in level])
                self.register_buffer(f"parent_pos_{i}", pos, persistent=False)
        self.register_buffer("inverse_order", torch.tensor([position[j] for j in range(len(order))]), persistent=False)
        self.register_buffer("parent_index", torch.tensor([max(p, 0) for p in self.parents]), persistent=False)
        self.register_buffer("not_root", (torch.tensor(self.parents) >= 0).float().unsqueeze(-1), persistent=False)
        self.num_levels = len(levels)

    def forward(self, rot: Tensor, joints: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """rot: B x J x 3 x 3 local rotations, joints: B x J x 3 rest joints.

        Returns posed joints (B x J x 3) and the skinning transforms that map rest-pose points to posed
        points, split as rotation (B x J x 3 x 3) and translation (B x J x 3): A_k = G_k [I | -j_k].
        """
        # Bone vectors: offset of each joint from its parent (the root keeps its absolute position).
        rel = joints - joints[:, self.parent_index] * self.not_root.to(joints.dtype)
        level0 = self.level_0
        g_rot, g_trans = rot[:, level0], rel[:, level0]
        for i in range(1, self.num_levels):
            level = getattr(self, f"level_{i}")
            pp = getattr(self, f"parent_pos_{i}")
            p_rot, p_trans = g_rot[:, pp], g_trans[:, pp]
            # G_child = G_parent [R_child | t_child]
            c_rot = p_rot @ rot[:, level]
            c_trans = (p_rot @ rel[:, level].unsqueeze(-1)).squeeze(-1) + p_trans
            g_rot = torch.cat([g_rot, c_rot], dim=1)
            g_trans = torch.cat([g_trans, c_trans], dim=1)
        g_rot = g_rot[:, self.inverse_order]
        posed = g_trans[:, self.inverse_order]
        # Remove the rest-pose joint so the transform applies to rest-pose vertices.
        a_trans = posed - (g_rot @ joints.unsqueeze(-1)).squeeze(-1)
        return posed, g_rot, a_trans


def skin(weights: Tensor, a_rot: Tensor, a_trans: Tensor, points: Tensor) -> Tensor:
    """Linear blend skinning (SMPL-X Eq. 1): v' = sum_k w_k (R_k v + t_k), blending the transforms first.

    weights: V x J, a_rot: B x J x 3 x 3, a_trans: B x J x 3, points: B x V x 3  ->  B x V x 3
    """
    b, j = a_rot.shape[:2]
    # Per joint [R columns | t] as 12 numbers; one V x J @ J x 12B product blends them for the whole batch.
    # (A broadcast V x J @ B x J x 12 matmul would be lowered with a copy of the 13,718 x 55 weights per
    # call, and R v as a batched 3 x 3 @ 3 x 1 matmul with copies of R and v: 3 of the body layer's 4 ms
    # in ExecuTorch. Written with 2-D products and elementwise ops neither happens.)
    per_joint = torch.cat([a_rot.transpose(-1, -2).reshape(b, j, 9), a_trans], dim=-1)  # B x J x 12
    # As a linear layer with the skinning weights as its weight: XNNPACK runs it (a plain mm it leaves to a
    # slow portable kernel). The int8 export keeps the body layer float (export.FLOAT_MODULES).
    blended = F.linear(per_joint.transpose(1, 2).reshape(b * 12, j), weights).reshape(b, 12, -1).transpose(1, 2)
    x, y, z = points.unbind(-1)
    return (blended[..., 0:3] * x.unsqueeze(-1) + blended[..., 3:6] * y.unsqueeze(-1)
            + blended[..., 6:9] * z.unsqueeze(-1) + blended[..., 9:12])
