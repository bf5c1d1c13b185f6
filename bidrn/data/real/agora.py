"""AGORA (Patel et al., CVPR 2021) after Hand4Whole's tool/AGORA/agora2coco_smplx.py; evaluation (and training).

root/                                     (Hand4Whole: data/AGORA/data)
  AGORA_{train,validation}_SMPLX.json     COCO-like: images carry file_name_1280x720 / file_name_3840x2160;
                                          annotations carry person_id, is_valid, smplx_param_path, cam_param_path
                                          and bbox / lhand_bbox / rhand_bbox / face_bbox (x, y, w, h, 3840 x 2160 px)
  smplx_params_cam/<folder>/<image>/<person>.json   global_orient, body_pose, left/right_hand_pose, jaw_pose,
                                          betas, expression, transl (camera frame); .npz with the same names also read
  cam_params/<folder>/<image>.json        {"focal": 2, "princpt": 2} in 3840 x 2160 pixels
  images_1280x720/<folder>/<image>_1280x720.png                      resolution="1280x720"
  images_3840x2160/<folder>_crop/<image>_person_id_<p>.png + .json   resolution="3840x2160", made by Hand4Whole's
                                          crop_and_resize_4k_images.py; the JSON holds {"affine_mat": 2 x 3,
                                          "resized_height", "resized_width"}
AGORA's own SMPL-X files are pickles: they are never read here (see the error's conversion hint).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bidrn.body import joint_sets as js
from bidrn.body import load_body_model

from .base import (BadAnnotation, DatasetFormatError, PICKLE_HINT, RealDataset, Record, SMPLXTarget, annotation_key,
                   array, get, read_coco, read_field, read_json, read_param_file, require_image, smplx_hands_mean)
from .ehf import WHOLE_BODY_IDX

FULL_HW = (2160, 3840)
RESOLUTIONS = ("1280x720", "3840x2160")


def clip_box(xywh: np.ndarray, hw: tuple[int, int]) -> np.ndarray | None:
    """Hand4Whole's sanitize_bbox, returned as x1, y1, x2, y2 (None when nothing is left inside the image)."""
    x1, y1 = max(0.0, float(xywh[0])), max(0.0, float(xywh[1]))
    x2 = min(hw[1] - 1.0, x1 + max(0.0, float(xywh[2]) - 1))
    y2 = min(hw[0] - 1.0, y1 + max(0.0, float(xywh[3]) - 1))
    return np.array([x1, y1, x2, y2], np.float32) if xywh[2] * xywh[3] > 0 and x2 > x1 and y2 > y1 else None


