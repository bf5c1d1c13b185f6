"""Several data sources in one training run, each drawn with its own weight.

Hand4Whole concatenates its training sets and samples them uniformly per set (MultipleDatasets); here each
position of an epoch picks a source with probability weight / sum(weights), then that source's next item from a
shuffled pass over it (so a small source repeats only after it has been seen whole). The plan is a function of
(seed, epoch) alone: the same seed gives the same epoch on every machine and in every worker.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class MixedDataset(torch.utils.data.Dataset):
    """sources: {name: dataset}; weights: {name: weight > 0} (default: equal); length: items per epoch
    (default: the sum of the sources' lengths). Each item is the chosen source's sample, unchanged.
    """

    def __init__(self, sources: Mapping[str, Sequence], weights: Mapping[str, float] | None = None,
                 length: int | None = None, seed: int = 0):
        if not sources:
            raise ValueError("MixedDataset needs at least one source")
        self.names = list(sources)
        self.sources = [sources[n] for n in self.names]
        weights = {n: 1.0 for n in self.names} if weights is None else dict(weights)
        if set(weights) != set(self.names):
            raise ValueError(f"weights name {sorted(weights)}, sources are {sorted(self.names)}: give one per source")
        if any(w <= 0 for w in weights.values()):
            raise ValueError(f"weights must be positive, got {weights}")
        empty = [n for n, s in zip(self.names, self.sources) if len(s) == 0]
        if empty:
            raise ValueError(f"sources {empty} are empty")
        total = sum(weights.values())
        self.weights = torch.tensor([weights[n] / total for n in self.names], dtype=torch.float64)
        self.length = sum(len(s) for s in self.sources) if length is None else int(length)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Plan the epoch: which source and which of its items fill each position. Sources that have their own
        set_epoch (augmentation) follow along."""
        self.epoch = epoch
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        self.choice = torch.multinomial(self.weights, self.length, replacement=True, generator=g)  # length
        self.item = torch.empty(self.length, dtype=torch.long)
        for k, source in enumerate(self.sources):
            where = (self.choice == k).nonzero().flatten()
            passes = -(-len(where) // len(source))
            order = torch.cat([torch.randperm(len(source), generator=g) for _ in range(max(passes, 1))])
            self.item[where] = order[:len(where)]
            if hasattr(source, "set_epoch"):
                source.set_epoch(epoch)

    def realised_proportions(self) -> dict[str, float]:
        """The fraction of this epoch's items drawn from each source (compare with the weights)."""
        counts = torch.bincount(self.choice, minlength=len(self.names)).double() / max(self.length, 1)
        return dict(zip(self.names, counts.tolist()))

    def source_of(self, index: int) -> str:
        return self.names[int(self.choice[index])]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.sources[int(self.choice[index])][int(self.item[index])]
