"""Data loaders for the trainer: a resumable, sharded epoch sampler and a loader factory.

:class:`EpochSampler` plays the role of ``DistributedSampler`` (one process is world size 1).

The order of epoch ``e`` is a permutation drawn from ``seed + e`` alone, so it is the same in an
uninterrupted run and in a resumed one; :meth:`EpochSampler.set_epoch` can start part-way into an
epoch, which is how a resumed run skips the iterations it already did without loading them.
Rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, …`` of the epoch order, so a batch of
``B`` per process on ``W`` processes covers the same samples as a batch of ``W * B`` on one.

Loader workers persist across epochs (starting them costs the first iteration of every epoch about
as much as a step); a dataset with ``set_epoch`` is wrapped in :class:`SharedEpoch` so the epoch
set in the main process reaches the workers' copies.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import DistInfo
from .seeding import worker_init_fn

__all__ = ["EpochSampler", "SharedEpoch", "make_loader"]


class EpochSampler(Sampler[int]):
    """Dataset indices for one process and one epoch.

    num_samples: dataset length. shuffle: permute each epoch (seeded by ``seed + epoch``).
    pad: repeat the first samples so every rank gets ``ceil(num_samples / world_size)`` (training,
    where ranks must step together); without it the shards are disjoint and may differ by one
    (evaluation, where every sample must count once).
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        if num_samples <= 0:
            raise ValueError(f"EpochSampler: the dataset is empty (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"EpochSampler: rank must be in [0, {world_size}), got {rank}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip this rank's first ``start`` samples of it."""
        if start < 0 or start > self.shard_size:
            raise ValueError(f"EpochSampler.set_epoch: start must be in [0, {self.shard_size}], got {start}")
        self.epoch = epoch
        self.start = start

    @property
    def shard_size(self) -> int:
        """Samples this rank gets in a whole epoch."""
        if self.pad:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        if self.pad:
            total = self.shard_size * self.world_size
            order = order.repeat(-(-total // self.num_samples))[:total]
        shard = order[self.rank::self.world_size]
        return iter(shard[self.start:].tolist())

    def __len__(self) -> int:
        return self.shard_size - self.start


class SharedEpoch(Dataset):
    """``dataset`` whose :meth:`set_epoch` reaches persistent loader workers.

    Workers hold copies of the dataset made when they started, so an epoch set on the main
    process's copy would not reach them; here it is written to a shared-memory int64 that each copy
    reads (and passes to ``dataset.set_epoch``) before every item. ``dataset`` must have ``set_epoch``.
    """

    def __init__(self, dataset: Dataset) -> None:
        if not callable(getattr(dataset, "set_epoch", None)):
            raise TypeError(f"SharedEpoch: {type(dataset).__name__} has no set_epoch(epoch)")
        self.dataset = dataset
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` here and, from their next item on, in every worker."""
        self._epoch.fill_(int(epoch))
        self.dataset.set_epoch(int(epoch))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        self.dataset.set_epoch(int(self._epoch))
        return self.dataset[index]


def make_loader(dataset: Dataset, *, batch_size: int, collate_fn: Callable[[Sequence[Any]], Any], train: bool,
                seed: int, dist: DistInfo = DistInfo(), num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``dataset`` with an :class:`EpochSampler`, seeded workers and its own generator.

    train True: shuffled, padded shards (ranks step together); False: in order, disjoint shards.
    With ``num_workers > 0`` the workers persist across epochs and a dataset with ``set_epoch`` is
    wrapped in :class:`SharedEpoch` (``loader.dataset.dataset`` is then the original). Worker base seeds
    come from the loader's ``generator`` when the workers start (the trainer reseeds it each epoch, which
    reaches workers started in that epoch), so per-sample randomness must come from the dataset's
    (seed, epoch, index) stream, as :class:`pcseg.data.datasets.SegmentationDataset` does, for an
    interrupted and resumed run to see the same samples as an uninterrupted one.
    """
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=dist.rank,
                           world_size=dist.world_size, pad=train)
    persistent = num_workers > 0
    if persistent and callable(getattr(dataset, "set_epoch", None)):
        dataset = SharedEpoch(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, worker_init_fn=worker_init_fn,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=persistent)