class AGORA(RealDataset):
    """AGORA. Extra arguments: ``resolution`` ("1280x720" or "3840x2160"), ``body_model`` (an SMPLXLayer that
    poses the ground truth; default ``bidrn.body.load_body_model()``), ``hands_mean`` as MSCOCO's.

    Yields the SMPL-X parameters, joints from the posed body model (2D projected with AGORA's camera, 3D
    pelvis-relative), the part boxes and ``mesh_cam`` (V x 3, pelvis-relative).
    """

    splits = ("train", "validation")

    def __init__(self, root, split="validation", resolution: str = "1280x720", body_model=None,
                 hands_mean: torch.Tensor | None = None, **kw):
        if resolution not in RESOLUTIONS:
            raise ValueError(f"AGORA resolution must be one of {RESOLUTIONS}, got {resolution!r}")
        self.resolution, self.body_model = resolution, load_body_model() if body_model is None else body_model
        self.hands_mean = smplx_hands_mean() if hands_mean is None else hands_mean
        super().__init__(root, split, **kw)

    def build_index(self) -> list[Record]:
        annot_path = self.root / f"AGORA_{self.split}_SMPLX.json"
        images, annotations = read_coco(annot_path)

        def parse(ann) -> Record:
            img = images.get(get(ann, "image_id", "annotation"))
            if img is None:
                raise BadAnnotation("image_id not among the file's images")
            if not get(ann, "is_valid", "annotation"):
                raise BadAnnotation("marked is_valid = false by AGORA")
            param_path = self.root / get(ann, "smplx_param_path", "annotation")
            if param_path.suffix == ".pkl":
                raise DatasetFormatError(param_path, f"is a pickle. {PICKLE_HINT}")
            cam_path = self.root / get(ann, "cam_param_path", "annotation")
            for path, what in ((param_path, "SMPL-X parameter file missing"), (cam_path, "camera file missing")):
                if not path.is_file():
                    raise BadAnnotation(what)
            boxes = {p: read_field(ann, k, (4,), "annotation") for p, k in
                     (("body", "bbox"), ("lhand", "lhand_bbox"), ("rhand", "rhand_bbox"), ("face", "face_bbox"))}
            key = annotation_key(annot_path, ann)
            if self.resolution == "1280x720":
                return self._resized(key, img, boxes, param_path, cam_path)
            return self._cropped(key, img, ann, boxes, param_path, cam_path)

        return self.collect(annotations, parse, lambda a: annotation_key(annot_path, a))

    def _resized(self, key, img, boxes, param_path, cam_path) -> Record:
        hw = (720, 1280)
        to_res = np.array([hw[1] / FULL_HW[1], hw[0] / FULL_HW[0]] * 2, np.float32)
        bbox = self.person_box(boxes["body"] * to_res, hw[1], hw[0])
        affine = np.array([[to_res[0], 0, 0], [0, to_res[1], 0]], np.float32)
        parts = {p: clip_box(boxes[p] * to_res, hw) for p in ("lhand", "rhand", "face")}
        return Record(key=key, img_path=require_image(self.root / get(img, "file_name_1280x720", "image")),
                      img_hw=hw, bbox=bbox, part_boxes=parts,
                      extra={"params": param_path, "camera": cam_path, "affine": affine})

    def _cropped(self, key, img, ann, boxes, param_path, cam_path) -> Record:
        full = Path(get(img, "file_name_3840x2160", "image"))
        stem = f"{full.stem}_person_id_{get(ann, 'person_id', 'annotation')}"
        crop_dir = self.root / "images_3840x2160" / f"{full.parent.name}_crop"
        info_path = crop_dir / f"{stem}.json"
        if not info_path.is_file():
            raise BadAnnotation("no crop for this person (crop_and_resize_4k_images.py skipped it)")
        info = read_json(info_path)
        affine = array(get(info, "affine_mat", info_path.name), (2, 3), "affine_mat")
        hw = (int(get(info, "resized_height", info_path.name)), int(get(info, "resized_width", info_path.name)))

        def to_crop(xywh: np.ndarray) -> np.ndarray | None:
            corners = np.array([xywh[:2], xywh[:2] + xywh[2:]]) @ affine[:, :2].T + affine[:, 2]
            return clip_box(np.concatenate([corners[0], corners[1] - corners[0]]), hw)
        return Record(key=key, img_path=require_image(crop_dir / f"{stem}.png"), img_hw=hw,
                      bbox=np.array([0, 0, hw[1], hw[0]], np.float32),
                      part_boxes={p: to_crop(boxes[p]) for p in ("lhand", "rhand", "face")},
                      extra={"params": param_path, "camera": cam_path, "affine": affine})

    def complete(self, record: Record) -> Record:
        path = record.extra["params"]
        raw = read_param_file(path)
        try:
            names = (("global_orient", 3), ("body_pose", 63), ("left_hand_pose", 45), ("right_hand_pose", 45),
                     ("jaw_pose", 3), ("expression", 10), ("transl", 3))
            p = {k: read_field(raw, k, (n,), "parameters") for k, n in names}
            betas = np.asarray(get(raw, "betas", "parameters"), np.float32).reshape(-1)[:10]
            betas = array(betas, (10,), "betas (first 10)")
            cam = read_json(record.extra["camera"])
            focal, princpt = read_field(cam, "focal", (2,), "camera"), read_field(cam, "princpt", (2,), "camera")
        except BadAnnotation as bad:
            raise DatasetFormatError(path, bad.reason) from None
        smplx = SMPLXTarget(
            root_pose=p["global_orient"], body_pose=p["body_pose"], jaw_pose=p["jaw_pose"], expr=p["expression"],
            lhand_pose=p["left_hand_pose"] + self.hands_mean[0].numpy(),
            rhand_pose=p["right_hand_pose"] + self.hands_mean[1].numpy(),
            shape=betas, pose_valid=np.ones(53, np.float32), expr_valid=1.0, trans=p["transl"])
        def batch(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a)[None]
        with torch.no_grad():
            out = self.body_model(
                betas=batch(smplx.shape), global_orient=batch(smplx.root_pose), body_pose=batch(smplx.body_pose),
                left_hand_pose=batch(smplx.lhand_pose), right_hand_pose=batch(smplx.rhand_pose),
                jaw_pose=batch(smplx.jaw_pose), expression=batch(smplx.expr), transl=batch(smplx.trans))
        joints, verts = out.joints[0].double().numpy(), out.vertices[0].double().numpy()
        cam65 = joints[WHOLE_BODY_IDX]
        if (cam65[:, 2] <= 0).any():
            raise DatasetFormatError(path, "the posed body lies (partly) behind the camera: transl is not camera-frame")
        affine = record.extra["affine"].astype(np.float64)  # 4K pixels -> this image's pixels
        uv = (cam65[:, :2] / cam65[:, 2:] * focal + princpt) @ affine[:, :2].T + affine[:, 2]
        pelvis = joints[js.PELVIS_IDX]
        ones = np.ones(len(WHOLE_BODY_IDX), np.float32)
        return replace(record, smplx=smplx, joint_img=uv.astype(np.float32), joint_valid=ones,
                       joint_cam=(cam65 - pelvis).astype(np.float32), joint_cam_valid=ones,
                       mesh_cam=(verts - pelvis).astype(np.float32))
