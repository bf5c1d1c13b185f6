"""EHF (Pavlakos et al., CVPR 2019): 100 frames with SMPL-X meshes aligned to 3D scans; evaluation only.

root/                      (Hand4Whole: data/EHF/data)
  NN_img.jpg               1600 x 1200 RGB frame, NN = 01 .. 100
  NN_align.ply             the SMPL-X mesh fit to the scan, metres, world frame
  NN_2Djnt.json            OpenPose output: {"people": [{"pose_keypoints_2d": 25 x 3 (BODY_25),
                           "hand_left_keypoints_2d": 21 x 3, "hand_right_keypoints_2d": 21 x 3, ...}]}
  EHF.json                 optional: Hand4Whole's boxes (COCO format, body_bbox / lefthand_bbox / righthand_bbox /
                           face_bbox as x, y, w, h); without it the boxes come from the OpenPose joints
The camera is EHF_camera.txt's, fixed for all frames (EHF_CAMERA below).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from bidrn.body import joint_sets as js
from bidrn.body import load_body_model
from bidrn.models.ops import axis_angle_to_rotmat

from .base import (BadAnnotation, DatasetFormatError, RealDataset, Record, annotation_key, array, get, map_joints,
                   read_coco, read_json, read_ply_vertices, require_image, xywh_to_xyxy)
from .mscoco import COCO_HAND

# EHF_camera.txt: intrinsics in pixels, extrinsics world -> camera as a rotation vector and a translation in m.
EHF_CAMERA = {"focal": (1498.22426237, 1498.22426237), "princpt": (790.263706, 578.90334),
              "rotvec": (-2.98747896, 0.01172457, -0.05704687), "t": (-0.03609917, 0.43416458, 2.37101226)}
OPENPOSE_BODY25 = ("Nose", "Neck", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist",
                   "Pelvis", "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "R_Eye", "L_Eye",
                   "R_Ear", "L_Ear", "L_Big_toe", "L_Small_toe", "L_Heel", "R_Big_toe", "R_Small_toe", "R_Heel")
OPENPOSE_NAMES = (*OPENPOSE_BODY25, *(f"L_{n}" for n in COCO_HAND), *(f"R_{n}" for n in COCO_HAND))
WHOLE_BODY_IDX = [*js.BODY_JOINT_IDX, *js.LHAND_JOINT_IDX, *js.RHAND_JOINT_IDX]  # into the layer's joints


def keypoint_box(xy: np.ndarray, valid: np.ndarray, extend: float = 1.2) -> np.ndarray | None:
    """Hand4Whole's get_bbox: the valid points' extent grown 1.2x about its centre -> x, y, w, h."""
    pts = xy[valid > 0]
    if len(pts) < 2:
        return None
    lo, hi = pts.min(0), pts.max(0)
    centre, size = (lo + hi) / 2, (hi - lo) * extend
    return np.concatenate([centre - size / 2, size]).astype(np.float32)


def camera_rotation() -> np.ndarray:
    return axis_angle_to_rotmat(torch.tensor(EHF_CAMERA["rotvec"], dtype=torch.float64)).numpy()


class EHF(RealDataset):
    """EHF. Extra argument: ``body_model`` (an SMPLXLayer; default ``bidrn.body.load_body_model()``), whose
    regressor gives the pelvis and joints of each ground-truth mesh, so it must be the real 10,475-vertex SMPL-X.

    Yields the OpenPose 2D joints (25 body, 20 per hand), 3D joints regressed from the mesh, the part boxes and
    ``mesh_cam`` (V x 3, camera frame, pelvis-relative). No SMPL-X parameters.
    """

    splits = ("test",)

    def __init__(self, root, split="test", body_model=None, **kw):
        self.body_model = load_body_model() if body_model is None else body_model
        super().__init__(root, split, **kw)

    def build_index(self) -> list[Record]:
        boxes_path = self.root / "EHF.json"
        if boxes_path.is_file():
            images, annotations = read_coco(boxes_path)
            return self.collect(annotations, lambda a: self._frame(images.get(get(a, "image_id", "annotation")), a),
                                lambda a: annotation_key(boxes_path, a))
        frames = sorted(self.root.glob("*_img.jpg"))
        if not frames:
            raise DatasetFormatError(self.root, "no NN_img.jpg frames and no EHF.json (see docs/data.md)")
        return self.collect(frames, lambda p: self._frame(None, None, p), lambda p: p.name)

    def _frame(self, img: dict | None, ann: dict | None, img_path=None) -> Record:
        if ann is not None and img is None:
            raise BadAnnotation("image_id not among the file's images")
        img_path = require_image(self.root / img["file_name"] if img else img_path)
        frame = img_path.name.split("_")[0]
        if img:
            hw = (img["height"], img["width"])
        else:
            with Image.open(img_path) as im:  # reads the header only
                hw = (im.height, im.width)
        ply = self.root / f"{frame}_align.ply"
        if not ply.is_file():
            raise BadAnnotation("mesh file NN_align.ply missing")
        joint_img = joint_valid = None
        jnt_path = self.root / f"{frame}_2Djnt.json"
        if jnt_path.is_file():
            person = get(read_json(jnt_path), "people", jnt_path.name)
            if not person:
                raise BadAnnotation("2Djnt.json lists no person")
            kpts = np.concatenate([array(get(person[0], k, jnt_path.name), (n, 3), f"{jnt_path.name} {k}") for k, n in
                                   (("pose_keypoints_2d", 25), ("hand_left_keypoints_2d", 21),
                                    ("hand_right_keypoints_2d", 21))])
            joint_img, joint_valid = map_joints(OPENPOSE_NAMES, kpts[:, :2], (kpts[:, 2] > 0).astype(np.float32))
        elif ann is None:
            raise BadAnnotation("no 2Djnt.json to place the person box (and no EHF.json)")
        else:
            self.report.note("no 2Djnt.json (2D joints invalid)", img_path.name)
        if ann is not None:
            body = array(get(ann, "body_bbox", "annotation"), (4,), "body_bbox")
            parts = {p: xywh_to_xyxy(array(get(ann, f"{n}_bbox", "annotation"), (4,), f"{n}_bbox"))
                     for p, n in (("lhand", "lefthand"), ("rhand", "righthand"), ("face", "face"))}
        else:
            body = keypoint_box(joint_img, joint_valid)
            hands = {p: keypoint_box(kpts[s, :2], kpts[s, 2]) for p, s in (("lhand", slice(25, 46)),
                                                                          ("rhand", slice(46, 67)))}
            parts = {p: None if b is None else xywh_to_xyxy(b) for p, b in hands.items()}
        if body is None:
            raise BadAnnotation("fewer than 2 OpenPose joints to place the person box")
        bbox = self.person_box(body, hw[1], hw[0])
        return Record(key=img_path.name, img_path=img_path, img_hw=hw, bbox=bbox, joint_img=joint_img,
                      joint_valid=joint_valid, part_boxes=parts, extra={"ply": ply})

    def complete(self, record: Record) -> Record:
        ply = record.extra["ply"]
        world = read_ply_vertices(ply)
        if len(world) != self.body_model.num_vertices:
            raise DatasetFormatError(ply, f"has {len(world)} vertices but the body model ({self.body_model.path}) has "
                                          f"{self.body_model.num_vertices}: EHF meshes are SMPL-X meshes, so pass "
                                          "body_model=load_body_model('path/to/SMPLX_NEUTRAL.npz')")
        cam = world.astype(np.float64) @ camera_rotation().T + np.asarray(EHF_CAMERA["t"])
        with torch.no_grad():
            joints = self.body_model.regress_joints(torch.from_numpy(cam).float()[None])[0].numpy()
        pelvis = joints[js.PELVIS_IDX]
        return replace(record, joint_cam=(joints[WHOLE_BODY_IDX] - pelvis).astype(np.float32),
                       joint_cam_valid=np.ones(len(WHOLE_BODY_IDX), np.float32),
                       mesh_cam=(cam - pelvis).astype(np.float32))
