"""The synthetic data engine: labels agree with the rendered image, samples follow from the seed, shards persist."""
import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bidrn.data.sample import BODY_SLICE, validate_sample
from bidrn.data.synth import ShardDataset, SyntheticWholeBody, generate, unbatch, write_shards
from bidrn.data.synth import shards as shards_module
from bidrn.data.synth.camera import project
from bidrn.data.synth.engine import default_body_model

SIZE = (256, 192)
SMALL = (128, 96)


def _share_of_differing_pixels(a, b, tol):
    """Batches of different sizes round the body model's matmuls differently (~1e-6 m), which can flip the depth
    test at the odd pixel where two surfaces touch; everything else is identical."""
    return float(((a - b).abs() > tol).float().mean())


@pytest.fixture(scope="module")
def batch():
    return generate(8, seed=11, input_size=SIZE, with_mesh=True, extras=True)


def test_sample_follows_from_seed_and_index_not_from_batching():
    whole = generate(4, seed=3, input_size=SMALL)
    tail = generate(2, seed=3, input_size=SMALL, start=2)
    for key in whole:
        if key != "img":
            assert torch.allclose(whole[key][2:], tail[key], atol=1e-4), key
    assert _share_of_differing_pixels(whole["img"][2:], tail["img"], 1e-3) < 1e-3
    other = generate(2, seed=4, input_size=SMALL, start=2)
    assert not torch.allclose(other["smplx_body_pose"], tail["smplx_body_pose"])


def test_every_sample_has_the_keys_and_shapes_of_the_sample_format():
    data = SyntheticWholeBody(SMALL, seed=0, length=5)
    assert len(data) == 5
    for i in range(len(data)):
        validate_sample(data[i], SMALL)
    for sample in data.__getitems__([4, 0]):  # the DataLoader's batched path
        validate_sample(sample, SMALL)
    assert 0.0 <= float(data[0]["img"].min()) and float(data[0]["img"].max()) <= 1.0


def test_projected_body_joints_in_the_image_fall_on_the_rendered_silhouette(batch):
    # Skeleton joints lie inside the body and vertex joints on its skin, so their projections must be covered;
    # one pixel of dilation absorbs anti-aliased edges.
    silhouette = F.max_pool2d((batch["mask"] > 0.25).float().unsqueeze(1), 3, stride=1, padding=1)[:, 0] > 0
    xy = batch["joint_img"][:, BODY_SLICE, :2].floor().long()
    valid = batch["joint_valid"][:, BODY_SLICE] > 0
    assert valid.float().mean() > 0.8  # the crops frame the person: most joints are in the image
    b, j = valid.nonzero(as_tuple=True)
    covered = silhouette[b, xy[b, j, 1], xy[b, j, 0]]
    assert covered.all(), f"{int((~covered).sum())} of {len(covered)} visible joints off the silhouette"


def test_hand_and_face_boxes_contain_their_projected_vertices(batch):
    layer = default_body_model()
    verts = batch["mesh_cam"] + batch["pelvis_cam"].unsqueeze(1)
    uv = project(verts, batch["focal"], batch["princpt"])
    for key, idx in (("lhand_bbox", layer.lhand_vertex_idx), ("rhand_bbox", layer.rhand_vertex_idx),
                     ("face_bbox", layer.face_vertex_idx)):
        box = batch[key].unsqueeze(1)
        inside = (uv[:, idx] >= box[..., :2] - 1e-3) & (uv[:, idx] <= box[..., 2:] + 1e-3)
        assert inside.all(), key
        size = box[..., 2:] - box[..., :2]
        assert torch.allclose(size[..., 0], size[..., 1], rtol=1e-4)  # square, as Hand4Whole's hand and face crops


def test_smplx_parameters_reproduce_the_camera_space_mesh(batch):
    layer = default_body_model()
    with torch.no_grad():
        out = layer(betas=batch["smplx_shape"], global_orient=batch["smplx_root_pose"], body_pose=batch["smplx_body_pose"],
                    left_hand_pose=batch["smplx_lhand_pose"], right_hand_pose=batch["smplx_rhand_pose"],
                    jaw_pose=batch["smplx_jaw_pose"], expression=batch["smplx_expr"])
    mesh = out.vertices - out.joints[:, :1]
    assert (mesh - batch["mesh_cam"]).abs().max() < 1e-4
    # Upright in the OpenCV camera: the head is above (smaller y than) the pelvis for standing archetypes and
    # nearly all random poses; the root pose carries SMPL-X's flip into the camera frame.
    head_y = batch["joint_cam"][:, 24, 1]  # the nose
    assert (head_y < 0).float().mean() >= 0.75


def test_shards_round_trip(tmp_path):
    write_shards(tmp_path, 5, seed=2, input_size=SMALL, shard_size=2, batch=3, progress=False)
    data = ShardDataset(tmp_path)
    assert len(data) == 5 and len(list(tmp_path.glob("shard-*.npz"))) == 3
    expected = unbatch(generate(5, seed=2, input_size=SMALL))
    for i in (0, 3, 4):
        sample = data[i]
        validate_sample(sample, SMALL)
        assert _share_of_differing_pixels(sample["img"], expected[i]["img"], 0.5 / 255 + 1e-6) < 1e-3  # 8-bit
        for key in ("joint_img", "smplx_body_pose", "lhand_bbox", "focal"):
            assert torch.allclose(sample[key], expected[i][key], atol=1e-4), key


def test_interrupted_write_leaves_only_whole_shards_and_resumes(tmp_path, monkeypatch):
    real_savez = np.savez_compressed
    calls = []

    def dies_mid_second_shard(f, **arrays):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a shard")
            raise KeyboardInterrupt
        real_savez(f, **arrays)

    monkeypatch.setattr(shards_module.np, "savez_compressed", dies_mid_second_shard)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path, 4, seed=1, input_size=SMALL, shard_size=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "shard-00000.npz"]
    assert len(ShardDataset(tmp_path)) == 2
    first = (tmp_path / "shard-00000.npz").stat().st_mtime_ns
    monkeypatch.setattr(shards_module.np, "savez_compressed", real_savez)
    write_shards(tmp_path, 4, seed=1, input_size=SMALL, shard_size=2, progress=False)
    assert len(ShardDataset(tmp_path)) == 4
    assert (tmp_path / "shard-00000.npz").stat().st_mtime_ns == first  # kept, not redone
    assert json.loads((tmp_path / "index.json").read_text())["num_samples"] == 4


def _data_command(argv):
    from bidrn.data import cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


def test_data_show_writes_a_png_grid(tmp_path):
    assert _data_command(["synth", "--out", str(tmp_path / "d"), "--n", "3", "--size", "128x96", "--quiet"]) == 0
    assert _data_command(["show", str(tmp_path / "d"), "--out", str(tmp_path / "grid.png"), "--cols", "2"]) == 0
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (2 * 96 * 2, 2 * 128 * 2)  # 2 columns x 2 rows of 2x-scaled samples


def test_data_show_rejects_a_folder_without_shards(tmp_path):
    with pytest.raises(ValueError, match="not a shard folder"):
        _data_command(["show", str(tmp_path)])
