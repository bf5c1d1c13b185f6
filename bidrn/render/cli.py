"""`bidrn render bench`: images per second of the rasterizer on the body model, at a given size and batch."""
from __future__ import annotations

from pathlib import Path

import torch


def add_parser(subparsers) -> None:
    from bidrn.data.cli import parse_size

    parser = subparsers.add_parser("render", help="the rasterizer: benchmark")
    sub = parser.add_subparsers(dest="render_command", metavar="SUBCOMMAND", required=True)
    bench = sub.add_parser("bench", help="images/s rendering the body model (standing, framed as a person crop)")
    bench.add_argument("--size", type=parse_size, default=(256, 192), help="image size HEIGHTxWIDTH (default 256x192)")
    bench.add_argument("--batch", type=int, default=16)
    bench.add_argument("--repeats", type=int, default=3, help="timed batches after one warm-up batch")
    bench.add_argument("--supersample", type=int, default=2, help="anti-aliasing factor per axis")
    bench.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    bench.add_argument("--model", type=Path, help="SMPL-X .npz file or folder (default: the embedded model)")
    bench.set_defaults(func=_bench)


def framed_body(layer, height: int, width: int):
    """The model standing with arms lowered, in the camera frame, and a Camera whose image it fills as a
    detector crop would (its height 1/1.25 of the image's)."""
    from . import Camera

    body = torch.zeros(1, 21, 3)
    body[0, 15, 2], body[0, 16, 2] = -1.2, 1.2  # left / right shoulder: lower both arms (SMPL-X rest arms lie along x)
    with torch.no_grad():
        verts = layer(body_pose=body.reshape(1, 63), global_orient=torch.tensor([[torch.pi, 0.0, 0.0]])).vertices[0]
    centre = (verts.max(0).values + verts.min(0).values) / 2
    verts = verts - centre + torch.tensor([0.0, 0.0, 4.0])
    extent = verts.max(0).values - verts.min(0).values
    focal = 4.0 * height / (1.25 * max(float(extent[1]), float(extent[0]) * height / width))
    return verts, Camera((focal, focal), (width / 2, height / 2), height, width)


def _bench(args) -> int:
    from bidrn.body import load_body_model

    from . import benchmark

    if args.batch < 1 or args.repeats < 1 or args.supersample < 1:
        raise ValueError("--batch, --repeats and --supersample must be at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    layer = load_body_model(args.model)
    verts, camera = framed_body(layer, *args.size)
    rate = benchmark(verts.to(args.device), layer.faces.to(args.device), camera, args.batch, args.repeats, args.supersample)
    print(f"{rate:.1f} images/s at {args.size[0]}x{args.size[1]}, batch {args.batch}, supersample {args.supersample}, "
          f"{layer.num_vertices} vertices, {args.device} ({torch.get_num_threads()} threads)")
    return 0
