"""A shuffling sampler whose position survives a restart, so a resumed run sees exactly the batches the
uninterrupted run would have seen (Lightning restores loop counters but not a plain sampler's position)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Epoch e visits a permutation seeded by (seed, e); each rank takes every world_size-th index.

    Training drops the last `num_samples % world_size` indices so every rank makes the same number of steps;
    evaluation (`even=False`) keeps them all, ranks reducing sums rather than stepping together.
    The rank is set when the trainer knows it (`shard`), before the first batch is drawn.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
    ):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.even = even
        self.epoch = 0
        self._skip = 0  # indices of the current epoch already consumed before a restart
        self.shard(rank, world_size)

    def shard(self, rank: int, world_size: int) -> None:
        if self.even and self.num_samples < world_size:
            raise ValueError(
                f"{self.num_samples} training examples cannot be shared across {world_size} processes"
            )
        self.rank, self.world_size = rank, world_size

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
        usable = len(order) - len(order) % self.world_size if self.even else len(order)
        return order[self.rank : usable : self.world_size]

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        start, self._skip = self._skip, 0
        return iter(order[start:])

    def __len__(self) -> int:
        usable = self.num_samples - self.num_samples % self.world_size if self.even else self.num_samples
        return len(range(self.rank, usable, self.world_size))


class ShardByRank(Callback):
    """Give every ResumableSampler of a fit this process's rank once the trainer knows it, and let ranks > 0
    draw different random numbers (online methods sample their own completions; rank 0 is unchanged, so a
    1-process run is the same as before)."""

    def __init__(self, samplers: list[ResumableSampler]) -> None:
        self.samplers = samplers

    def setup(self, trainer, pl_module, stage: str) -> None:
        for sampler in self.samplers:
            sampler.shard(trainer.global_rank, trainer.world_size)
        if trainer.global_rank > 0:
            torch.manual_seed(torch.initial_seed() + trainer.global_rank)


def make_loader(
    dataset,
    batch_size: int,
    collate_fn,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with its own generator: creating its iterator must not draw from the global RNG, or a
    resumed run's dropout masks would drift from the uninterrupted run's."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


def shuffled_loader(
    items: Sequence,
    batch_size: int,
    collate_fn=None,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool | None = None,
) -> tuple[ResumableSampler, DataLoader]:
    """The training loader every method uses: shuffled per epoch by `seed`, sharded by rank, resumable
    mid-epoch (the sampler is what a checkpoint records); `drop_last` None = full batches only when there is
    at least one.
    Online methods pass no collate: a batch of prompts stays a plain list."""
    sampler = ResumableSampler(len(items), seed=seed)
    loader = make_loader(
        items,
        batch_size,
        collate_fn or as_list,
        sampler=sampler,
        seed=seed,
        num_workers=num_workers,
        drop_last=len(items) >= batch_size if drop_last is None else drop_last,
    )
    return sampler, loader


def as_list(batch: list) -> list:
    """Collate for online methods: a batch of prompts stays a plain list (sampling renders them itself)."""
    return batch
