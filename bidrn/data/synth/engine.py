"""The synthetic whole-body engine: sample parameters, pose the body model, frame, render, label. All batched.

Sample i of a seed depends only on (seed, i) (see rng.py), so the on-the-fly Dataset, `generate` and the shard
writer all produce the same samples whatever the batch size.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bidrn.body import SMPLXLayer, load_body_model
from bidrn.body.joint_sets import PELVIS_IDX
from bidrn.data.sample import NUM_JOINTS, NUM_POSE_JOINTS
from bidrn.render import Camera, render

from .appearance import BodyRegions, sample_colors, sample_lighting
from .camera import frame, project, sample_global_orient, sample_position
from .hands import sample_hand_pose
from .poses import sample_body_pose
from .rng import BatchRandom
from .scene import backgrounds, occluders


@dataclass(frozen=True)
class SynthConfig:
    """What the engine draws; the defaults are the project's training distribution."""

    archetype_prob: float = 0.6  # body poses from the archetypes (the rest: random within limits)
    hand_random_prob: float = 0.2  # hand poses random within limits (the rest: the library)
    upper_body_prob: float = 0.1  # crops framed on the upper body only (legs leave the image)
    occluder_prob: float = 0.3
    crop_scale: tuple[float, float] = (1.15, 1.4)  # around Hand4Whole's 1.25 box extension
    hand_aspect: float = 1.0  # W / H of the hand crop (Hand4Whole's hand_input is square)
    face_aspect: float = 1.0  # W / H of the face crop (face_input is square)
    supersample: int = 2
    noise_std: float = 0.01  # sensor noise, in [0, 1] image units
    max_abs_beta: float = 2.5


@functools.lru_cache(maxsize=1)
def default_body_model() -> SMPLXLayer:
    return load_body_model()


def _box(uv: Tensor, aspect: float) -> Tensor:
    """xyxy box B x 4 of points B x N x 2, widened on its short side to width / height = aspect."""
    lo, hi = uv.min(1).values, uv.max(1).values
    centre, size = (lo + hi) / 2, hi - lo
    w = torch.maximum(size[:, 0], size[:, 1] * aspect)
    half = torch.stack([w, w / aspect], -1) / 2
    return torch.cat([centre - half, centre + half], -1)


def _inside(xy: Tensor, input_size: tuple[int, int]) -> Tensor:
    h, w = input_size
    return (xy[..., 0] >= 0) & (xy[..., 0] < w) & (xy[..., 1] >= 0) & (xy[..., 1] < h)


