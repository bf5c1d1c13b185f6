"""Synthetic samples written to sharded .npz files for reuse, and a Dataset that reads them back.

Layout of a folder: ``shard-00000.npz`` ... (each holds `count` samples: every sample key stacked, the image as
uint8 N x 3 x H x W, the rest float32; np.savez_compressed, no pickle) and ``index.json`` (run parameters and
the finished shards). Each shard and the index are written to a temporary name and renamed, so an interrupted
run leaves only whole shards, which a second run with the same parameters keeps and does not redo.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bidrn.body import SMPLXLayer

from bidrn.io import atomic_write

from .engine import SynthConfig, SynthEngine

INDEX = "index.json"
FORMAT = "bidrn-synth-shards/1"


def _run_params(n: int, seed: int, input_size, shard_size: int, engine: SynthEngine) -> dict:
    return {"format": FORMAT, "num_samples": n, "seed": seed, "input_size": list(input_size), "shard_size": shard_size,
            "body_model": engine.layer.source, "config": json.loads(json.dumps(dataclasses.asdict(engine.config)))}


def write_shards(out: str | os.PathLike, n: int, seed: int, input_size: tuple[int, int] = (256, 192),
                 shard_size: int = 500, batch: int = 16, body_model: SMPLXLayer | None = None,
                 config: SynthConfig = SynthConfig(), progress: bool = True) -> dict:
    """Write samples 0 .. n-1 of stream `seed` under `out`; returns the index. Resumes a matching earlier run."""
    if n < 1 or shard_size < 1 or batch < 1:
        raise ValueError(f"n, shard size and batch must be at least 1 (got {n}, {shard_size}, {batch})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    engine = SynthEngine(input_size, body_model, config)
    params = _run_params(n, seed, input_size, shard_size, engine)
    index = {**params, "shards": []}
    if (out / INDEX).exists():
        previous = json.loads((out / INDEX).read_text())
        if {k: previous.get(k) for k in params} != params:
            raise ValueError(f"{out} already holds shards of a different run ({out / INDEX}); "
                             "choose another --out or delete that folder")
        index["shards"] = [s for s in previous["shards"] if (out / s["file"]).exists()]
    done = {s["start"] for s in index["shards"]}
    from tqdm import tqdm

    bar = tqdm(total=n, unit="sample", disable=not progress, initial=sum(s["count"] for s in index["shards"]))
    for start in range(0, n, shard_size):
        if start in done:
            continue
        count = min(shard_size, n - start)
        parts = []
        for lo in range(start, start + count, batch):
            parts.append(engine.generate(list(range(lo, min(lo + batch, start + count))), seed))
            bar.update(len(parts[-1]["img"]))
        arrays = {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}
        arrays["img"] = np.round(arrays["img"] * 255).astype(np.uint8)
        name = f"shard-{start // shard_size:05d}.npz"
        atomic_write(out / name, lambda f: np.savez_compressed(f, **arrays))
        index["shards"].append({"file": name, "start": start, "count": count, "bytes": (out / name).stat().st_size})
        index["shards"].sort(key=lambda s: s["start"])
        atomic_write(out / INDEX, lambda f: f.write(json.dumps(index, indent=1).encode()))
    bar.close()
    return index


class ShardDataset(Dataset):
    """The samples of a shard folder (only its finished shards), as bidrn.data.sample dicts; one shard cached."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if not (self.folder / INDEX).exists():
            raise ValueError(f"{self.folder} has no {INDEX}: not a shard folder written by `bidrn data synth`")
        self.index = json.loads((self.folder / INDEX).read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{self.folder / INDEX} has format {self.index.get('format')!r}, expected {FORMAT!r}")
        self.shards = self.index["shards"]
        self.input_size = tuple(self.index["input_size"])
        self._offsets = np.cumsum([0] + [s["count"] for s in self.shards])
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _shard(self, k: int) -> dict[str, np.ndarray]:
        if self._cached is None or self._cached[0] != k:
            with np.load(self.folder / self.shards[k]["file"], allow_pickle=False) as data:
                self._cached = (k, {key: data[key] for key in data.files})
        return self._cached[1]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples in {self.folder}")
        i %= len(self)
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        row = i - int(self._offsets[k])
        sample = {key: torch.from_numpy(np.array(value[row])) for key, value in self._shard(k).items()}
        sample["img"] = sample["img"].float() / 255
        return sample
