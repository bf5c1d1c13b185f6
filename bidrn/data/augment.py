"""Training augmentation as in Hand4Whole (Moon et al., CVPR-W 2022): scale, in-plane rotation, horizontal flip
with SMPL-X's left/right swap, colour jitter.

Geometry follows Hand4Whole's crop: a box (centre, size) maps onto the output patch so that the box centre lands
on (W / 2, H / 2) and the box, scaled by ``scale`` and rotated by ``rot`` degrees, fills the patch. Pixel centres
sit at integer coordinates, as cv2.warpAffine reads them. A rotation of the crop by ``rot`` turns the image
content by -rot, so 3D targets (camera-space joints, the root orientation) turn by -rot about the camera's z axis.

Flip mirrors a finished sample about its vertical centre line (x' = W - 1 - x, an exact pixel permutation), so
flipping twice is the identity. Hand4Whole flips the source image before cropping; the two agree up to the sign
of the (symmetrically drawn) rotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bidrn.body import joint_sets as js
from bidrn.models.ops import axis_angle_to_rotmat, flip_axis_angle, rotmat_to_axis_angle

WHOLE_BODY_JOINTS = (
    *js.BODY_JOINTS, *(f"L_{n}" for n in js.HAND_JOINTS), *(f"R_{n}" for n in js.HAND_JOINTS),
)  # the sample's 65 joints, named as Hand4Whole names them


def _mirror_permutation(names) -> list[int]:
    """Index of each name's mirror image (L_x <-> R_x; unsided names map to themselves)."""
    def mirror(n: str) -> str:
        if n.startswith("L_"):
            return "R_" + n[2:]
        if n.startswith("R_"):
            return "L_" + n[2:]
        return n
    return [names.index(mirror(n)) for n in names]


def _smplx_pose_mirror() -> list[int]:
    """Mirror permutation of the 53 posed SMPL-X joints: root, 21 body, 15 left hand, 15 right hand, jaw."""
    body = js.SKELETON_JOINTS[:22]

    def mirror(n: str) -> str:
        return n.replace("left_", "right_") if n.startswith("left_") else n.replace("right_", "left_")
    perm = [body.index(mirror(n)) for n in body]
    # SMPL-X lists both hands' fingers in the same order, so the hands swap as whole blocks.
    perm += list(range(37, 52)) + list(range(22, 37)) + [52]
    return perm


JOINT_MIRROR = _mirror_permutation(WHOLE_BODY_JOINTS)
POSE_MIRROR = _smplx_pose_mirror()


@dataclass(frozen=True)
class AugmentConfig:
    """Hand4Whole's training augmentation (get_aug_config): the defaults reproduce it."""

    scale_factor: float = 0.25  # scale = 1 + scale_factor * clip(N(0, 1), -1, 1)
    rot_factor: float = 30.0  # rot = rot_factor * clip(N(0, 1), -2, 2) degrees ...
    rot_prob: float = 0.6  # ... with this probability, else 0
    color_factor: float = 0.2  # per-channel gain ~ U(1 - f, 1 + f)
    flip_prob: float = 0.5


@dataclass(frozen=True)
class AugmentParams:
    scale: float = 1.0
    rot: float = 0.0  # degrees
    flip: bool = False
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def draw_params(config: AugmentConfig, generator: torch.Generator) -> AugmentParams:
    """One draw of Hand4Whole's augmentation parameters, deterministic given the generator's state."""
    normal = torch.randn(2, generator=generator, dtype=torch.float64)
    uniform = torch.rand(5, generator=generator, dtype=torch.float64)
    scale = 1.0 + config.scale_factor * float(normal[0].clamp(-1.0, 1.0))
    rot = config.rot_factor * float(normal[1].clamp(-2.0, 2.0)) if float(uniform[0]) <= config.rot_prob else 0.0
    color = tuple(float(1.0 - config.color_factor + 2.0 * config.color_factor * u) for u in uniform[1:4])
    return AugmentParams(scale=scale, rot=rot, flip=bool(float(uniform[4]) < config.flip_prob), color=color)


# ---------------------------------------------------------------- geometry


