"""`bidrn bench-methods`: the paper's Table 1 comparison at our scale.

Trains the full-precision reference, BNN, ReActNet, ReCU and BiDRN (their -tiny configs) with the same data,
schedule and budget on the synthetic engine, evaluates each on the same held-out synthetic benchmark, and writes
a Table-1-style comparison (markdown + JSON) and a bar plot. The claim under test: BiDRN well ahead of every BNN
baseline, within reach of full precision.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from bidrn.train.config import DataSource, TrainConfig

DEFAULT_METHODS = ("hand4whole-tiny", "bnn-tiny", "reactnet-tiny", "recu-tiny", "bidrn-tiny")


def bench_methods(out: str | Path, methods=DEFAULT_METHODS, steps: int = 1500, batch_size: int = 24,
                  lr: float = 1e-3, n_eval: int = 256, seed: int = 0, progress: bool = True) -> list[dict]:
    from bidrn.body import load_body_model
    from bidrn.eval.evaluate import evaluate
    from bidrn.models.cost import model_cost
    from bidrn.models.registry import get_config
    from bidrn.train.data import build_dataset
    from bidrn.train.trainer import train

    out = Path(out)
    body = load_body_model()
    base = TrainConfig(data=[DataSource(length=10**7, seed=seed)], val=None, batch_size=batch_size, epochs=1,
                       steps_per_epoch=steps, lr=lr, lr_milestones=[], pose_loss="rotmat", seed=seed,
                       log_every=25, ckpt_every=250)
    rows = []
    for name in methods:
        cfg = replace(base, model=name, out=str(out / name))
        done = (out / name / "model.safetensors").is_file()
        result = None if done else train(cfg, resume=(out / name / "checkpoint.pt").is_file(), progress=progress)
        if result is None:
            from bidrn.train.cli import load_trained

            model = load_trained(out / name)
        else:
            model = result.model
        bench = build_dataset(DataSource(length=n_eval, seed=1_000_003), model.cfg.input_size, body, train=False)
        metrics = evaluate(model, bench, body, batch_size=16, progress=progress)
        cost = model_cost(get_config(name))
        rows.append({"model": name, "params_m": round(cost.params_m, 3), "ops_g": round(cost.ops_g, 3),
                     "steps": steps, "batch_size": batch_size, **{k: round(v, 2) for k, v in metrics.items()}})
        _write(out, rows)
    return rows


def _write(out: Path, rows: list[dict]) -> None:
    from bidrn.io import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", lambda fh: fh.write(json.dumps(rows, indent=2).encode()))
    cols = ("params_m", "ops_g", "mpvpe_all", "mpvpe_hand", "mpvpe_face", "pa_mpvpe_all", "pa_mpvpe_hand",
            "pa_mpvpe_face", "pa_mpjpe_body", "pa_mpjpe_hand")
    head = "| model | Params (M) | OPs (G) | MPVPE all | hand | face | PA-MPVPE all | hand | face | PA-MPJPE body | hand |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    lines += ["| " + " | ".join([r["model"]] + [str(r[c]) for c in cols]) + " |" for r in rows]
    atomic_write(out / "results.md", lambda fh: fh.write(("\n".join(lines) + "\n").encode()))
    _plot(out / "results.png", rows)


def _plot(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bidrn.io import atomic_write

    keys = ("mpvpe_all", "mpvpe_hand", "mpvpe_face")
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, k in enumerate(keys):
        ax.bar(x + (i - 1) * 0.27, [r[k] for r in rows], 0.27, label=k.replace("mpvpe_", "MPVPE "))
    ax.set_xticks(x, [r["model"] for r in rows], rotation=15)
    ax.set_ylabel("mm (lower is better)")
    ax.set_title("Same budget, synthetic benchmark")
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)


def add_parser(sub) -> None:
    p = sub.add_parser("bench-methods", help="train FP, BNN, ReActNet, ReCU and BiDRN alike and compare (Table 1)",
                       description="Train each -tiny config with the same budget on the synthetic engine, evaluate "
                                   "on the held-out synthetic benchmark, write results.md/json/png. Resumable: "
                                   "finished models are reused.")
    p.add_argument("--out", type=Path, default=Path("runs/bench-methods"))
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-eval", type=int, default=256)

    def run(args) -> int:
        rows = bench_methods(args.out, args.methods, args.steps, args.batch_size, args.lr, args.n_eval)
        print((args.out / "results.md").read_text())
        print(f"results.json, results.md and results.png in {args.out}")
        return 0 if rows else 1

    p.set_defaults(func=run)