class SynthEngine:
    """Holds one body model's precomputed regions; `generate(indices, seed)` makes a batch of samples."""

    def __init__(self, input_size: tuple[int, int], body_model: SMPLXLayer | None = None, config: SynthConfig = SynthConfig()):
        self.input_size = tuple(input_size)
        self.layer = body_model if body_model is not None else default_body_model()
        self.config = config
        self.regions = BodyRegions(self.layer)
        layer = self.layer
        self.joint_idx = torch.cat([layer.body_joint_idx, layer.lhand_joint_idx, layer.rhand_joint_idx])  # 65
        # A model without hand vertex sets (a bare SMPL-X file) falls back to the hand joints for the boxes.
        self.lhand_points = ("vertices", layer.lhand_vertex_idx) if layer.lhand_vertex_idx.numel() else ("joints", layer.lhand_joint_idx)
        self.rhand_points = ("vertices", layer.rhand_vertex_idx) if layer.rhand_vertex_idx.numel() else ("joints", layer.rhand_joint_idx)
        # Upper-body framing uses the vertices above the pelvis at rest (torso, arms, head).
        self.upper_body = layer.v_template[:, 1] > layer.j_template[PELVIS_IDX, 1]  # V

    @torch.no_grad()
    def generate(self, indices: list[int], seed: int, with_mesh: bool = False, extras: bool = False) -> dict[str, Tensor]:
        """Samples `indices` of stream `seed`, batched: every key of bidrn.data.sample with a leading B, plus
        mesh_cam (B x V x 3) when asked; extras adds mask (B x H x W, the person's coverage before occluders)
        and pelvis_cam (B x 3, the pelvis in the camera frame) for checks and previews."""
        cfg, (h, w), layer = self.config, self.input_size, self.layer

        def rng(stream: str) -> BatchRandom:
            return BatchRandom(seed, list(indices), stream)

        b = len(indices)
        shape_rng = rng("shape")
        betas = shape_rng.normal(10).clamp(-cfg.max_abs_beta, cfg.max_abs_beta)
        expression = (shape_rng.normal(10) * shape_rng.uniform(1, high=1.2)).clamp(-2.5, 2.5)
        face_rng = rng("jaw")
        jaw = torch.stack([torch.where(face_rng.chance(0.5), face_rng.uniform(high=0.35), torch.zeros(b)),
                           face_rng.normal(std=0.03), face_rng.normal(std=0.03)], -1)
        params = dict(
            betas=betas, expression=expression, jaw_pose=jaw, global_orient=sample_global_orient(rng("orient")),
            body_pose=sample_body_pose(rng("body"), cfg.archetype_prob),
            left_hand_pose=sample_hand_pose(rng("left_hand"), right=False, random_prob=cfg.hand_random_prob),
            right_hand_pose=sample_hand_pose(rng("right_hand"), right=True, random_prob=cfg.hand_random_prob),
        )
        out = layer(**params)
        position = sample_position(rng("position"))  # B x 3, the pelvis in the camera frame
        offset = (position - out.joints[:, PELVIS_IDX]).unsqueeze(1)
        verts, joints = out.vertices + offset, out.joints + offset  # B x V x 3, B x 144 x 3

        frame_rng = rng("framing")
        # Upper-body crops frame only the upper-body vertices: the rest stand in as the pelvis, inside that box.
        drop = frame_rng.chance(cfg.upper_body_prob).view(b, 1, 1) & ~self.upper_body.view(1, -1, 1)  # B x V x 1
        framed = torch.where(drop, position.unsqueeze(1), verts)
        focal, principal = frame(framed, frame_rng, self.input_size, cfg.crop_scale)

        light_dir, ambient, gain = sample_lighting(rng("light"))
        rgba = render(verts, layer.faces, sample_colors(rng("appearance"), self.regions),
                      Camera(focal, principal, h, w), light_dir, ambient, cfg.supersample, background=(0.0, 0.0, 0.0))
        alpha = rgba[..., 3].unsqueeze(1)  # B x 1 x H x W
        # The renderer composited over black, so its colour is premultiplied by coverage.
        img = backgrounds(rng("background"), h, w) * (1 - alpha) + rgba[..., :3].permute(0, 3, 1, 2)
        img = occluders(rng("occluders"), img * gain.view(b, 3, 1, 1), cfg.occluder_prob)
        img = (img + rng("noise").normal(3, h, w, std=cfg.noise_std)).clamp(0, 1)

        j65 = joints[:, self.joint_idx]  # B x 65 x 3
        joint_cam = j65 - position.unsqueeze(1)
        uv = project(j65, focal, principal)
        sample = {
            "img": img.float(),
            "joint_img": torch.cat([uv, joint_cam[..., 2:]], -1),
            "joint_valid": _inside(uv, self.input_size).float(),
            "joint_cam": joint_cam,
            "joint_cam_valid": torch.ones(b, NUM_JOINTS),
            "smplx_root_pose": params["global_orient"], "smplx_body_pose": params["body_pose"],
            "smplx_lhand_pose": params["left_hand_pose"], "smplx_rhand_pose": params["right_hand_pose"],
            "smplx_jaw_pose": jaw, "smplx_shape": betas, "smplx_expr": expression,
            "smplx_pose_valid": torch.ones(b, NUM_POSE_JOINTS), "smplx_shape_valid": torch.ones(b),
            "smplx_expr_valid": torch.ones(b), "focal": focal, "principal": principal,
        }
        sample["princpt"] = sample.pop("principal")
        for name, (kind, idx), aspect in (("lhand", self.lhand_points, cfg.hand_aspect),
                                          ("rhand", self.rhand_points, cfg.hand_aspect),
                                          ("face", ("vertices", layer.face_vertex_idx), cfg.face_aspect)):
            box = _box(project((verts if kind == "vertices" else joints)[:, idx], focal, principal), aspect)
            sample[f"{name}_bbox"] = box
            sample[f"{name}_bbox_valid"] = _inside((box[:, :2] + box[:, 2:]) / 2, self.input_size).float()
        if with_mesh:
            sample["mesh_cam"] = verts - position.unsqueeze(1)
        if extras:
            sample["mask"], sample["pelvis_cam"] = alpha[:, 0], position
        return {k: v.float() for k, v in sample.items()}


@functools.lru_cache(maxsize=4)
def _engine(input_size: tuple[int, int], body_model: SMPLXLayer | None, config: SynthConfig) -> SynthEngine:
    return SynthEngine(input_size, body_model, config)


def generate(batch: int, seed: int, input_size: tuple[int, int] = (256, 192), *, start: int = 0,
             body_model: SMPLXLayer | None = None, config: SynthConfig = SynthConfig(),
             with_mesh: bool = False, extras: bool = False) -> dict[str, Tensor]:
    """Samples start .. start + batch - 1 of stream `seed`, batched (every sample key with a leading B)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    return _engine(tuple(input_size), body_model, config).generate(list(range(start, start + batch)), seed, with_mesh, extras)


def unbatch(batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """A batched dict -> one dict per sample."""
    n = len(next(iter(batch.values())))
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


class SyntheticWholeBody(Dataset):
    """`length` synthetic samples of stream `seed`, made on the fly.

    A DataLoader fetches whole batches through __getitems__, rendered together; single-index access renders
    `chunk` neighbouring samples at once and keeps them, so sequential reads are batched too.
    """

    def __init__(self, input_size: tuple[int, int], seed: int, length: int, body_model: SMPLXLayer | None = None,
                 config: SynthConfig = SynthConfig(), chunk: int = 16, with_mesh: bool = False):
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        self.input_size, self.seed, self.length, self.chunk, self.with_mesh = tuple(input_size), seed, length, chunk, with_mesh
        self.engine = SynthEngine(self.input_size, body_model, config)
        self._cached: tuple[int, list[dict[str, Tensor]]] | None = None

    def __len__(self) -> int:
        return self.length

    def _check(self, i: int) -> int:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} synthetic samples")
        return i % self.length

    def __getitems__(self, indices: list[int]) -> list[dict[str, Tensor]]:
        return unbatch(self.engine.generate([self._check(i) for i in indices], self.seed, self.with_mesh))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        i = self._check(i)
        start = i - i % self.chunk
        if self._cached is None or self._cached[0] != start:
            self._cached = (start, self.__getitems__(list(range(start, min(start + self.chunk, self.length)))))
        return self._cached[1][i - start]
