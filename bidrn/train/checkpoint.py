"""Checkpoints and distributable weights.

- Training checkpoints (``checkpoint.pt``): everything a resume needs, written atomically (temporary file in
  the same folder, fsync, rename), read back with ``torch.load(weights_only=True)``, which refuses anything
  but tensors and plain containers, so even a checkpoint from elsewhere cannot run code.
- Weights for distribution (``*.safetensors``): tensors only, no pickle at all, with the config name in the
  metadata so loading into the wrong architecture is a clear error.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bidrn.io import atomic_write


def save_checkpoint(state: dict, path: str | Path) -> None:
    atomic_write(Path(path), lambda fh: torch.save(state, fh))


def load_checkpoint(path: str | Path, map_location=None) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise ValueError(f"{path}: not a readable bidrn training checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.network_state_dict().items()}
    blob = save(tensors, metadata={"format": "bidrn", **(metadata or {})})
    atomic_write(Path(path), lambda fh: fh.write(blob))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with a clear error for truncated or foreign files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign bytes
        raise ValueError(f"{path}: not a valid safetensors weights file ({str(exc)[:200]}); "
                         "it may be truncated: download or export it again") from None


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    tensors, meta = read_weights(path)
    if meta.get("format") != "bidrn":
        raise ValueError(f"{path}: safetensors file without bidrn metadata; expected weights saved by bidrn")
    if meta.get("config") != model.cfg.name:
        raise ValueError(f"{path}: weights of {meta.get('config')!r}, not {model.cfg.name!r}")
    model.load_network_state(tensors)
    return model
