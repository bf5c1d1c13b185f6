"""`bidrn data synth | show`: write synthetic samples to shards; draw a grid of samples with their labels."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def parse_size(text: str) -> tuple[int, int]:
    """'256x192' -> (256, 192): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HEIGHTxWIDTH in pixels, like 256x192; got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16 pixels; got {text!r}")
    return h, w


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="synthetic training data: write shards, draw samples")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    synth = sub.add_parser("synth", help="render synthetic whole-body samples into sharded .npz files")
    synth.add_argument("--out", type=Path, required=True, help="folder for the shards and index.json")
    synth.add_argument("--n", type=int, required=True, help="number of samples")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=parse_size, help="input size HEIGHTxWIDTH (default: the config's, else 256x192)")
    synth.add_argument("--config", help="model config name (bidrn.create_model's) whose input, hand and face crop sizes to use")
    synth.add_argument("--shard-size", type=int, default=500, help="samples per shard file")
    synth.add_argument("--batch", type=int, default=16, help="samples rendered together")
    synth.add_argument("--model", type=Path, help="SMPL-X .npz file or folder (default: $BIDRN_BODY_MODEL, then the embedded model)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=_synth)

    show = sub.add_parser("show", help="draw a grid of samples with joints and boxes overlaid")
    show.add_argument("folder", type=Path, help="a shard folder written by `bidrn data synth`")
    show.add_argument("--out", type=Path, help="PNG to write (default: FOLDER/grid.png)")
    show.add_argument("--n", type=int, default=16, help="number of samples to draw")
    show.add_argument("--start", type=int, default=0, help="index of the first sample")
    show.add_argument("--cols", type=int, default=8)
    show.add_argument("--scale", type=int, default=2, help="upscaling of each sample")
    show.set_defaults(func=_show)


def _synth_config(args):
    from bidrn.data.synth import SynthConfig

    if args.config is None:
        return args.size or (256, 192), SynthConfig()
    from bidrn.models.registry import REGISTRY

    if args.config not in REGISTRY:
        raise ValueError(f"unknown config {args.config!r}; known: {', '.join(sorted(REGISTRY))}")
    cfg = REGISTRY[args.config]
    return args.size or cfg.input_size, SynthConfig(hand_aspect=cfg.hand_input[1] / cfg.hand_input[0],
                                                    face_aspect=cfg.face_input[1] / cfg.face_input[0])


def _synth(args) -> int:
    from bidrn.body import load_body_model
    from bidrn.data.synth import write_shards

    if args.n < 1 or args.shard_size < 1 or args.batch < 1:
        raise ValueError(f"--n, --shard-size and --batch must be at least 1 (got {args.n}, {args.shard_size}, {args.batch})")
    size, config = _synth_config(args)
    layer = load_body_model(args.model) if args.model else None
    start = time.perf_counter()
    index = write_shards(args.out, args.n, args.seed, size, args.shard_size, args.batch, layer, config, not args.quiet)
    seconds = time.perf_counter() - start
    total = sum(s["bytes"] for s in index["shards"])
    print(f"wrote {args.n} samples ({size[0]}x{size[1]}, seed {args.seed}) in {len(index['shards'])} shards to {args.out}")
    print(f"{seconds:.1f} s ({args.n / seconds:.1f} samples/s in this run); disk {total / 1e6:.1f} MB, "
          f"{total / args.n * 1000 / 1e6:.1f} MB per 1000 samples")
    return 0


def _show(args) -> int:
    from bidrn.data.synth import ShardDataset
    from bidrn.data.synth.preview import sample_grid

    data = ShardDataset(args.folder)
    if not 0 <= args.start < len(data):
        raise ValueError(f"--start {args.start} is outside the {len(data)} samples in {args.folder}")
    if args.n < 1 or args.cols < 1 or args.scale < 1:
        raise ValueError("--n, --cols and --scale must be at least 1")
    samples = [data[i] for i in range(args.start, min(args.start + args.n, len(data)))]
    out = args.out or args.folder / "grid.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sample_grid(samples, args.cols, args.scale).save(out)
    print(f"wrote {out}: samples {args.start}..{args.start + len(samples) - 1} of {args.folder}")
    return 0
