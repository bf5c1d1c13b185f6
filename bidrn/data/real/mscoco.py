"""MSCOCO whole-body (Jin et al., ECCV 2020) with NeuralAnnot SMPL-X pseudo-GT, as Hand4Whole reads it.

root/
  images/train2017/*.jpg (val2017 for split="val")
  annotations/coco_wholebody_train_v1.0.json     COCO format + whole-body keypoints and part boxes
  annotations/MSCOCO_train_SMPLX_all_NeuralAnnot.json   {annotation id: {"smplx_param": {...}, "cam_param": {...}}}

Keypoints: 17 COCO body + 6 foot + 68 face + 21 per hand (wrist, thumb 1-4, index, middle, ring, pinky), each
(x, y, visibility). Hand4Whole adds a pelvis at the hip midpoint; the face points are not among the 65 joints.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import (BadAnnotation, RealDataset, Record, annotation_key, array, get, map_joints,
                   parse_neuralannot, read_coco, read_field, read_json, require_image, smplx_hands_mean, xywh_to_xyxy)

COCO_BODY = ("Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow",
             "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle")
COCO_FOOT = ("L_Big_toe", "L_Small_toe", "L_Heel", "R_Big_toe", "R_Small_toe", "R_Heel")
COCO_HAND = ("Wrist_Hand", *(f"{f}_{k}" for f in ("Thumb", "Index", "Middle", "Ring", "Pinky") for k in (1, 2, 3, 4)))
KEYPOINT_NAMES = (*COCO_BODY, "Pelvis", *COCO_FOOT, *(f"L_{n}" for n in COCO_HAND), *(f"R_{n}" for n in COCO_HAND))
PART_BOXES = (("lhand", "lefthand"), ("rhand", "righthand"), ("face", "face"))


class MSCOCO(RealDataset):
    """MSCOCO whole-body. Extra argument: ``hands_mean`` (2 x 45; default: from the resolved SMPL-X file).

    Yields 2D joints (24 of 25 body joints, COCO has no neck; 20 per hand), hand and face boxes, and the
    NeuralAnnot SMPL-X parameters where a fit exists (else those targets are invalid and the sample is kept).
    """

    splits = ("train", "val")

    def __init__(self, root, split="train", hands_mean: torch.Tensor | None = None, **kw):
        self.hands_mean = smplx_hands_mean() if hands_mean is None else hands_mean
        super().__init__(root, split, **kw)

    def build_index(self) -> list[Record]:
        ann_dir = self.root / "annotations"
        self.annot_path = ann_dir / f"coco_wholebody_{self.split}_v1.0.json"
        images, annotations = read_coco(self.annot_path)
        fits = read_json(ann_dir / "MSCOCO_train_SMPLX_all_NeuralAnnot.json") if self.split == "train" else {}
        img_dir = self.root / "images" / f"{self.split}2017"

        def parse(ann) -> Record | None:
            if get(ann, "iscrowd", "annotation") or get(ann, "num_keypoints", "annotation") == 0:
                raise BadAnnotation("crowd or no keypoints (Hand4Whole skips these)")
            img = images.get(get(ann, "image_id", "annotation"))
            if img is None:
                raise BadAnnotation("image_id not among the file's images")
            bbox = self.person_box(read_field(ann, "bbox", (4,), "annotation"), img["width"], img["height"])
            body = array(get(ann, "keypoints", "annotation"), (17, 3), "keypoints")
            pelvis = (body[11] + body[12]) / 2
            pelvis[2] = float(body[11, 2] > 0 and body[12, 2] > 0)
            kpts = np.concatenate([body, pelvis[None], array(get(ann, "foot_kpts", "annotation"), (6, 3), "foot_kpts"),
                                   array(get(ann, "lefthand_kpts", "annotation"), (21, 3), "lefthand_kpts"),
                                   array(get(ann, "righthand_kpts", "annotation"), (21, 3), "righthand_kpts")])
            joint_img, joint_valid = map_joints(KEYPOINT_NAMES, kpts[:, :2], (kpts[:, 2] > 0).astype(np.float32))
            boxes = {part: xywh_to_xyxy(array(get(ann, f"{name}_box", "annotation"), (4,), f"{name}_box"))
                     if ann.get(f"{name}_valid") else None for part, name in PART_BOXES}
            record = Record(key=f"{self.annot_path.name} annotation {get(ann, 'id', 'annotation')}",
                            img_path=require_image(img_dir / img["file_name"]), img_hw=(img["height"], img["width"]),
                            bbox=bbox, joint_img=joint_img, joint_valid=joint_valid, part_boxes=boxes)
            fit = fits.get(str(ann["id"]))
            if fit is not None:
                record.smplx = parse_neuralannot(get(fit, "smplx_param", "NeuralAnnot entry"), self.hands_mean)
            elif self.split == "train":
                self.report.note("no NeuralAnnot SMPL-X fit", record.key)
            return record

        return self.collect(annotations, parse, lambda a: annotation_key(self.annot_path, a))
