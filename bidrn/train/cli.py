"""`bidrn train CONFIG` and `bidrn eval CHECKPOINT --data NAME`."""
from __future__ import annotations

import json
from pathlib import Path


def _train(args) -> int:
    from bidrn.train.config import load_config
    from bidrn.train.trainer import train

    cfg = load_config(args.config)
    if args.out:
        cfg.out = str(args.out)
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    result = train(cfg, resume=args.resume, progress=not args.quiet)
    last = next((h for h in reversed(result.history) if "loss" in h), {})
    print(f"trained {cfg.model} for {last.get('step', 0)} steps; loss {last.get('loss', float('nan')):.4f}; "
          f"weights, checkpoint, log.csv and loss.png in {result.out_dir}")
    return 0


def load_trained(path: str | Path, model_name: str | None = None):
    """A model from a run folder, a .safetensors file or a checkpoint.pt (weights only)."""
    from bidrn.models.registry import create_model
    from bidrn.train.checkpoint import load_checkpoint, load_weights, read_weights

    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        path = weights if weights.is_file() else path / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file or run folder (expected model.safetensors or "
                                "checkpoint.pt)")
    if path.suffix == ".safetensors":
        _, meta = read_weights(path)
        model = create_model(model_name or meta.get("config") or "")
        return load_weights(model, path)
    state = load_checkpoint(path)
    model = create_model(model_name or state["config"]["model"])
    model.load_network_state(state["model"])
    return model


def _eval(args) -> int:
    from bidrn.body import load_body_model
    from bidrn.eval.evaluate import evaluate, format_table
    from bidrn.train.config import DataSource
    from bidrn.train.data import build_dataset

    model = load_trained(args.checkpoint, args.model)
    body = load_body_model(args.body_model)
    source = DataSource(name=args.data, root=args.root, length=args.n, seed=args.seed)
    dataset = build_dataset(source, model.cfg.input_size, body, train=False)
    metrics = evaluate(model, dataset, body, batch_size=args.batch_size, progress=not args.json)
    if args.json:
        print(json.dumps({"model": model.cfg.name, "data": args.data, "samples": len(dataset), **metrics}, indent=2))
    else:
        print(format_table(f"{model.cfg.name} on {args.data} ({len(dataset)} samples)", metrics))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (configs/*.yaml)",
                       description="Train from a config; multi-GPU/multi-node with torchrun --nproc_per_node N "
                                   "-m bidrn train CONFIG.")
    p.add_argument("config", help="YAML training config, e.g. configs/bidrn-tiny-synthetic.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--out", type=Path, help="output folder (overrides the config's `out`)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="the paper's Table 1 metrics of a trained model",
                       description="Evaluate a run folder, model.safetensors or checkpoint.pt on a data set.")
    e.add_argument("checkpoint", help="run folder, .safetensors weights or checkpoint.pt")
    e.add_argument("--data", default="synthetic", choices=["synthetic", "shards", "ehf", "agora"],
                   help="synthetic: the fixed, seeded held-out benchmark of the data engine")
    e.add_argument("--root", help="data folder (shards, EHF, AGORA)")
    e.add_argument("--model", help="config name when the weights do not record it")
    e.add_argument("--body-model", help="SMPL-X file or folder (default: $BIDRN_BODY_MODEL or embedded)")
    e.add_argument("--n", type=int, default=256, help="synthetic benchmark size")
    e.add_argument("--seed", type=int, default=1_000_003, help="synthetic benchmark seed (held out from training)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_eval)
