"""A batched triangle rasterizer in plain torch (CPU or CUDA, no OpenGL): the project's one renderer.

Camera: pinhole in OpenCV convention (x right, y down, z forward, pixels with centres at integer + 0.5),
given by focal length and principal point in pixels. Shading: per-vertex colour times
(ambient + diffuse * max(0, n . l)) with smooth vertex normals; anti-aliasing by supersampling.

Design (so it runs vectorised): each triangle tests only the pixels of its bounding box. Triangles are
grouped by box size (2, 4, 8, ... px) so a group is one dense tensor of candidate pixels; a z-buffer
is one `scatter_reduce(amin)` over int64 keys that pack (depth bits, triangle id), so the nearest
triangle at each pixel is found in a single pass, then the pixel's barycentrics are recomputed once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

NEAR = 1e-3  # metres; triangles with a vertex closer than this are dropped rather than clipped


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels; height x width is the output image size.

    focal and principal are (x, y) pairs shared by the batch, or B x 2 tensors giving each image its own
    camera (the synthetic data engine frames every person separately).
    """

    focal: tuple[float, float] | Tensor
    principal: tuple[float, float] | Tensor
    height: int
    width: int


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """Area-weighted vertex normals. vertices B x V x 3, faces F x 3 -> B x V x 3 (unit)."""
    tri = vertices[:, faces]  # B x F x 3 x 3
    face_n = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals.index_add_(1, faces[:, k], face_n)
    return F.normalize(normals, dim=-1, eps=1e-12)


