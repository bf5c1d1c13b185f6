"""What every real-data loader shares: file reading with errors that name the file, the index of annotations
with counted skips, Hand4Whole's person crop, and the record -> sample step (``bidrn.data.sample`` format).

A loader builds a list of ``Record`` (one person each) when it is constructed. An annotation that cannot be used
is left out and counted by reason in ``dataset.skipped``; one that is usable but lacks some targets (no SMPL-X
fit, say) is kept and counted in ``dataset.report.partial``. A missing or unreadable annotation *file* stops
construction with a ``DatasetFormatError`` naming it. An image that turns out to be unreadable while training is
replaced by the next good sample and counted (``on_bad_file="skip"``), or raises (``"raise"``): an epoch never
dies halfway. No loader ever unpickles anything.
"""
from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from PIL import Image

from bidrn.models.ops import axis_angle_to_rotmat, rotmat_to_axis_angle

from ..augment import (AugmentConfig, AugmentParams, crop_affine, draw_params, flip_sample, jitter_color,
                       rotate_3d, transform_2d, warp_image, WHOLE_BODY_JOINTS)
from ..sample import NUM_JOINTS, empty_sample

INPUT_SIZE = (512, 384)  # H x W, ModelConfig.input_size
BBOX_EXTENSION = 1.25  # Hand4Whole's process_bbox
# Hand4Whole's virtual camera: focal 5000 px and the centre of the 256 x 192 body input, scaled to input pixels.
VIRTUAL_FOCAL, VIRTUAL_INPUT = (5000.0, 5000.0), (256, 192)
PICKLE_HINT = ("Pickle files are never loaded (unpickling runs arbitrary code). Convert once, in an environment "
               "you trust: python -c \"import pickle, json, numpy as np; d = pickle.load(open('IN.pkl', 'rb'), "
               "encoding='latin1'); json.dump({k: np.asarray(v).tolist() for k, v in d.items() "
               "if np.asarray(v).dtype.kind in 'fiub'}, open('OUT.json', 'w'))\" (see docs/data.md).")


