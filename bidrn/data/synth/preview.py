"""Draw samples (any source in bidrn.data.sample's format) with their joints and boxes, for a person to judge."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from bidrn.body.joint_sets import BODY_JOINTS
from bidrn.data.sample import BODY_SLICE, LHAND_SLICE, RHAND_SLICE

# Hand4Whole's 25 body joints (bidrn.body.joint_sets.BODY_JOINTS) as a stick figure.
BODY_EDGES = ((0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (0, 7), (7, 8), (7, 9), (8, 10), (9, 11), (10, 12),
              (11, 13), (5, 14), (5, 15), (5, 16), (6, 17), (6, 18), (6, 19), (7, 24), (24, 22), (24, 23), (22, 20),
              (23, 21))
L_WRIST, R_WRIST = 12, 13
LEFT, RIGHT, MIDDLE = (255, 140, 0), (0, 190, 255), (255, 255, 255)  # left side orange, right side cyan
BOX_COLORS = {"lhand_bbox": (255, 140, 0), "rhand_bbox": (0, 190, 255), "face_bbox": (255, 230, 0)}


def _hand_edges(wrist: int, first: int) -> list[tuple[int, int]]:
    """Wrist to each finger's joint 1, then along the finger (Hand4Whole: 5 fingers x 4 joints)."""
    edges = []
    for f in range(5):
        base = first + 4 * f
        edges += [(wrist, base), (base, base + 1), (base + 1, base + 2), (base + 2, base + 3)]
    return edges


def _side(joint: int) -> tuple[int, int, int]:
    return {"L": LEFT, "R": RIGHT}.get(BODY_JOINTS[joint][0], MIDDLE)


EDGES = ([(a, b, _side(b)) for a, b in BODY_EDGES]
         + [(a, b, LEFT) for a, b in _hand_edges(L_WRIST, LHAND_SLICE.start)]
         + [(a, b, RIGHT) for a, b in _hand_edges(R_WRIST, RHAND_SLICE.start)])


def draw_sample(sample: dict[str, torch.Tensor], scale: int = 2) -> Image.Image:
    """The sample's image, scaled up, with valid 2D joints (stick figure) and valid hand and face boxes."""
    img = (sample["img"].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    xy = (sample["joint_img"][:, :2] * scale).tolist()
    valid = sample["joint_valid"] > 0
    for a, b, colour in EDGES:
        if valid[a] and valid[b]:
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=colour, width=max(1, scale // 2 + (a < 25 and b < 25)))
    for k in range(len(xy)):
        if valid[k]:
            r = scale if k < BODY_SLICE.stop else max(1, scale // 2)
            draw.ellipse([xy[k][0] - r, xy[k][1] - r, xy[k][0] + r, xy[k][1] + r], fill=(255, 255, 255))
    for key, colour in BOX_COLORS.items():
        if sample[f"{key}_valid"] > 0:
            draw.rectangle((sample[key] * scale).tolist(), outline=colour, width=max(1, scale // 2))
    return image


def sample_grid(samples: list[dict[str, torch.Tensor]], cols: int = 8, scale: int = 2) -> Image.Image:
    """Samples drawn with draw_sample, in rows of `cols`."""
    tiles = [draw_sample(s, scale) for s in samples]
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    grid = Image.new("RGB", (w * min(cols, len(tiles)), h * rows), (0, 0, 0))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % cols) * w, (i // cols) * h))
    return grid
