"""Human3.6M (Ionescu et al., TPAMI 2014) with NeuralAnnot SMPL-X pseudo-GT, as Hand4Whole reads it.

root/
  images/<file_name from the data file>
  annotations/Human36M_subject{S}_data.json      COCO format; images carry subject, action_idx, subaction_idx,
                                                  cam_idx, frame_idx; annotations carry the person box
  annotations/Human36M_subject{S}_camera.json    {cam_idx: {"R": 3 x 3, "t": 3 (mm), "f": 2, "c": 2}}
  annotations/Human36M_subject{S}_joint_3d.json  {action: {subaction: {frame: 17 x 3 world mm}}}
  annotations/Human36M_subject{S}_SMPLX_NeuralAnnot.json  {action: {subaction: {frame: {root_pose, ...}}}}
"""
from __future__ import annotations

import numpy as np
import torch

from .base import (BadAnnotation, RealDataset, Record, annotation_key, array, get, map_joints,
                   parse_neuralannot, read_coco, read_field, read_json, require_image,
                   smplx_hands_mean)
from .mpii import UNSUPERVISED_POSE

H36M_JOINTS = ("Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "Torso", "Neck", "Head",
               "Head_top", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Shoulder", "R_Elbow", "R_Wrist")
SUBJECTS = {"train": (1, 5, 6, 7, 8), "test": (9, 11)}
SAMPLING_RATIO = {"train": 5, "test": 64}  # every n-th frame, as Hand4Whole
TEST_CAMERA = 4  # the frontal camera (HMR / SPIN protocol)


class Human36M(RealDataset):
    """Human3.6M. Extra arguments: ``subjects`` (default: 1, 5, 6, 7, 8 for train, 9, 11 for test),
    ``sampling_ratio`` (default 5 / 64), ``hands_mean`` as MSCOCO's.

    Yields 14 of the 25 body joints in 2D and 3D (camera frame, pelvis-relative, metres; depth in joint_img)
    and the NeuralAnnot SMPL-X parameters with the root turned into the camera frame.
    """

    splits = ("train", "test")

    def __init__(self, root, split="train", subjects: tuple[int, ...] | None = None,
                 sampling_ratio: int | None = None, hands_mean: torch.Tensor | None = None, **kw):
        self.subjects = SUBJECTS[split] if subjects is None and split in SUBJECTS else subjects
        self.sampling_ratio = SAMPLING_RATIO.get(split, 1) if sampling_ratio is None else sampling_ratio
        self.hands_mean = smplx_hands_mean() if hands_mean is None else hands_mean
        super().__init__(root, split, **kw)

    def build_index(self) -> list[Record]:
        records = []
        for subject in self.subjects:
            records += self._subject(subject)
        return records

    def _subject(self, subject: int) -> list[Record]:
        ann_dir = self.root / "annotations"
        stem = f"Human36M_subject{subject}"
        data_path = ann_dir / f"{stem}_data.json"
        images, annotations = read_coco(data_path)
        cameras = read_json(ann_dir / f"{stem}_camera.json")
        joints = read_json(ann_dir / f"{stem}_joint_3d.json")
        fits = read_json(ann_dir / f"{stem}_SMPLX_NeuralAnnot.json")

        def parse(ann) -> Record | None:
            img = images.get(get(ann, "image_id", "annotation"))
            if img is None:
                raise BadAnnotation("image_id not among the file's images")
            if img["frame_idx"] % self.sampling_ratio != 0:
                return None
            if self.split == "test" and int(img["cam_idx"]) != TEST_CAMERA:
                return None
            frame = (str(img["action_idx"]), str(img["subaction_idx"]), str(img["frame_idx"]))
            cam = cameras.get(str(img["cam_idx"]))
            if cam is None:
                raise BadAnnotation(f"camera missing from {stem}_camera.json")
            rot, t = read_field(cam, "R", (3, 3), "camera"), read_field(cam, "t", (3,), "camera")
            focal, princpt = read_field(cam, "f", (2,), "camera"), read_field(cam, "c", (2,), "camera")
            try:
                world = array(joints[frame[0]][frame[1]][frame[2]], (17, 3), "3D joints")
            except (KeyError, TypeError):
                raise BadAnnotation(f"frame missing from {stem}_joint_3d.json") from None
            cam_mm = world @ rot.T + t
            if (cam_mm[:, 2] <= 0).any():
                raise BadAnnotation("a 3D joint lies behind the camera")
            uv = cam_mm[:, :2] / cam_mm[:, 2:] * focal + princpt
            joint_cam = (cam_mm - cam_mm[0]) / 1000.0  # root-relative metres (H36M joint 0 is the pelvis)
            ones = np.ones(len(H36M_JOINTS), np.float32)
            joint_img, joint_valid = map_joints(H36M_JOINTS, uv.astype(np.float32), ones)
            joint_cam65, cam_valid = map_joints(H36M_JOINTS, joint_cam.astype(np.float32), ones)
            bbox = self.person_box(read_field(ann, "bbox", (4,), "annotation"), img["width"], img["height"])
            record = Record(key=f"{data_path.name} annotation {get(ann, 'id', 'annotation')}",
                            img_path=require_image(self.root / "images" / img["file_name"]),
                            img_hw=(img["height"], img["width"]), bbox=bbox, joint_img=joint_img,
                            joint_valid=joint_valid, joint_cam=joint_cam65, joint_cam_valid=cam_valid)
            try:
                fit = fits[frame[0]][frame[1]][frame[2]]
            except (KeyError, TypeError):
                self.report.note("no NeuralAnnot SMPL-X fit", record.key)
                return record
            record.smplx = parse_neuralannot(fit, self.hands_mean, cam_rot=rot)
            record.smplx.pose_valid[list(UNSUPERVISED_POSE)] = 0
            return record

        return self.collect(annotations, parse, lambda a: annotation_key(data_path, a))
