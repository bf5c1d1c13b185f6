"""MPII Human Pose (Andriluka et al., CVPR 2014) with NeuralAnnot SMPL-X pseudo-GT, as Hand4Whole reads it.

root/
  data/images/*.jpg
  data/annotations/train.json                      COCO format, 16 keypoints (x, y, visibility) per person
  data/annotations/MPII_train_SMPLX_NeuralAnnot.json   {annotation id: {"smplx_param": {...}, "cam_param": {...}}}
"""
from __future__ import annotations

import numpy as np
import torch

from .base import (BadAnnotation, RealDataset, Record, annotation_key, array, get, map_joints,
                   parse_neuralannot, read_coco, read_field, read_json, require_image, smplx_hands_mean)

MPII_JOINTS = ("R_Ankle", "R_Knee", "R_Hip", "L_Hip", "L_Knee", "L_Ankle", "Pelvis", "Thorax", "Neck", "Head_top",
               "R_Wrist", "R_Elbow", "R_Shoulder", "L_Shoulder", "L_Elbow", "L_Wrist")
# Hand4Whole does not supervise these SMPL-X rotations on 2D-only body data sets (feet and hands are unseen).
UNSUPERVISED_POSE = (7, 8, 20, 21)  # left/right ankle, left/right wrist in SMPL-X's skeleton


class MPII(RealDataset):
    """MPII (train split only; Hand4Whole uses it for training). Extra argument: ``hands_mean`` as MSCOCO's.

    Yields 13 of the 25 body joints in 2D (MPII's thorax and head top are not among them) and NeuralAnnot
    SMPL-X parameters where a fit exists; no hand or face boxes.
    """

    def __init__(self, root, split="train", hands_mean: torch.Tensor | None = None, **kw):
        self.hands_mean = smplx_hands_mean() if hands_mean is None else hands_mean
        super().__init__(root, split, **kw)

    def build_index(self) -> list[Record]:
        data_dir = self.root / "data"
        annot_path = data_dir / "annotations" / "train.json"
        images, annotations = read_coco(annot_path)
        fits = read_json(data_dir / "annotations" / "MPII_train_SMPLX_NeuralAnnot.json")

        def parse(ann) -> Record:
            img = images.get(get(ann, "image_id", "annotation"))
            if img is None:
                raise BadAnnotation("image_id not among the file's images")
            bbox = self.person_box(read_field(ann, "bbox", (4,), "annotation"), img["width"], img["height"])
            kpts = array(get(ann, "keypoints", "annotation"), (16, 3), "keypoints")
            joint_img, joint_valid = map_joints(MPII_JOINTS, kpts[:, :2], (kpts[:, 2] > 0).astype(np.float32))
            # file_name is relative to data/ in Hand4Whole's release; accept it relative to data/images/ too.
            img_path = data_dir / img["file_name"]
            if not img_path.is_file():
                img_path = data_dir / "images" / img["file_name"]
            record = Record(key=f"{annot_path.name} annotation {get(ann, 'id', 'annotation')}",
                            img_path=require_image(img_path), img_hw=(img["height"], img["width"]), bbox=bbox,
                            joint_img=joint_img, joint_valid=joint_valid)
            fit = fits.get(str(ann["id"]))
            if fit is None:
                self.report.note("no NeuralAnnot SMPL-X fit", record.key)
            else:
                record.smplx = parse_neuralannot(get(fit, "smplx_param", "NeuralAnnot entry"), self.hands_mean)
                record.smplx.pose_valid[list(UNSUPERVISED_POSE)] = 0
            return record

        return self.collect(annotations, parse, lambda a: annotation_key(annot_path, a))
