"""The synthetic whole-body data engine: posed, dressed, lit and framed body-model renders with exact labels."""
from .engine import SynthConfig, SynthEngine, SyntheticWholeBody, generate, unbatch
from .shards import ShardDataset, write_shards

__all__ = ["ShardDataset", "SynthConfig", "SynthEngine", "SyntheticWholeBody", "generate", "unbatch", "write_shards"]
