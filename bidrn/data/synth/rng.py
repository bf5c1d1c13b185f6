"""Per-sample random streams: sample i of a seed is the same whatever batch it is generated in.

Every sample gets its own ``torch.Generator`` seeded from (seed, sample index, stream name), so batching,
shuffling, DataLoader workers and shard boundaries never change a sample, and adding draws to one stream
(say, the background) leaves every other stream (poses, camera, ...) as it was.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import Tensor


def _seed(seed: int, index: int, stream: str) -> int:
    state = np.random.SeedSequence([seed, index, zlib.crc32(stream.encode())]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # 63 bits: manual_seed takes a non-negative int64


class BatchRandom:
    """Draws of shape B x ..., row b from sample ``indices[b]``'s own generator for this stream."""

    def __init__(self, seed: int, indices: list[int], stream: str):
        self.generators = [torch.Generator().manual_seed(_seed(seed, i, stream)) for i in indices]

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, *shape: int, low: float | Tensor = 0.0, high: float | Tensor = 1.0) -> Tensor:
        u = torch.stack([torch.rand(shape, generator=g) for g in self.generators])
        return low + (high - low) * u

    def normal(self, *shape: int, std: float | Tensor = 1.0) -> Tensor:
        return std * torch.stack([torch.randn(shape, generator=g) for g in self.generators])

    def choice(self, probs: list[float] | Tensor) -> Tensor:
        """B indices drawn from the (unnormalised) probabilities."""
        p = torch.as_tensor(probs, dtype=torch.float32)
        return torch.stack([torch.multinomial(p, 1, generator=g)[0] for g in self.generators])

    def chance(self, p: float | Tensor) -> Tensor:
        """B booleans, each true with probability p."""
        return self.uniform() < p
