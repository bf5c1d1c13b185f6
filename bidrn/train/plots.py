"""Loss curves next to the checkpoint: people would rather look than read a CSV."""
from __future__ import annotations

from pathlib import Path

from bidrn.io import atomic_write


def plot_history(history: list[dict], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if "loss" in h]
    val = [h for h in history if "val_mpvpe_all" in h]
    terms = [k for k in train[0] if k not in ("step", "epoch", "lr", "images_per_s")] if train else []
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(12 if val else 7, 4.5), squeeze=False)
    ax = axes[0, 0]
    for k in terms:
        ax.plot([h["step"] for h in train], [h[k] for h in train], label=k, lw=2 if k == "loss" else 1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title("training loss (L1 terms of eq. 12)")
    ax.legend(fontsize=7)
    if val:
        ax = axes[0, 1]
        for k in ("val_mpvpe_all", "val_mpvpe_hand", "val_mpvpe_face"):
            ax.plot([h["step"] for h in val], [h[k] for h in val], marker="o", label=k[4:])
        ax.set_xlabel("step")
        ax.set_ylabel("mm")
        ax.set_title("validation MPVPE (synthetic benchmark)")
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)