def _edge(ax: Tensor, ay: Tensor, bx: Tensor, by: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Twice the signed area of (a, b, p): positive when p is left of a->b in a y-down image."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def rasterize(screen: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool = True) -> Tensor:
    """Nearest triangle id at each pixel centre (-1 where none).

    screen: B x V x 3 (pixel x, pixel y, depth z > 0), faces: F x 3  ->  B x H x W (long)
    """
    b = screen.shape[0]
    tri = screen[:, faces]  # B x F x 3 x 3
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
    area = _edge(x[..., 0], y[..., 0], x[..., 1], y[..., 1], x[..., 2], y[..., 2])
    # Counter-clockwise on screen (y down) is a front face for meshes wound like SMPL-X.
    keep = (z.min(-1).values > NEAR) & (area < 0 if cull_backfaces else area != 0)
    x0 = x.min(-1).values.sub(0.5).ceil().clamp(min=0)
    x1 = x.max(-1).values.sub(0.5).floor().clamp(max=width - 1)
    y0 = y.min(-1).values.sub(0.5).ceil().clamp(min=0)
    y1 = y.max(-1).values.sub(0.5).floor().clamp(max=height - 1)
    keep &= (x1 >= x0) & (y1 >= y0)
    bi, fi = keep.nonzero(as_tuple=True)
    span = torch.maximum(x1 - x0, y1 - y0)[bi, fi] + 1
    # One spare slot at the end: the target of pixels a triangle's box holds but the triangle does not cover.
    zbuf = torch.full((b * height * width + 1,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=screen.device)
    max_span = int(span.max()) if len(span) else 0
    size = 1
    while size // 2 < max_span:  # boxes of (size/2, size] pixels tested as dense size x size blocks
        group = (span <= size) & (span > size // 2)
        if group.any():
            _splat(zbuf, tri, x0, y0, x1, y1, bi[group], fi[group], size, height, width)
        size *= 2
    zbuf = zbuf[:-1]
    ids = torch.where(zbuf == torch.iinfo(torch.int64).max, -1, zbuf & 0xFFFFFFFF)
    return ids.view(b, height, width)


def _splat(zbuf, tri, x0, y0, x1, y1, bi, fi, size, height, width) -> None:
    """Depth-test every pixel of a size x size box of each listed triangle into the packed z-buffer.

    Edge functions and 1/z are affine in the pixel position, w = A x + B y + C, so over a box each is
    an outer sum of a row and a column term: one full-size add per quantity.
    """
    t = tri[bi, fi]  # N x 3 corners x (x, y, z)
    ax, ay = t[..., 0], t[..., 1]  # N x 3
    bx, by = ax.roll(-1, dims=1), ay.roll(-1, dims=1)  # the next corner: edges 0->1, 1->2, 2->0
    a_, b_ = -(by - ay), bx - ax
    c_ = -(a_ * ax + b_ * ay)
    area = c_.sum(-1, keepdim=True)  # twice the signed area (sum of the edge constants at the origin)
    # Edge k is opposite corner k+2; normalising by the area makes inside points' weights positive.
    a_, b_, c_ = a_ / area, b_ / area, c_ / area
    inv_z = 1.0 / t[..., 2].roll(1, dims=1)  # the corner each edge weight belongs to (opposite corner)
    offs = torch.arange(size, device=tri.device, dtype=tri.dtype) + 0.5
    cx = x0[bi, fi].unsqueeze(-1) + offs  # N x S pixel-centre columns
    cy = y0[bi, fi].unsqueeze(-1) + offs  # N x S pixel-centre rows
    inside = ((cx <= x1[bi, fi].unsqueeze(-1) + 0.5).unsqueeze(-1) & (cy <= y1[bi, fi].unsqueeze(-1) + 0.5).unsqueeze(-2))
    for k in range(3):
        w = (a_[:, k:k + 1] * cx).unsqueeze(-1) + (b_[:, k:k + 1] * cy + c_[:, k:k + 1]).unsqueeze(-2)
        inside &= w >= 0
    # Perspective-correct depth: 1/z is affine in screen space.
    za, zb, zc = (a_ * inv_z).sum(-1, keepdim=True), (b_ * inv_z).sum(-1, keepdim=True), (c_ * inv_z).sum(-1, keepdim=True)
    rz = (za * cx).unsqueeze(-1) + (zb * cy + zc).unsqueeze(-2)
    depth = (1.0 / rz).float()
    base = (bi * height * width).unsqueeze(-1)
    # Scatter the whole block (masking the large candidate tensors costs more than the scatter): pixels
    # outside the triangle carry the empty key and go to the spare last slot of the z-buffer.
    pixel = torch.where(inside, (cx.long() + base).unsqueeze(-1) + (cy.long() * width).unsqueeze(-2), zbuf.numel() - 1)
    # Positive float32 bit patterns sort like the numbers: depth in the high word, triangle id in the low.
    key = torch.where(inside, (depth.view(torch.int32).long() << 32) | fi.view(-1, 1, 1), torch.iinfo(torch.int64).max)
    zbuf.scatter_reduce_(0, pixel.flatten(), key.flatten(), reduce="amin")


def render(
    vertices: Tensor,
    faces: Tensor,
    colors: Tensor,
    camera: Camera,
    light_dir: tuple[float, float, float] | Tensor = (0.3, -0.4, -1.0),
    ambient: float | Tensor = 0.35,
    supersample: int = 2,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    cull_backfaces: bool = True,
) -> Tensor:
    """Shaded images of meshes in camera coordinates.

    vertices: B x V x 3 (metres, OpenCV camera frame), faces: F x 3, colors: (B x) V x 3 in [0, 1]
    -> B x H x W x 4 (RGB over the background, then coverage alpha), float in [0, 1].
    light_dir points from the light towards the scene, in camera coordinates: a 3-tuple, or B x 3 for one light
    per image; ambient likewise a float or a B tensor.
    """
    b = vertices.shape[0]
    s = supersample
    h, w = camera.height * s, camera.width * s
    like = dict(dtype=vertices.dtype, device=vertices.device)
    focal = torch.as_tensor(camera.focal, **like).reshape(-1, 1, 2)  # 1 or B x 1 x 2
    principal = torch.as_tensor(camera.principal, **like).reshape(-1, 1, 2)
    z = vertices[..., 2]
    # Supersampled pixel coordinates: a pixel centre (u + 0.5) maps to s*(u + 0.5).
    screen = torch.cat([(focal * vertices[..., :2] / z.unsqueeze(-1) + principal) * s, z.unsqueeze(-1)], -1)
    face_id = rasterize(screen, faces, h, w, cull_backfaces)  # B x h x w
    hit = face_id >= 0
    bi = torch.arange(b, device=vertices.device).view(b, 1, 1).expand_as(face_id)[hit]
    fid = face_id[hit]
    ys, xs = hit.nonzero(as_tuple=True)[1:]
    corners = faces[fid]  # N x 3
    t = screen[bi.unsqueeze(-1), corners]  # N x 3 x 3
    px, py = xs.to(t.dtype) + 0.5, ys.to(t.dtype) + 0.5
    l0 = _edge(t[:, 1, 0], t[:, 1, 1], t[:, 2, 0], t[:, 2, 1], px, py)
    l1 = _edge(t[:, 2, 0], t[:, 2, 1], t[:, 0, 0], t[:, 0, 1], px, py)
    l2 = _edge(t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1], px, py)
    # Perspective-correct barycentrics: screen weights divided by depth, renormalised.
    bary = torch.stack([l0, l1, l2], -1) / t[:, :, 2]
    bary = bary / bary.sum(-1, keepdim=True)
    normals = vertex_normals(vertices, faces)[bi.unsqueeze(-1), corners]  # N x 3 x 3
    n = F.normalize((bary.unsqueeze(-1) * normals).sum(1), dim=-1)
    light = F.normalize(torch.as_tensor(light_dir, **like).reshape(-1, 3), dim=-1).expand(b, 3)[bi]  # N x 3
    amb = torch.as_tensor(ambient, **like).reshape(-1).expand(b)[bi]  # N
    # Two-sided Lambert, so open meshes and back faces (when not culled) are not black.
    shade = amb + (1.0 - amb) * (n * light).sum(-1).abs()
    col = colors.expand(b, -1, -1)[bi.unsqueeze(-1), corners]
    rgb = (bary.unsqueeze(-1) * col).sum(1) * shade.unsqueeze(-1)
    image = torch.zeros(b, h, w, 4, dtype=vertices.dtype, device=vertices.device)
    image[hit] = torch.cat([rgb, torch.ones_like(shade).unsqueeze(-1)], -1)
    image = F.avg_pool2d(image.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1) if s > 1 else image
    bg = torch.tensor(background, dtype=image.dtype, device=image.device)
    alpha = image[..., 3:]
    return torch.cat([image[..., :3] + (1 - alpha) * bg, alpha], -1)


def benchmark(vertices: Tensor, faces: Tensor, camera: Camera, batch: int = 16, repeats: int = 3,
              supersample: int = 2) -> float:
    """Images per second for `batch` copies of one mesh (V x 3, camera frame) at the camera's size."""
    verts = vertices.expand(batch, -1, -1).contiguous()
    colors = torch.full_like(verts[:1], 0.7)

    def run():
        render(verts, faces, colors, camera, supersample=supersample)
        if verts.is_cuda:
            torch.cuda.synchronize()

    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return batch * repeats / (time.perf_counter() - start)
