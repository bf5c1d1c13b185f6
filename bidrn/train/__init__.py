"""Training: configs, the eq. 12 loss, the (distributed, resumable) loop, checkpoints and weights."""
from bidrn.train.config import DataSource, TrainConfig, load_config
from bidrn.train.trainer import TrainResult, train

__all__ = ["DataSource", "TrainConfig", "TrainResult", "load_config", "train"]