def crop_affine(center: tuple[float, float], size: tuple[float, float], out_hw: tuple[int, int],
                scale: float = 1.0, rot: float = 0.0) -> torch.Tensor:
    """Source pixels -> patch pixels (Hand4Whole's gen_trans_from_patch_cv): a 2 x 3 float64 matrix.

    The box of ``size`` (w, h) about ``center``, grown by ``scale`` and turned by ``rot`` degrees, maps onto the
    out_hw = (H, W) patch with its centre at (W / 2, H / 2): dst = S R(-rot) (src - center) + (W / 2, H / 2),
    S = diag(W / (w scale), H / (h scale)).
    """
    (cx, cy), (w, h), (out_h, out_w) = center, size, out_hw
    if w <= 0 or h <= 0 or scale <= 0:
        raise ValueError(f"crop_affine needs a positive box size and scale, got size {size}, scale {scale}")
    a = math.radians(rot)
    cos, sin = math.cos(a), math.sin(a)
    sx, sy = out_w / (w * scale), out_h / (h * scale)
    lin = torch.tensor([[sx * cos, sx * sin], [-sy * sin, sy * cos]], dtype=torch.float64)  # S R(-rot)
    centre = torch.tensor([cx, cy], dtype=torch.float64)
    shift = torch.tensor([out_w / 2, out_h / 2], dtype=torch.float64) - lin @ centre
    return torch.cat([lin, shift[:, None]], dim=1)


