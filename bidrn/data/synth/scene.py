"""Procedural backgrounds (wall and floor, colour noise, furniture-like boxes) and occluders, batched."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rng import BatchRandom


def _muted(rng: BatchRandom, *shape: int) -> Tensor:
    """... x 3 colours of indoor and outdoor surfaces: mostly low saturation, mid brightness."""
    grey = rng.uniform(*shape, 1, low=0.15, high=0.85)
    tint = rng.normal(*shape, 3, std=0.05) * rng.uniform(*shape, 1, low=0.2, high=1.5)
    return (grey + tint).clamp(0, 1)


def _noise(rng: BatchRandom, h: int, w: int, cells: tuple[int, int], channels: int) -> Tensor:
    """B x C x H x W smooth noise: a coarse random grid upsampled bicubically."""
    grid = rng.normal(channels, *cells)
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)


def paint_shapes(image: Tensor, boxes: Tensor, colors: Tensor, active: Tensor, ellipse: Tensor) -> Tensor:
    """Paint K boxes or ellipses per image, in order, over image B x 3 x H x W.
    boxes B x K x 4 (x0, y0, x1, y1 as fractions of the width and height), colors B x K x 3, active, ellipse B x K."""
    b, _, h, w = image.shape
    ys = (torch.arange(h) + 0.5) / h
    xs = (torch.arange(w) + 0.5) / w
    for k in range(boxes.shape[1]):
        x0, y0, x1, y1 = (c.view(b, 1, 1) for c in boxes[:, k].unbind(-1))
        inside_box = (xs >= x0) & (xs < x1) & (ys.view(-1, 1) >= y0) & (ys.view(-1, 1) < y1)  # B x H x W
        dx = (xs - (x0 + x1) / 2) / ((x1 - x0) / 2)
        dy = (ys.view(-1, 1) - (y0 + y1) / 2) / ((y1 - y0) / 2)
        inside = torch.where(ellipse[:, k].view(b, 1, 1), dx * dx + dy * dy <= 1, inside_box)
        inside &= active[:, k].view(b, 1, 1)
        image = torch.where(inside.unsqueeze(1), colors[:, k].view(b, 3, 1, 1), image)
    return image


def _random_boxes(rng: BatchRandom, k: int, size: tuple[float, float]) -> Tensor:
    """B x K x 4 boxes with sides a random fraction (in `size`) of the image, anywhere in it."""
    wh = rng.uniform(k, 2, low=size[0], high=size[1])
    centre = rng.uniform(k, 2, low=-0.1, high=1.1)
    return torch.cat([centre - wh / 2, centre + wh / 2], -1)


def backgrounds(rng: BatchRandom, height: int, width: int, max_boxes: int = 6) -> Tensor:
    """B x 3 x H x W: a wall over a floor (or one surface), colour noise and furniture-like boxes, some blurred."""
    b = len(rng)
    wall, floor = _muted(rng), _muted(rng)  # B x 3
    horizon = torch.where(rng.chance(0.75), rng.uniform(low=0.2, high=0.75), torch.full((b,), 2.0))
    ys = ((torch.arange(height) + 0.5) / height).view(1, 1, height, 1)
    below = (ys - horizon.view(b, 1, 1, 1)).clamp(min=0)  # distance below the horizon: the floor darkens or fades
    image = torch.where(ys < horizon.view(b, 1, 1, 1), wall.view(b, 3, 1, 1),
                        floor.view(b, 3, 1, 1) * (1 - rng.uniform(low=-0.4, high=0.6).view(b, 1, 1, 1) * below))
    image = image.expand(b, 3, height, width)
    k = max_boxes
    boxes = _random_boxes(rng, k, (0.05, 0.6))
    active = rng.uniform(k) < rng.uniform(1, high=0.7)  # a random clutter level per image
    image = paint_shapes(image, boxes, _muted(rng, k), active, rng.chance(0.2).view(b, 1) & rng.chance(0.3).view(b, 1).expand(b, k))
    # Gentle lighting falloff across the scene and a fine grain, so flat surfaces are not flat colour.
    image = image * (1 + 0.12 * _noise(rng, height, width, (3, 3), 1)) + 0.02 * _noise(rng, height, width, (4, 3), 3)
    image = image + 0.015 * _noise(rng, height, width, (height // 4, width // 4), 1)
    # Depth of field: about a third of the backgrounds are out of focus.
    blurred = F.avg_pool2d(F.pad(image, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    image = torch.where(rng.chance(0.35).view(b, 1, 1, 1), blurred, image)
    return image.clamp(0, 1)


def occluders(rng: BatchRandom, image: Tensor, prob: float, max_count: int = 2) -> Tensor:
    """Boxes and ellipses over the person (the image centre) in about `prob` of the images."""
    b = image.shape[0]
    wh = rng.uniform(max_count, 2, low=0.15, high=0.45)
    centre = rng.uniform(max_count, 2, low=0.15, high=0.85)
    boxes = torch.cat([centre - wh / 2, centre + wh / 2], -1)
    active = rng.chance(prob).view(b, 1) & (rng.uniform(max_count) < 0.6).logical_or(torch.arange(max_count) == 0)
    colors = (_muted(rng, max_count) * 1.1).clamp(0, 1)
    return paint_shapes(image, boxes, colors, active, rng.chance(0.5).view(b, 1).expand(b, max_count))
