"""Real-data loaders read fixtures written in each data set's exact on-disk format (docs/data.md).

Expected pixels are worked out by hand from Hand4Whole's crop: the person box is clipped (x2 = x1 + w - 1),
its short side grown to the input's W / H = 0.75, both sides scaled by 1.25, and the box centre mapped to
(W / 2, H / 2) of the input with scale W_in / w_box.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from bidrn.body import joint_sets as js
from bidrn.body import load_body_model
from bidrn.body.procedural import write_procedural_model
from bidrn.data.augment import WHOLE_BODY_JOINTS, AugmentConfig
from bidrn.data.real import AGORA, EHF, MPII, MSCOCO, DatasetFormatError, Human36M
from bidrn.data.sample import validate_sample

INPUT = (64, 48)  # H x W: small for speed, same 4:3 aspect as the model's 512 x 384
HANDS_MEAN = torch.stack([torch.full((45,), 0.1), torch.full((45,), -0.2)])
J = WHOLE_BODY_JOINTS.index


def write_jpeg(path, size, dots=(), colour=(255, 255, 255)):
    """A black W x H JPEG with 3 x 3 white squares centred on the given pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    for x, y in dots:
        draw.rectangle([x - 1, y - 1, x + 1, y + 1], fill=colour)
    img.save(path, quality=95)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def bright_centroid(img: torch.Tensor) -> tuple[float, float]:
    """(x, y) centroid of the pixels above half the peak brightness of a 3 x H x W image."""
    lum = img.sum(0)
    ys, xs = torch.nonzero(lum > lum.max() / 2, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


def neuralannot(seed: int, hands: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    p = {"root_pose": rng.normal(0, 0.3, 3).tolist(), "body_pose": rng.normal(0, 0.3, 63).tolist(),
         "shape": rng.normal(0, 0.5, 10).tolist(), "trans": [0.0, 0.0, 5.0],
         "jaw_pose": [0.1, 0.0, 0.0], "expr": rng.normal(0, 0.5, 10).tolist(), "face_valid": True}
    if hands:
        p.update(lhand_pose=rng.normal(0, 0.3, 45).tolist(), lhand_valid=True,
                 rhand_pose=rng.normal(0, 0.3, 45).tolist(), rhand_valid=False)
    return p


# ---------------------------------------------------------------- MSCOCO whole-body

# Person box x, y, w, h = 21, 11, 31, 41 in a 100 x 80 image: clipped to w = 30, h = 40 (w / h = 0.75 already),
# x1.25 -> 37.5 x 50 about the centre (36, 31); into 48 x 64 that is a scale of 1.28 and (36, 31) -> (24, 32).
COCO_BOX = [21, 11, 31, 41]
L_KNEE_PX, L_KNEE_IN = (46, 41), (24 + 10 * 1.28, 32 + 10 * 1.28)


def coco_keypoints():
    body = np.zeros((17, 3))
    body[13] = [*L_KNEE_PX, 2]  # COCO keypoint 13 is the left knee
    body[11], body[12] = [30, 30, 2], [40, 30, 1]  # hips: Hand4Whole puts the pelvis at their midpoint
    body[9] = [30, 45, 2]  # left wrist; the hand's own wrist point (unlabelled here) must not replace it
    lhand = np.zeros((21, 3))
    lhand[4] = [25, 35, 2]  # COCO hand keypoint 4 = thumb tip (Hand4Whole's Thumb_4)
    return body, lhand


def write_coco(root, n_people=2, fits=True):
    body, lhand = coco_keypoints()
    anns, images = [], []
    for i in range(n_people):
        images.append({"id": 10 + i, "file_name": f"{i:012d}.jpg", "width": 100, "height": 80})
        write_jpeg(root / "images" / "train2017" / f"{i:012d}.jpg", (100, 80), dots=[L_KNEE_PX])
        anns.append({"id": 100 + i, "image_id": 10 + i, "category_id": 1, "iscrowd": 0, "num_keypoints": 4,
                     "area": 1000.0, "bbox": COCO_BOX, "keypoints": body.reshape(-1).tolist(),
                     "foot_kpts": [0.0] * 18, "face_kpts": [0.0] * 204,
                     "lefthand_kpts": lhand.reshape(-1).tolist(), "righthand_kpts": [0.0] * 63,
                     "lefthand_box": [24, 33, 4, 4], "righthand_box": [0, 0, 0, 0], "face_box": [30, 12, 10, 10],
                     "lefthand_valid": True, "righthand_valid": False, "face_valid": True, "foot_valid": False})
    anns.append(dict(anns[0], id=199, iscrowd=1))
    write_json(root / "annotations" / "coco_wholebody_train_v1.0.json",
               {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]})
    if fits:
        write_json(root / "annotations" / "MSCOCO_train_SMPLX_all_NeuralAnnot.json",
                   {"100": {"smplx_param": neuralannot(0), "cam_param": {"focal": [500, 500], "princpt": [50, 40]}}})
    return root


def coco(root, **kw):
    return MSCOCO(root, input_size=INPUT, hands_mean=HANDS_MEAN, **kw)


def test_coco_sample_has_the_training_shapes(tmp_path):
    ds = coco(write_coco(tmp_path))
    assert len(ds) == 2
    for i in range(len(ds)):
        validate_sample(ds[i], INPUT)


def test_coco_joint_lands_at_the_hand_computed_crop_pixel(tmp_path):
    s = coco(write_coco(tmp_path))[0]
    assert s["joint_img"][J("L_Knee"), :2].tolist() == pytest.approx(L_KNEE_IN, abs=1e-4)
    assert s["joint_valid"][J("L_Knee")] == 1 and s["joint_valid"][J("Neck")] == 0  # COCO has no neck
    assert s["joint_img"][J("Pelvis"), :2].tolist() == pytest.approx((24 - 1 * 1.28, 32 - 1 * 1.28), abs=1e-4)
    assert s["joint_img"][J("L_Wrist"), :2].tolist() == pytest.approx((24 - 6 * 1.28, 32 + 14 * 1.28), abs=1e-4)
    assert s["joint_img"][J("L_Thumb_4"), :2].tolist() == pytest.approx((24 - 11 * 1.28, 32 + 4 * 1.28), abs=1e-4)


def test_coco_image_is_cropped_with_the_same_affine_as_the_joints(tmp_path):
    s = coco(write_coco(tmp_path))[0]
    x, y = bright_centroid(s["img"])
    assert abs(x - L_KNEE_IN[0]) < 0.5 and abs(y - L_KNEE_IN[1]) < 0.5


def test_coco_part_boxes_and_validity(tmp_path):
    s = coco(write_coco(tmp_path))[0]
    # left-hand box x 24..28, y 33..37 -> ((24 - 36) * 1.28 + 24, (33 - 31) * 1.28 + 32, ...)
    assert s["lhand_bbox"].tolist() == pytest.approx([8.64, 34.56, 13.76, 39.68], abs=1e-4)
    assert (s["lhand_bbox_valid"], s["rhand_bbox_valid"], s["face_bbox_valid"]) == (1, 0, 1)


def test_coco_neuralannot_params_with_hands_mean_added(tmp_path):
    ds = coco(write_coco(tmp_path))
    fitted, unfitted = ds[0], ds[1]
    p = neuralannot(0)
    assert fitted["smplx_root_pose"].tolist() == pytest.approx(p["root_pose"], abs=1e-6)
    assert fitted["smplx_lhand_pose"].numpy() == pytest.approx(np.array(p["lhand_pose"]) + 0.1, abs=1e-6)
    # rhand_valid is false: zero pose plus the mean, and its 15 joints unsupervised
    assert fitted["smplx_rhand_pose"].numpy() == pytest.approx(np.full(45, -0.2), abs=1e-6)
    assert fitted["smplx_pose_valid"][37:52].sum() == 0 and fitted["smplx_pose_valid"][:37].sum() == 37
    assert fitted["smplx_expr_valid"] == 1 and fitted["smplx_shape_valid"] == 1
    assert unfitted["smplx_pose_valid"].sum() == 0 and unfitted["smplx_shape_valid"] == 0
    assert ds.report.partial["no NeuralAnnot SMPL-X fit"] == 1


def test_coco_counts_crowd_missing_image_and_malformed_keypoints(tmp_path):
    write_coco(tmp_path, n_people=3)
    (tmp_path / "images" / "train2017" / f"{1:012d}.jpg").unlink()
    path = tmp_path / "annotations" / "coco_wholebody_train_v1.0.json"
    db = json.loads(path.read_text())
    db["annotations"][2]["keypoints"] = [1.0, 2.0]
    path.write_text(json.dumps(db))
    ds = coco(tmp_path)
    assert len(ds) == 1
    assert ds.skipped == {"crowd or no keypoints (Hand4Whole skips these)": 1, "image file missing": 1,
                          "keypoints has 2 numbers, expected 51 (17 x 3)": 1}
    assert "annotation 101" in str(ds.report)


def test_coco_missing_neuralannot_file_names_it(tmp_path):
    write_coco(tmp_path, fits=False)
    with pytest.raises(DatasetFormatError, match="MSCOCO_train_SMPLX_all_NeuralAnnot.json: file not found"):
        coco(tmp_path)


def test_coco_corrupt_json_names_the_file_and_reason(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "annotations" / "coco_wholebody_train_v1.0.json").write_text('{"images": [')
    with pytest.raises(DatasetFormatError, match="coco_wholebody_train_v1.0.json: not valid JSON"):
        coco(tmp_path)


def test_corrupt_image_is_skipped_and_counted_mid_epoch(tmp_path):
    write_coco(tmp_path)
    bad = tmp_path / "images" / "train2017" / f"{0:012d}.jpg"
    bad.write_bytes(b"not a jpeg")
    ds = coco(tmp_path)
    with pytest.warns(UserWarning, match="cannot decode image"):
        sample = ds[0]
    validate_sample(sample, INPUT)
    assert ds.skipped["cannot decode image"] == 1 and str(bad) in str(ds.report)
    ds[0]
    assert ds.skipped["cannot decode image"] == 1  # a bad file is counted once, not once per epoch


def test_corrupt_image_raises_with_the_file_name_when_asked(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "images" / "train2017" / f"{0:012d}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetFormatError, match=r"000000000000\.jpg: cannot decode image"):
        coco(tmp_path, on_bad_file="raise")[0]


def test_image_size_must_match_the_annotation(tmp_path):
    write_coco(tmp_path)
    write_jpeg(tmp_path / "images" / "train2017" / f"{0:012d}.jpg", (50, 40))
    with pytest.raises(DatasetFormatError, match="image is 50 x 40 .* annotation says 100 x 80"):
        coco(tmp_path, on_bad_file="raise")[0]


def test_augmented_samples_are_deterministic_per_seed_and_epoch(tmp_path):
    write_coco(tmp_path)
    a, b = (coco(tmp_path, augment=AugmentConfig(), seed=3) for _ in range(2))
    assert torch.equal(a[0]["img"], b[0]["img"]) and torch.equal(a[0]["joint_img"], b[0]["joint_img"])
    b.set_epoch(1)
    assert not torch.equal(a[0]["joint_img"], b[0]["joint_img"])
    validate_sample(b[0], INPUT)


# ---------------------------------------------------------------- MPII


def write_mpii(root):
    kpts = np.zeros((16, 3))
    kpts[0] = [*L_KNEE_PX, 1]  # MPII keypoint 0 is the right ankle
    kpts[9] = [40, 15, 1]  # head top: not one of the 65 joints
    images = [{"id": 1, "file_name": "000001163.jpg", "width": 100, "height": 80}]
    write_jpeg(root / "data" / "images" / "000001163.jpg", (100, 80), dots=[L_KNEE_PX])
    anns = [{"id": 7, "image_id": 1, "bbox": COCO_BOX, "keypoints": kpts.reshape(-1).tolist(), "num_keypoints": 2},
            {"id": 8, "image_id": 1, "bbox": [200, 200, 10, 10], "keypoints": kpts.reshape(-1).tolist()}]
    write_json(root / "data" / "annotations" / "train.json", {"images": images, "annotations": anns})
    write_json(root / "data" / "annotations" / "MPII_train_SMPLX_NeuralAnnot.json",
               {"7": {"smplx_param": neuralannot(1, hands=False), "cam_param": {"focal": [1, 1], "princpt": [0, 0]}}})
    return root


def test_mpii_reads_its_joints_and_fit(tmp_path):
    ds = MPII(write_mpii(tmp_path), input_size=INPUT, hands_mean=HANDS_MEAN)
    s = ds[0]
    validate_sample(s, INPUT)
    assert s["joint_img"][J("R_Ankle"), :2].tolist() == pytest.approx(L_KNEE_IN, abs=1e-4)
    assert s["joint_valid"].sum() == 1
    assert ds.skipped == {"person box has no area inside the image": 1}
    # Hand4Whole leaves ankles and wrists (SMPL-X joints 7, 8, 20, 21) and the absent hands unsupervised
    valid = s["smplx_pose_valid"]
    assert valid[[7, 8, 20, 21]].sum() == 0 and valid[22:52].sum() == 0 and valid.sum() == 53 - 4 - 30


# ---------------------------------------------------------------- Human3.6M

# Camera: R = rotation by +90 deg about z, t = (0, 0, 5000) mm, f = 100, c = (40, 30). The pelvis at the world
# origin projects to (40, 30); world (500, 250, 0) mm -> camera (-250, 500, 5000) -> pixel (35, 40).
H36M_R = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def write_h36m(root, frames=(0, 3, 5)):
    world = np.zeros((17, 3))
    world[4] = [500, 250, 0]  # H36M joint 4 is the left hip
    images, anns = [], []
    joints, fits = {"2": {"1": {}}}, {"2": {"1": {}}}
    for k, frame in enumerate(frames):
        name = f"s_01_act_02_subact_01_ca_01/frame_{frame:06d}.jpg"
        images.append({"id": k, "file_name": name, "width": 80, "height": 60, "subject": 1, "action_idx": 2,
                       "subaction_idx": 1, "cam_idx": 1, "frame_idx": frame})
        anns.append({"id": k, "image_id": k, "bbox": [20, 10, 30, 40]})
        write_jpeg(root / "images" / name, (80, 60))
        joints["2"]["1"][str(frame)] = world.tolist()
        fits["2"]["1"][str(frame)] = dict(neuralannot(2, hands=False), root_pose=[0.0, 0.0, 0.0])
    ann = root / "annotations"
    write_json(ann / "Human36M_subject1_data.json", {"images": images, "annotations": anns})
    write_json(ann / "Human36M_subject1_camera.json",
               {"1": {"R": H36M_R, "t": [0, 0, 5000], "f": [100, 100], "c": [40, 30]}})
    write_json(ann / "Human36M_subject1_joint_3d.json", joints)
    write_json(ann / "Human36M_subject1_SMPLX_NeuralAnnot.json", fits)
    return root


def h36m(root, **kw):
    return Human36M(root, subjects=(1,), input_size=INPUT, hands_mean=HANDS_MEAN, **kw)


def test_h36m_keeps_every_fifth_frame_and_projects_3d_joints(tmp_path):
    ds = h36m(write_h36m(tmp_path))
    assert len(ds) == 2 and ds.skipped == {}  # frame 3 is dropped by the sampling ratio, not skipped
    s = ds[0]
    validate_sample(s, INPUT)
    # box 20, 10, 30, 40 -> centre (34.5, 29.5), 36.25 x 48.33 after 1.25 (h = 39 - clip, w = 0.75 h)
    scale = 64 / (39 * 1.25)
    assert s["joint_img"][J("L_Hip"), :2].tolist() == pytest.approx(
        (24 + (35 - 34.5) * scale, 32 + (40 - 29.5) * scale), abs=1e-4)
    assert s["joint_cam"][J("L_Hip")].tolist() == pytest.approx([-0.25, 0.5, 0.0], abs=1e-6)
    assert s["joint_cam_valid"].sum() == 14 and s["joint_valid"].sum() == 14


def test_h36m_root_pose_is_turned_into_the_camera_frame(tmp_path):
    s = h36m(write_h36m(tmp_path))[0]
    assert s["smplx_root_pose"].tolist() == pytest.approx([0.0, 0.0, math.pi / 2], abs=1e-5)


def test_h36m_missing_frame_is_counted(tmp_path):
    write_h36m(tmp_path)
    path = tmp_path / "annotations" / "Human36M_subject1_joint_3d.json"
    joints = json.loads(path.read_text())
    del joints["2"]["1"]["5"]
    path.write_text(json.dumps(joints))
    ds = h36m(tmp_path)
    assert len(ds) == 1 and ds.skipped == {"frame missing from Human36M_subject1_joint_3d.json": 1}


def test_h36m_missing_subject_file_names_it(tmp_path):
    write_h36m(tmp_path)
    with pytest.raises(DatasetFormatError, match="Human36M_subject5_data.json: file not found"):
        Human36M(tmp_path, subjects=(1, 5), input_size=INPUT, hands_mean=HANDS_MEAN)


# ---------------------------------------------------------------- EHF


@pytest.fixture(scope="module")
def procedural_layer(tmp_path_factory):
    return load_body_model(write_procedural_model(tmp_path_factory.mktemp("model") / "procedural.npz"))


def write_ply(path, verts, binary=True):
    faces = [[0, 1, 2]]
    fmt = "binary_little_endian" if binary else "ascii"
    header = (f"ply\nformat {fmt} 1.0\nelement vertex {len(verts)}\nproperty float x\nproperty float y\n"
              f"property float z\nelement face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    if binary:
        body = np.asarray(verts, "<f4").tobytes() + b"".join(
            np.uint8(3).tobytes() + np.asarray(f, "<i4").tobytes() for f in faces)
        path.write_bytes(header.encode() + body)
    else:
        lines = [" ".join(f"{v:.6f}" for v in row) for row in verts] + ["3 0 1 2"]
        path.write_text(header + "\n".join(lines) + "\n")


def write_ehf(root, layer):
    pose = np.zeros((25, 3))
    pose[8] = [60, 50, 0.9]  # BODY_25 keypoint 8 is the mid-hip (Hand4Whole's pelvis)
    pose[4] = [40, 20, 0.8]  # right wrist
    pose[11], pose[14] = [55, 90, 0.7], [65, 90, 0.7]  # ankles
    verts = layer.v_template.numpy()
    for k, binary in (("01", True), ("02", False)):
        write_jpeg(root / f"{k}_img.jpg", (120, 100))
        write_ply(root / f"{k}_align.ply", verts, binary=binary)
        write_json(root / f"{k}_2Djnt.json", {"version": 1.2, "people": [{
            "pose_keypoints_2d": pose.reshape(-1).tolist(), "face_keypoints_2d": [0.0] * 210,
            "hand_left_keypoints_2d": [0.0] * 63, "hand_right_keypoints_2d": [0.0] * 63}]})
    return root


def test_ehf_yields_pelvis_relative_camera_frame_mesh(tmp_path, procedural_layer):
    from bidrn.models.ops import axis_angle_to_rotmat
    ds = EHF(write_ehf(tmp_path, procedural_layer), input_size=INPUT, body_model=procedural_layer)
    assert len(ds) == 2
    for i in range(2):
        s = ds[i]
        validate_sample(s, INPUT)
        assert s["mesh_cam"].shape == (procedural_layer.num_vertices, 3)
        pelvis = procedural_layer.regress_joints(s["mesh_cam"][None])[0, js.PELVIS_IDX]
        assert pelvis.abs().max() < 1e-5
        # EHF_camera.txt's rotation turns the world-frame mesh: differences between vertices turn with it
        rot = axis_angle_to_rotmat(torch.tensor([-2.98747896, 0.01172457, -0.05704687]))
        world = procedural_layer.v_template
        assert torch.allclose(s["mesh_cam"][5] - s["mesh_cam"][0], rot @ (world[5] - world[0]), atol=1e-5)
        assert s["joint_valid"][J("Pelvis")] == 1 and s["joint_valid"][J("R_Wrist")] == 1
        assert s["joint_valid"].sum() == 4


def test_ehf_rejects_a_mesh_that_is_not_the_body_models(tmp_path, procedural_layer):
    write_ehf(tmp_path, procedural_layer)
    write_ply(tmp_path / "01_align.ply", np.zeros((7, 3)))
    with pytest.raises(DatasetFormatError, match="01_align.ply: has 7 vertices but the body model"):
        EHF(tmp_path, input_size=INPUT, body_model=procedural_layer, on_bad_file="raise")[0]


def test_ehf_truncated_ply_names_the_file(tmp_path, procedural_layer):
    write_ehf(tmp_path, procedural_layer)
    ply = tmp_path / "01_align.ply"
    ply.write_bytes(ply.read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match="01_align.ply: PLY vertex data is truncated"):
        EHF(tmp_path, input_size=INPUT, body_model=procedural_layer, on_bad_file="raise")[0]


# ---------------------------------------------------------------- AGORA

# 4K box 1800, 900, 240, 360 -> 1280 x 720: 600, 300, 80, 120; clipped to 79 x 119 about (639.5, 359.5);
# widened to 0.75 * 119 = 89.25, x1.25 -> 111.5625 x 148.75, so the scale into 48 x 64 is 64 / 148.75.
AGORA_SCALE = 64 / 148.75


def write_agora(root, layer, param_suffix=".json"):
    pelvis_rest = layer(betas=torch.zeros(1, 10)).joints[0, js.PELVIS_IDX].numpy()
    params = {"global_orient": [0.0] * 3, "body_pose": [0.0] * 63, "left_hand_pose": [0.05] * 45,
              "right_hand_pose": [0.0] * 45, "jaw_pose": [0.0] * 3, "leye_pose": [0.0] * 3, "reye_pose": [0.0] * 3,
              "betas": [0.0] * 10, "expression": [0.0] * 10,
              "transl": (np.array([0.0, 0.0, 10.0]) - pelvis_rest).tolist()}  # pelvis on the optical axis, 10 m
    img_name = "ag_trainset_renderpeople_bfh_archviz_5_10_cam02_00001"
    write_jpeg(root / "images_1280x720" / "validation" / f"{img_name}_1280x720.png", (1280, 720))
    param_rel = f"smplx_params_cam/validation/{img_name}/0{param_suffix}"
    if param_suffix == ".json":
        write_json(root / param_rel, params)
    write_json(root / "cam_params" / "validation" / f"{img_name}.json",
               {"focal": [4000, 4000], "princpt": [1920, 1080]})
    ann = {"id": 0, "image_id": 0, "person_id": 0, "smplx_param_path": param_rel,
           "cam_param_path": f"cam_params/validation/{img_name}.json", "gender": "neutral", "kid": False,
           "occlusion": 0.0, "is_valid": True, "age": "31-50", "ethnicity": "white",
           "bbox": [1800, 900, 240, 360], "lhand_bbox": [1830, 1050, 30, 30], "rhand_bbox": [1980, 1050, 30, 30],
           "face_bbox": [1900, 900, 40, 50]}
    write_json(root / "AGORA_validation_SMPLX.json", {
        "images": [{"id": 0, "file_name_3840x2160": f"images_3840x2160/validation/{img_name}.png",
                    "file_name_1280x720": f"images_1280x720/validation/{img_name}_1280x720.png"}],
        "annotations": [ann, dict(ann, id=1, is_valid=False)]})
    return root


def test_agora_poses_the_body_model_and_projects_its_joints(tmp_path, procedural_layer):
    ds = AGORA(write_agora(tmp_path, procedural_layer), input_size=INPUT, body_model=procedural_layer,
               hands_mean=HANDS_MEAN)
    assert len(ds) == 1 and ds.skipped == {"marked is_valid = false by AGORA": 1}
    s = ds[0]
    validate_sample(s, INPUT)
    # the pelvis sits on the optical axis: 4K pixel (1920, 1080) -> 720p (640, 360) -> crop
    expected = (24 + (640 - 639.5) * AGORA_SCALE, 32 + (360 - 359.5) * AGORA_SCALE)
    assert s["joint_img"][J("Pelvis"), :2].tolist() == pytest.approx(expected, abs=1e-3)
    assert s["joint_cam"][J("Pelvis")].abs().max() < 1e-6
    assert s["mesh_cam"].shape == (procedural_layer.num_vertices, 3)
    assert s["smplx_lhand_pose"].numpy() == pytest.approx(np.full(45, 0.15), abs=1e-6)
    assert s["smplx_pose_valid"].sum() == 53 and s["lhand_bbox_valid"] == 1


def test_agora_refuses_pickles_and_says_how_to_convert(tmp_path, procedural_layer):
    write_agora(tmp_path, procedural_layer, param_suffix=".pkl")
    with pytest.raises(DatasetFormatError, match=r"0\.pkl: is a pickle.*json\.dump"):
        AGORA(tmp_path, input_size=INPUT, body_model=procedural_layer, hands_mean=HANDS_MEAN)


def test_agora_reads_npz_parameters(tmp_path, procedural_layer):
    write_agora(tmp_path, procedural_layer)
    root = tmp_path / "smplx_params_cam" / "validation"
    (json_path,) = root.glob("*/0.json")
    np.savez(json_path.with_suffix(".npz"), **{k: np.asarray(v) for k, v in json.loads(json_path.read_text()).items()})
    path = tmp_path / "AGORA_validation_SMPLX.json"
    db = json.loads(path.read_text())
    db["annotations"][0]["smplx_param_path"] = db["annotations"][0]["smplx_param_path"].replace(".json", ".npz")
    path.write_text(json.dumps(db))
    s = AGORA(tmp_path, input_size=INPUT, body_model=procedural_layer, hands_mean=HANDS_MEAN)[0]
    assert s["joint_cam"][J("Pelvis")].abs().max() < 1e-6