def apply_affine(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """N x 2 points, 2 x 3 affine -> N x 2 (float32)."""
    pts = points.to(torch.float64)
    return (pts @ affine[:, :2].T + affine[:, 2]).to(torch.float32)


def warp_image(img: torch.Tensor, affine: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """cv2.warpAffine with bilinear sampling and a black border, in torch: 3 x H x W -> 3 x out_h x out_w.

    Each patch pixel reads the source at affine^-1 (u, v); grid_sample with align_corners=True puts pixel centres
    at integers like cv2, and zero padding blends edge pixels with black like BORDER_CONSTANT.
    """
    out_h, out_w = out_hw
    full = torch.cat([affine, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)])
    inv = torch.linalg.inv(full)[:2]
    v, u = torch.meshgrid(torch.arange(out_h, dtype=torch.float64), torch.arange(out_w, dtype=torch.float64),
                          indexing="ij")
    src = torch.stack([u, v, torch.ones_like(u)], dim=-1) @ inv.T  # out_h x out_w x 2
    height, width = img.shape[-2:]
    grid = torch.stack([src[..., 0] / max(width - 1, 1), src[..., 1] / max(height - 1, 1)], dim=-1) * 2 - 1
    img_f = img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
    out = F.grid_sample(img_f[None], grid[None].float(), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].clamp(0.0, 1.0)


def transform_boxes(boxes: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """K x 4 xyxy boxes through an affine -> K x 4 xyxy: the axis-aligned box around the 4 mapped corners
    (Hand4Whole's process_hand_face_bbox)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))], dim=1)
    mapped = apply_affine(corners.reshape(-1, 2), affine).reshape(-1, 4, 2)
    return torch.cat([mapped.amin(1), mapped.amax(1)], dim=-1)


def inside_image(xy: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """N x 2 -> N bool: the point lies on a pixel of the H x W image (pixel i covers [i - 0.5, i + 0.5]).

    Symmetric under x -> W - 1 - x, so flipping never changes which joints are visible.
    """
    h, w = hw
    return (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)


def rotation_z(rot: float) -> torch.Tensor:
    """The 3 x 3 camera-space rotation matching a crop turned by ``rot`` degrees (content turns by -rot)."""
    a = math.radians(-rot)
    return torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def rotate_3d(sample: dict[str, torch.Tensor], rot: float) -> dict[str, torch.Tensor]:
    """Turn the 3D targets with the image: joint_cam (65 x 3), joint_img depth and the root orientation."""
    if rot == 0.0:
        return sample
    out = dict(sample)
    r = rotation_z(rot)
    out["joint_cam"] = sample["joint_cam"] @ r.T
    out["smplx_root_pose"] = rotmat_to_axis_angle(r @ axis_angle_to_rotmat(sample["smplx_root_pose"]))
    return out


def transform_2d(sample: dict[str, torch.Tensor], affine: torch.Tensor) -> dict[str, torch.Tensor]:
    """Move joint_img (x, y) and the part boxes through an affine; joints that leave the image become invalid."""
    out = dict(sample)
    hw = tuple(sample["img"].shape[-2:])
    xy = apply_affine(sample["joint_img"][:, :2], affine)
    out["joint_img"] = torch.cat([xy, sample["joint_img"][:, 2:]], dim=1)
    out["joint_valid"] = sample["joint_valid"] * inside_image(xy, hw).float()
    for part in ("lhand", "rhand", "face"):
        out[f"{part}_bbox"] = transform_boxes(sample[f"{part}_bbox"][None], affine)[0]
    return out


# ---------------------------------------------------------------- flip and colour


def flip_sample(sample: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mirror a sample left-right, including its SMPL-X parameters (an involution: flip(flip(s)) == s).

    Image and 2D: x' = W - 1 - x. 3D: x' = -x. Left/right joints, hand poses, pose validity and the hand boxes
    swap; every joint's axis-angle, root and jaw included, becomes (x, -y, -z) (mirroring across x = 0);
    shape and expression are unchanged. The principal point mirrors so the camera still projects joint_cam
    onto joint_img.
    """
    if "mesh_cam" in sample:
        raise ValueError("flip_sample cannot mirror mesh_cam: that needs SMPL-X's vertex symmetry map. Evaluation "
                         "samples (the only ones with mesh_cam) are not augmented; build them with augment=None.")
    width = sample["img"].shape[-1]
    out = dict(sample)
    out["img"] = sample["img"].flip(-1)
    joint_img = sample["joint_img"][JOINT_MIRROR].clone()
    joint_img[:, 0] = width - 1 - joint_img[:, 0]
    out["joint_img"] = joint_img
    joint_cam = sample["joint_cam"][JOINT_MIRROR].clone()
    joint_cam[:, 0] = -joint_cam[:, 0]
    out["joint_cam"] = joint_cam
    out["joint_valid"] = sample["joint_valid"][JOINT_MIRROR]
    out["joint_cam_valid"] = sample["joint_cam_valid"][JOINT_MIRROR]

    pose = torch.cat([sample["smplx_root_pose"], sample["smplx_body_pose"], sample["smplx_lhand_pose"],
                      sample["smplx_rhand_pose"], sample["smplx_jaw_pose"]]).reshape(-1, 3)
    pose = flip_axis_angle(pose[POSE_MIRROR]).reshape(-1)
    for key, part in zip(("root", "body", "lhand", "rhand", "jaw"), pose.split([3, 63, 45, 45, 3])):
        out[f"smplx_{key}_pose"] = part.clone()
    out["smplx_pose_valid"] = sample["smplx_pose_valid"][POSE_MIRROR]

    def mirror_box(box: torch.Tensor) -> torch.Tensor:
        return torch.stack([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
    out["lhand_bbox"], out["rhand_bbox"] = mirror_box(sample["rhand_bbox"]), mirror_box(sample["lhand_bbox"])
    out["lhand_bbox_valid"], out["rhand_bbox_valid"] = sample["rhand_bbox_valid"], sample["lhand_bbox_valid"]
    out["face_bbox"] = mirror_box(sample["face_bbox"])
    out["princpt"] = torch.stack([width - 1 - sample["princpt"][0], sample["princpt"][1]])
    return out


def jitter_color(img: torch.Tensor, color: tuple[float, float, float]) -> torch.Tensor:
    """Per-channel gain, clipped to [0, 1] (Hand4Whole: img * color_scale, clipped to [0, 255]). 3 x H x W."""
    if color == (1.0, 1.0, 1.0):
        return img
    return (img * img.new_tensor(color)[:, None, None]).clamp(0.0, 1.0)


def augment_sample(sample: dict[str, torch.Tensor], params: AugmentParams) -> dict[str, torch.Tensor]:
    """Augment a sample that is already cropped to the input size (e.g. a rendered one).

    Scale and rotation turn the patch about its centre (the real-data loaders fold them into the crop from the
    source image instead, which keeps real context at the borders); then flip, then colour.
    """
    out = dict(sample)
    if params.scale != 1.0 or params.rot != 0.0:
        h, w = sample["img"].shape[-2:]
        affine = crop_affine((w / 2, h / 2), (w, h), (h, w), params.scale, params.rot)
        out = transform_2d(out, affine)
        out["img"] = warp_image(sample["img"], affine, (h, w))
        out = rotate_3d(out, params.rot)
    if params.flip:
        out = flip_sample(out)
    out["img"] = jitter_color(out["img"], params.color)
    return out