class DatasetFormatError(ValueError):
    """A data file is missing or not in the expected format. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


class BadAnnotation(Exception):
    """One annotation cannot be used; the index counts it under ``reason`` and goes on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SkipReport:
    """Annotations left out (``skipped``) or kept with some targets missing (``partial``), counted by reason,
    with up to ``max_examples`` example ids per reason so a user can find them."""

    max_examples = 3

    def __init__(self):
        self.skipped: Counter[str] = Counter()
        self.partial: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = defaultdict(list)

    def _add(self, counter: Counter, reason: str, where: str) -> None:
        counter[reason] += 1
        if len(self.examples[reason]) < self.max_examples:
            self.examples[reason].append(where)

    def skip(self, reason: str, where: str) -> None:
        self._add(self.skipped, reason, where)

    def note(self, reason: str, where: str) -> None:
        self._add(self.partial, reason, where)

    def __str__(self) -> str:
        lines = []
        for title, counter in (("skipped", self.skipped), ("kept without some targets", self.partial)):
            for reason, n in counter.most_common():
                lines.append(f"{title}: {n} x {reason} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines) or "nothing skipped"


# ---------------------------------------------------------------- reading files


def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises DatasetFormatError naming it."""
    if path.suffix == ".pkl":
        raise DatasetFormatError(path, f"is a pickle. {PICKLE_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetFormatError(path, "file not found (see docs/data.md for the expected layout)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetFormatError(path, f"not valid JSON ({exc})") from None


def read_coco(path: Path) -> tuple[dict[int, dict], list[dict]]:
    """A COCO-style annotation file (the layout every Hand4Whole data set uses): images by id, annotations."""
    db = read_json(path)
    try:
        return {img["id"]: img for img in db["images"]}, db["annotations"]
    except (TypeError, KeyError) as exc:
        raise DatasetFormatError(path, f"not a COCO annotation file (missing {exc})") from None


def read_param_file(path: Path) -> dict[str, Any]:
    """A parameter file as a dict of arrays: .json (Hand4Whole's) or .npz (read with allow_pickle=False)."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise DatasetFormatError(path, "file not found") from None
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(path, f"not a readable .npz of plain arrays ({exc})") from None
    params = read_json(path)
    if not isinstance(params, dict):
        raise DatasetFormatError(path, f"expected a JSON object of named parameters, got {type(params).__name__}")
    return params


def annotation_key(path: Path, ann: Any) -> str:
    """'file annotation id' for reports; tolerant of annotations too broken to have an id."""
    return f"{path.name} annotation {ann.get('id', '?') if isinstance(ann, dict) else '?'}"


def load_image(path: Path, expected_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode an image with Pillow -> 3 x H x W uint8 RGB. EXIF orientation is ignored, as Hand4Whole's
    cv2.IMREAD_IGNORE_ORIENTATION does, because annotations refer to the stored pixel grid."""
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DatasetFormatError(path, "image file not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(path, f"cannot decode image ({exc})") from None
    if expected_hw is not None and rgb.shape[:2] != tuple(expected_hw):
        raise DatasetFormatError(path, f"image is {rgb.shape[1]} x {rgb.shape[0]} (W x H) but the annotation says "
                                       f"{expected_hw[1]} x {expected_hw[0]}")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def read_ply_vertices(path: Path) -> np.ndarray:
    """The x, y, z of a PLY file's vertex element -> V x 3 float32 (ascii or binary; no plyfile needed)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(path, "mesh file not found") from None
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DatasetFormatError(path, "not a PLY file (expected a 'ply' ... 'end_header' header)")
    body_start = raw.index(b"\n", end) + 1
    fmt, elements = None, []  # elements: [name, count, [(prop, dtype) or (prop, None) for lists]]
    for line in raw[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            elements.append([words[1], int(words[2]), []])
        elif words[:1] == ["property"] and elements:
            elements[-1][2].append((words[-1], None if words[1] == "list" else _PLY_TYPES.get(words[1])))
    names = [e[0] for e in elements]
    if "vertex" not in names:
        raise DatasetFormatError(path, "PLY file has no 'vertex' element")
    props = dict(elements[names.index("vertex")][2])
    if not {"x", "y", "z"} <= props.keys():
        raise DatasetFormatError(path, "PLY vertex element lacks x, y, z properties")
    count = elements[names.index("vertex")][1]
    try:
        if fmt == "ascii":
            lines = raw[body_start:].decode("ascii").split("\n")
            offset = sum(e[1] for e in elements[:names.index("vertex")])
            table = np.array([ln.split() for ln in lines[offset:offset + count]], dtype=np.float64)
            cols = [p for p, _ in elements[names.index("vertex")][2]]
            return table[:, [cols.index(a) for a in "xyz"]].astype(np.float32)
        if fmt not in ("binary_little_endian", "binary_big_endian"):
            raise DatasetFormatError(path, f"unsupported PLY format {fmt!r}")
        before = elements[:names.index("vertex")]
        if any(t is None for e in before for _, t in e[2]):
            raise DatasetFormatError(path, "a list element precedes the vertices; re-save the PLY with vertices first")
        endian = "<" if fmt == "binary_little_endian" else ">"
        row = np.dtype([(p, endian + t) for p, t in elements[names.index("vertex")][2]])
        skip = sum(e[1] * np.dtype([(p, endian + t) for p, t in e[2]]).itemsize for e in before)
        table = np.frombuffer(raw, dtype=row, count=count, offset=body_start + skip)
        return np.stack([table[a] for a in "xyz"], axis=1).astype(np.float32)
    except (ValueError, IndexError, TypeError) as exc:
        raise DatasetFormatError(path, f"PLY vertex data is truncated or malformed ({exc})") from None


def smplx_hands_mean(model_path: str | Path | None = None) -> torch.Tensor:
    """SMPL-X's mean hand pose, 2 x 45 (left, right), read from the body-model file the project resolves.

    NeuralAnnot and AGORA hand poses are relative to it (they were fit with smplx's flat_hand_mean=False);
    adding it gives the flat-hand-mean poses the sample format uses. Files without it (the embedded default)
    give zeros.
    """
    from bidrn.body import resolve_model_path

    path = resolve_model_path(model_path)
    with np.load(path, allow_pickle=False) as npz:
        if {"hands_meanl", "hands_meanr"} <= set(npz.files):
            return torch.from_numpy(np.stack([npz["hands_meanl"], npz["hands_meanr"]]).astype(np.float32))
    return torch.zeros(2, 45)


# ---------------------------------------------------------------- annotation fields


def array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A JSON value as a float32 array of exactly ``shape`` (reshaped when the sizes match), else BadAnnotation."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadAnnotation(f"{what} is not numeric") from None
    if arr.size != int(np.prod(shape)):
        size = int(np.prod(shape))
        raise BadAnnotation(f"{what} has {arr.size} numbers, expected {size} ({' x '.join(map(str, shape))})")
    if not np.isfinite(arr).all():
        raise BadAnnotation(f"{what} holds NaN or inf")
    return arr.reshape(shape)


def get(mapping: Any, key: str, what: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise BadAnnotation(f"{what} has no '{key}'")
    return mapping[key]


def read_field(mapping: Any, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """mapping[key] as a float32 array of ``shape``; BadAnnotation naming ``what`` and the key otherwise."""
    return array(get(mapping, key, what), shape, f"{what} {key}")


def xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    return np.concatenate([box[:2], box[:2] + box[2:]]).astype(np.float32)


def process_bbox(xywh: np.ndarray, img_w: int, img_h: int, aspect: float = INPUT_SIZE[1] / INPUT_SIZE[0],
                 extension: float = BBOX_EXTENSION) -> np.ndarray | None:
    """Hand4Whole's person box: clip to the image, grow the short side to the input's W / H, scale by 1.25 about
    the centre. xywh -> xywh, or None for a box with no area inside the image."""
    x, y, w, h = (float(v) for v in xywh)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(img_w - 1.0, x1 + max(0.0, w - 1.0)), min(img_h - 1.0, y1 + max(0.0, h - 1.0))
    if w * h <= 0 or x2 <= x1 or y2 <= y1:
        return None
    w, h = x2 - x1, y2 - y1
    cx, cy = x1 + w / 2, y1 + h / 2
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    w, h = w * extension, h * extension
    return np.array([cx - w / 2, cy - h / 2, w, h], dtype=np.float32)


def map_joints(names: Iterable[str], coords: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A data set's joints (named as Hand4Whole names them) -> the sample's 65; joints it lacks are invalid.

    coords: N x C, valid: N -> 65 x C, 65.
    """
    out = np.zeros((NUM_JOINTS, coords.shape[1]), np.float32)
    out_valid = np.zeros(NUM_JOINTS, np.float32)
    for i, name in enumerate(names):
        if name in WHOLE_BODY_JOINTS:
            j = WHOLE_BODY_JOINTS.index(name)
            out[j], out_valid[j] = coords[i], valid[i]
    return out, out_valid


# ---------------------------------------------------------------- SMPL-X targets


@dataclass
class SMPLXTarget:
    """SMPL-X parameters in the camera frame, flat-hand-mean hand poses (the sample's convention)."""

    root_pose: np.ndarray  # 3
    body_pose: np.ndarray  # 63
    lhand_pose: np.ndarray  # 45
    rhand_pose: np.ndarray  # 45
    jaw_pose: np.ndarray  # 3
    shape: np.ndarray  # 10
    expr: np.ndarray  # 10
    pose_valid: np.ndarray  # 53
    expr_valid: float
    trans: np.ndarray  # 3, camera frame (used by loaders that pose the body model)


def parse_neuralannot(param: Any, hands_mean: torch.Tensor, cam_rot: np.ndarray | None = None,
                      what: str = "SMPL-X parameters") -> SMPLXTarget:
    """Hand4Whole's SMPL-X parameter dict (root_pose, body_pose, shape, trans and optionally lhand_pose +
    lhand_valid, rhand_pose + rhand_valid, jaw_pose + expr + face_valid) -> SMPLXTarget.

    cam_rot (3 x 3) turns a world-frame root into the camera frame (Human3.6M). Parts a fit lacks are zero and
    invalid, as in Hand4Whole's process_human_model_output. Betas beyond +-3 are replaced by the mean shape.
    """
    valid = np.ones(53, np.float32)
    root = array(get(param, "root_pose", what), (3,), f"{what} root_pose")
    if cam_rot is not None:
        rot = torch.from_numpy(cam_rot.astype(np.float32)) @ axis_angle_to_rotmat(torch.from_numpy(root))
        root = rotmat_to_axis_angle(rot).numpy()
    shape = array(get(param, "shape", what), (10,), f"{what} shape")
    if np.abs(shape).max() > 3:
        shape = np.zeros(10, np.float32)

    def part(pose_key: str, valid_key: str, size: int, joints: slice) -> np.ndarray:
        if pose_key in param and param.get(valid_key, True):
            return array(param[pose_key], (size,), f"{what} {pose_key}")
        valid[joints] = 0
        return np.zeros(size, np.float32)

    lhand = part("lhand_pose", "lhand_valid", 45, slice(22, 37)) + hands_mean[0].numpy()
    rhand = part("rhand_pose", "rhand_valid", 45, slice(37, 52)) + hands_mean[1].numpy()
    has_face = "expr" in param and bool(param.get("face_valid", True))
    jaw = part("jaw_pose", "face_valid", 3, slice(52, 53)) if has_face else np.zeros(3, np.float32)
    expr = read_field(param, "expr", (10,), what) if has_face else np.zeros(10, np.float32)
    valid[52] *= has_face
    return SMPLXTarget(
        root_pose=root, body_pose=array(get(param, "body_pose", what), (63,), f"{what} body_pose"),
        lhand_pose=lhand, rhand_pose=rhand, jaw_pose=jaw, shape=shape, expr=expr, pose_valid=valid,
        expr_valid=float(has_face), trans=array(param.get("trans", [0, 0, 0]), (3,), f"{what} trans"),
    )


# ---------------------------------------------------------------- records and the dataset


@dataclass
class Record:
    """One person of one image, in source-image pixels, before cropping."""

    key: str  # how a user finds the annotation (file and id), used in reports and errors
    img_path: Path
    img_hw: tuple[int, int]
    bbox: np.ndarray  # 4, processed person box x, y, w, h
    joint_img: np.ndarray | None = None  # 65 x 2, source pixels
    joint_valid: np.ndarray | None = None  # 65
    joint_cam: np.ndarray | None = None  # 65 x 3, camera frame, pelvis-relative, metres
    joint_cam_valid: np.ndarray | None = None  # 65
    smplx: SMPLXTarget | None = None
    part_boxes: dict[str, np.ndarray | None] = field(default_factory=dict)  # lhand/rhand/face -> xyxy
    mesh_cam: np.ndarray | None = None  # V x 3, pelvis-relative (evaluation sets)
    extra: dict[str, Any] = field(default_factory=dict)  # what a loader needs to finish the record lazily


class RealDataset(torch.utils.data.Dataset):
    """Base of the real-data loaders: index at construction, crop + augment + sample in ``__getitem__``.

    Arguments shared by every loader: ``root`` (the data set's folder, laid out as docs/data.md shows),
    ``split``, ``input_size`` (H, W), ``augment`` (an AugmentConfig for training, None for evaluation),
    ``seed`` (augmentation is a function of seed, epoch and index), ``on_bad_file`` ("skip" or "raise").
    Each item is a dict in the ``bidrn.data.sample`` format.
    """

    splits: tuple[str, ...] = ("train",)

    def __init__(self, root: str | Path, split: str = "train", input_size: tuple[int, int] = INPUT_SIZE,
                 augment: AugmentConfig | None = None, seed: int = 0, on_bad_file: str = "skip"):
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: split must be one of {self.splits}, got {split!r}")
        if on_bad_file not in ("skip", "raise"):
            raise ValueError(f"on_bad_file must be 'skip' or 'raise', got {on_bad_file!r}")
        self.root, self.split, self.input_size = Path(root), split, tuple(input_size)
        self.augment, self.seed, self.epoch, self.on_bad_file = augment, seed, 0, on_bad_file
        self.report = SkipReport()
        self.bad_records: set[int] = set()  # indices whose files failed while loading
        self.records = self.build_index()
        if not self.records:
            raise DatasetFormatError(self.root, f"no usable {type(self).__name__} annotations for split "
                                                f"{split!r}:\n{self.report}")

    # ---- what a loader implements
    def build_index(self) -> list[Record]:
        raise NotImplementedError

    def complete(self, record: Record) -> Record:
        """Read what the index left on disk (parameter files, meshes); may raise DatasetFormatError."""
        return record

    # ---- shared
    @property
    def skipped(self) -> dict[str, int]:
        """Annotations left out, by reason (see ``report`` for examples and partial ones)."""
        return dict(self.report.skipped)

    def collect(self, items: Iterable[Any], parse: Callable[[Any], Record | None], key: Callable[[Any], str]
                ) -> list[Record]:
        """Parse each annotation; BadAnnotation is counted under its reason, None is a silent by-design drop
        (e.g. a frame outside the sampling ratio)."""
        records = []
        for item in items:
            try:
                record = parse(item)
            except BadAnnotation as bad:
                self.report.skip(bad.reason, key(item))
                continue
            except (KeyError, TypeError, ValueError, IndexError) as exc:  # a field of the wrong kind
                self.report.skip(f"malformed annotation ({type(exc).__name__}: {exc})", key(item))
                continue
            if record is not None:
                records.append(record)
        return records

    def person_box(self, xywh: np.ndarray, img_w: int, img_h: int) -> np.ndarray:
        """process_bbox for this loader's input aspect; a box with no area inside the image is a counted skip."""
        box = process_bbox(xywh, img_w, img_h, aspect=self.input_size[1] / self.input_size[0])
        if box is None:
            raise BadAnnotation("person box has no area inside the image")
        return box

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh augmentation for a new epoch (the draw is a function of seed, epoch and index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def params(self, index: int) -> AugmentParams:
        if self.augment is None:
            return AugmentParams()
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        return draw_params(self.augment, torch.Generator().manual_seed(int(state)))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            if i in self.bad_records:
                continue
            try:
                record = self.complete(self.records[i])
                img = load_image(record.img_path, record.img_hw)
            except DatasetFormatError as exc:
                if self.on_bad_file == "raise":
                    raise
                # Counted once per record under the reason's first words; the warning keeps the details.
                self.bad_records.add(i)
                self.report.skip(exc.reason.split(" (", 1)[0], str(exc.path))
                warnings.warn(f"{type(self).__name__}: skipping {self.records[i].key}: {exc}", stacklevel=2)
                continue
            return self.make_sample(record, img, self.params(index))
        raise DatasetFormatError(self.root, f"every sample failed to load:\n{self.report}")

    def make_sample(self, record: Record, img: torch.Tensor, params: AugmentParams) -> dict[str, torch.Tensor]:
        """Crop (with scale and rotation), move every target into the crop, then flip and colour."""
        h, w = self.input_size
        x, y, bw, bh = (float(v) for v in record.bbox)
        affine = crop_affine((x + bw / 2, y + bh / 2), (bw, bh), (h, w), params.scale, params.rot)
        s = empty_sample((h, w))
        s["img"] = warp_image(img, affine, (h, w))
        if record.joint_img is not None:
            s["joint_img"][:, :2] = torch.from_numpy(record.joint_img)
            s["joint_valid"] = torch.from_numpy(record.joint_valid).float()
        if record.joint_cam is not None:
            s["joint_cam"] = torch.from_numpy(record.joint_cam)
            s["joint_cam_valid"] = torch.from_numpy(record.joint_cam_valid).float()
        if record.smplx is not None:
            p = record.smplx
            for key in ("root_pose", "body_pose", "lhand_pose", "rhand_pose", "jaw_pose", "shape", "expr"):
                s[f"smplx_{key}"] = torch.from_numpy(getattr(p, key)).float()
            s["smplx_pose_valid"] = torch.from_numpy(p.pose_valid).float()
            s["smplx_shape_valid"], s["smplx_expr_valid"] = torch.tensor(1.0), torch.tensor(p.expr_valid)
        for part, box in record.part_boxes.items():
            if box is not None:
                s[f"{part}_bbox"], s[f"{part}_bbox_valid"] = torch.from_numpy(box).float(), torch.tensor(1.0)
        s["focal"] = torch.tensor([VIRTUAL_FOCAL[0] * w / VIRTUAL_INPUT[1], VIRTUAL_FOCAL[1] * h / VIRTUAL_INPUT[0]])
        s["princpt"] = torch.tensor([w / 2, h / 2])
        s = transform_2d(s, affine)
        s = rotate_3d(s, params.rot)
        s["joint_img"][:, 2] = s["joint_cam"][:, 2]  # depth relative to the pelvis (0 for 2D-only sources)
        if record.mesh_cam is not None:
            s["mesh_cam"] = torch.from_numpy(record.mesh_cam).float()
        if params.flip:
            s = flip_sample(s)
        s["img"] = jitter_color(s["img"], params.color)
        return s


def require_image(path: Path) -> Path:
    """Index-time check (a stat, no decoding): a listed image that is not on disk is a counted skip."""
    if not path.is_file():
        raise BadAnnotation("image file missing")
    return path
