"""Training configs are data: a dataclass that reads and writes YAML, one file per recipe (configs/*.yaml)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml


@dataclass
class DataSource:
    """One data source and its share of each batch.

    name: "synthetic" (the on-the-fly engine), "shards" (a folder written by `bidrn data synth`), or a real data
    set: "human36m", "mscoco", "mpii" (training), "ehf", "agora" (evaluation). root: its folder.
    """

    name: str = "synthetic"
    weight: float = 1.0
    root: str | None = None
    length: int = 100_000  # samples in an epoch of the synthetic engine
    seed: int = 0
    options: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: str = "bidrn-tiny"
    data: list[DataSource] = field(default_factory=lambda: [DataSource()])
    val: DataSource | None = field(default_factory=lambda: DataSource(length=64, seed=1_000_003))
    body_model: str | None = None  # SMPL-X file or folder; None: $BIDRN_BODY_MODEL or the embedded model
    batch_size: int = 24  # global: split over processes, then over grad_accum micro-batches
    grad_accum: int = 1
    epochs: int = 14
    steps_per_epoch: int | None = None  # None: one pass over the data
    lr: float = 1e-4
    lr_milestones: list[int] = field(default_factory=list)  # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    augment: bool = True
    pose_loss: str = "axis_angle"  # the paper's L1 on axis-angle; "rotmat" avoids the jump at 180 degrees
    seed: int = 0
    out: str = "runs/bidrn-tiny"
    num_workers: int = 0
    amp: bool = False  # bfloat16 autocast on CUDA
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm across processes (CUDA only)
    log_every: int = 10
    ckpt_every: int = 200  # steps
    val_every: int = 1  # epochs; 0 = never
    max_steps: int | None = None  # stop early (tests, smoke runs)

    def __post_init__(self):
        self.data = [d if isinstance(d, DataSource) else DataSource(**d) for d in self.data]
        if isinstance(self.val, dict):
            self.val = DataSource(**self.val)
        if self.pose_loss not in ("axis_angle", "rotmat"):
            raise ValueError(f"pose_loss must be 'axis_angle' or 'rotmat', got {self.pose_loss!r}")
        if not self.data:
            raise ValueError("a training config needs at least one data source")
        if self.batch_size < 1 or self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of grad_accum "
                             f"({self.grad_accum})")

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_config(source: "TrainConfig | dict | str | Path") -> TrainConfig:
    """A TrainConfig from itself, a dict, or a YAML file (unknown keys are an error, not silently ignored)."""
    if isinstance(source, TrainConfig):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} not found (shipped recipes live in configs/*.yaml)")
        source = yaml.safe_load(path.read_text()) or {}
        if not isinstance(source, dict):
            raise ValueError(f"{path}: expected a YAML mapping of TrainConfig fields")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(source) - known)
    if unknown:
        raise ValueError(f"unknown training config keys {unknown}; expected some of {sorted(known)}")
    return TrainConfig(**source)
