"""Data sets for a run, built from a TrainConfig's DataSource entries (one place that knows every source)."""
from __future__ import annotations

from torch.utils.data import Dataset

from bidrn.train.config import DataSource, TrainConfig

REAL = {"human36m": "Human36M", "mscoco": "MSCOCO", "mpii": "MPII", "ehf": "EHF", "agora": "AGORA"}
EVAL_SPLITS = {"human36m": "test", "mscoco": "val", "agora": "validation", "ehf": "test"}
NEEDS_BODY_MODEL = ("ehf", "agora")  # their ground truth is a mesh posed (or regressed) with the body model


def build_dataset(source: DataSource, input_size: tuple[int, int], body_model, train: bool,
                  augment: bool = True) -> Dataset:
    """One source: the synthetic engine, a shard folder, or a real data set in Hand4Whole's layout."""
    if source.name == "synthetic":
        from bidrn.data.synth import SyntheticWholeBody

        return SyntheticWholeBody(input_size, seed=source.seed, length=source.length, body_model=body_model,
                                  **source.options)
    if source.name == "shards":
        from bidrn.data.synth import ShardDataset

        if not source.root:
            raise ValueError("data source 'shards' needs root: the folder written by `bidrn data synth`")
        return ShardDataset(source.root)
    if source.name in REAL:
        import bidrn.data.real as real
        from bidrn.data.augment import AugmentConfig

        if not source.root:
            raise ValueError(f"data source {source.name!r} needs root: its folder (docs/data.md)")
        kwargs = dict(source.options)
        if source.name in NEEDS_BODY_MODEL:
            kwargs.setdefault("body_model", body_model)
        split = "train" if train else EVAL_SPLITS.get(source.name, "train")
        cls = getattr(real, REAL[source.name])
        return cls(source.root, split=kwargs.pop("split", split), input_size=input_size,
                   augment=AugmentConfig() if train and augment else None, seed=source.seed, **kwargs)
    raise ValueError(f"unknown data source {source.name!r}; expected 'synthetic', 'shards' or one of {sorted(REAL)}")


def build_train_dataset(cfg: TrainConfig, input_size: tuple[int, int], body_model) -> Dataset:
    """The training stream: one source as it is, several mixed by their weights (bidrn.data.mix)."""
    datasets = {f"{i}:{s.name}": build_dataset(s, input_size, body_model, train=True, augment=cfg.augment)
                for i, s in enumerate(cfg.data)}
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    from bidrn.data.mix import MixedDataset

    weights = {k: s.weight for k, s in zip(datasets, cfg.data)}
    return MixedDataset(datasets, weights, seed=cfg.seed)


def build_val_dataset(cfg: TrainConfig, input_size: tuple[int, int], body_model) -> Dataset | None:
    return None if cfg.val is None else build_dataset(cfg.val, input_size, body_model, train=False)
