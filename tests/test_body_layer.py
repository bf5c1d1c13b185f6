"""The SMPL-X layer: parity with the smplx package, export, precision, joint sets, model-file handling."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from bidrn.body import SMPLXLayer, load_body_model
from bidrn.body.model_file import EMBEDDED_MODEL, load_array_pickle, ENV_VAR, MODEL_FILENAME, resolve_model_path
from bidrn.body.procedural import procedural_model_arrays, write_procedural_model
from bidrn.body.verify import TOLERANCE_M, check_parity, random_parameters

ASSETS = sorted((Path(__file__).parents[1] / "bidrn" / "body" / "assets").glob("*.npz"))


@pytest.fixture(scope="module")
def procedural_path(tmp_path_factory) -> Path:
    return write_procedural_model(tmp_path_factory.mktemp("model") / "procedural.npz")


@pytest.fixture(scope="module")
def layer(procedural_path) -> SMPLXLayer:
    return load_body_model(procedural_path)


def test_matches_smplx_on_the_procedural_model(layer):
    # The procedural model has non-zero pose correctives, which the shipped default lacks.
    report = check_parity(layer, batch=16, seed=1)
    assert report.max_vertex_error_m < TOLERANCE_M
    assert report.max_joint_error_m < TOLERANCE_M


@pytest.mark.parametrize("path", ASSETS, ids=[p.name for p in ASSETS])
def test_matches_smplx_on_every_shipped_model(path):
    report = check_parity(load_body_model(path), batch=4, seed=2)
    assert report.max_vertex_error_m < TOLERANCE_M
    assert report.max_joint_error_m < TOLERANCE_M


def test_rest_pose_is_the_template_and_its_regressed_joints(layer, procedural_path):
    arrays = np.load(procedural_path)
    out = layer()
    assert torch.allclose(out.vertices[0], torch.from_numpy(arrays["v_template"]), atol=1e-6)
    joints = arrays["J_regressor"].astype(np.float64) @ arrays["v_template"]
    assert torch.allclose(out.joints[0, :55], torch.from_numpy(joints).float(), atol=1e-6)


def test_output_shapes_follow_smplx_with_face_contour(layer):
    out = layer(**random_parameters(3, torch.Generator().manual_seed(0)))
    assert out.vertices.shape == (3, 330, 3)
    assert out.joints.shape == (3, 55 + 21 + 51 + 17, 3)
    assert layer.faces.shape == (55 * 8, 3) and layer.faces.dtype == torch.long


def test_translation_moves_vertices_and_joints_rigidly(layer):
    params = random_parameters(2, torch.Generator().manual_seed(3))
    shift = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    a = layer(**{**params, "transl": None})
    b = layer(**{**params, "transl": shift})
    assert torch.allclose(b.vertices - a.vertices, shift[:, None].expand_as(a.vertices), atol=1e-5)
    assert torch.allclose(b.joints - a.joints, shift[:, None].expand_as(a.joints), atol=1e-5)


def test_exports_with_torch_export_and_matches_eager(layer):
    params = random_parameters(2, torch.Generator().manual_seed(4))
    program = torch.export.export(layer, (), kwargs=params)
    exported, eager = program.module()(**params), layer(**params)
    assert torch.allclose(exported.vertices, eager.vertices, atol=1e-6)
    assert torch.allclose(exported.joints, eager.joints, atol=1e-6)


def test_float16_stays_within_two_millimetres_of_float32(procedural_path):
    params = random_parameters(2, torch.Generator().manual_seed(5))
    full = load_body_model(procedural_path)(**params)
    half = load_body_model(procedural_path).half()(**{k: v.half() for k, v in params.items()})
    assert half.vertices.dtype == torch.float16
    # float16 keeps 11 significant bits: about 0.5 mm at 1 m, a few roundings deep.
    assert (half.vertices.float() - full.vertices).norm(dim=-1).max() < 2e-3


def test_hand4whole_joint_sets_index_smplx_joints(layer):
    # Indices into smplx's joint output, as Hand4Whole's SMPLX.joint_idx lists them.
    body = [0, 1, 2, 4, 5, 7, 8, 12, 16, 17, 18, 19, 20, 21, 60, 61, 62, 63, 64, 65, 59, 58, 57, 56, 55]
    lhand = [37, 38, 39, 66, 25, 26, 27, 67, 28, 29, 30, 68, 34, 35, 36, 69, 31, 32, 33, 70]
    rhand = [52, 53, 54, 71, 40, 41, 42, 72, 43, 44, 45, 73, 49, 50, 51, 74, 46, 47, 48, 75]
    assert layer.body_joint_idx.tolist() == body
    assert layer.lhand_joint_idx.tolist() == lhand
    assert layer.rhand_joint_idx.tolist() == rhand
    assert len(layer.body_joint_names) == 25 and len(layer.hand_joint_names) == 20
    assert [layer.hand_joint_names[i] for i in layer.hand_mcp] == ["Index_1", "Middle_1", "Ring_1", "Pinky_1"]
    assert layer.hand_mcp == (4, 8, 12, 16)


def test_hand_and_face_vertex_sets_come_from_the_file(layer, procedural_path):
    arrays = np.load(procedural_path)
    for name in ("lhand", "rhand", "face"):
        assert getattr(layer, f"{name}_vertex_idx").tolist() == arrays[f"{name}_vertex_ids"].tolist()


def write_model(path: Path, **changes) -> Path:
    arrays = {k: v for k, v in procedural_model_arrays().items() if changes.get(k, 0) is not None}
    arrays.update({k: v for k, v in changes.items() if v is not None})
    np.savez(path, **arrays)
    return path


def test_missing_array_error_names_file_array_and_where_to_get_the_model(tmp_path):
    path = write_model(tmp_path / "broken.npz", posedirs=None)
    with pytest.raises(ValueError) as err:
        load_body_model(path)
    message = str(err.value)
    assert str(path) in message and "'posedirs'" in message and "smpl-x.is.tue.mpg.de" in message


def test_misshaped_array_error_gives_both_shapes(tmp_path):
    path = write_model(tmp_path / "broken.npz", weights=np.zeros((330, 54), np.float32))
    with pytest.raises(ValueError, match=r"'weights' has shape \(330, 54\), expected \(330, 55\)"):
        load_body_model(path)


def test_file_that_is_not_an_npz_is_reported(tmp_path):
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    path.write_text("not a model")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_body_model(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.npz")):
        load_body_model(tmp_path / "nope.npz")


def test_resolution_explicit_folder_then_env_then_model_folder_then_default(tmp_path, monkeypatch, procedural_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    write_procedural_model(explicit / MODEL_FILENAME)
    assert resolve_model_path(explicit) == explicit / MODEL_FILENAME
    assert resolve_model_path() == EMBEDDED_MODEL
    (tmp_path / "body_models").mkdir()
    write_procedural_model(tmp_path / "body_models" / MODEL_FILENAME)
    assert resolve_model_path() == Path("body_models") / MODEL_FILENAME
    monkeypatch.setenv(ENV_VAR, str(procedural_path))
    assert resolve_model_path() == procedural_path
    assert resolve_model_path(explicit) == explicit / MODEL_FILENAME


def test_array_pickle_loads_arrays_and_refuses_code(tmp_path):
    good = tmp_path / "MANO_SMPLX_vertex_ids.pkl"
    good.write_bytes(pickle.dumps({"left_hand": np.arange(3), "right_hand": np.arange(4)}))
    ids = load_array_pickle(good)
    assert ids["left_hand"].tolist() == [0, 1, 2] and len(ids["right_hand"]) == 4

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"left_hand": Evil()}))
    with pytest.raises(ValueError, match="only numpy arrays"):
        load_array_pickle(bad)
