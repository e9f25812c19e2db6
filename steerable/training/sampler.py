"""A shuffling sampler whose position survives a restart, so a resumed run sees exactly the batches the
uninterrupted run would have seen (Lightning restores loop counters but not a plain sampler's position)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Epoch e visits a permutation seeded by (seed, e); each rank takes every world_size-th index."""

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        if num_samples < world_size:
            raise ValueError(f"{num_samples} training examples cannot be shared across {world_size} processes")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0  # indices of the current epoch already consumed before a restart

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, consumed: int) -> None:
        """Resume mid-epoch: the next iteration starts after `consumed` of this rank's indices."""
        self._skip = consumed

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.num_samples))
        else:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        start, self._skip = self._skip, 0
        return iter(order[start:])

    def __len__(self) -> int:
        return self.num_samples // self.world_size
