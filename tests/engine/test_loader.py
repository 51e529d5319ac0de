import os

import pytest
import torch

from pcseg.engine.loader import EpochSampler, make_loader


def test_shards_cover_the_epoch_order_like_one_process():
    one = list(EpochSampler(10, shuffle=True, seed=3))
    shards = [list(EpochSampler(10, shuffle=True, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert [i for pair in zip(*shards) for i in pair] == one  # rank r takes positions r, r+2, …
    assert sorted(one) == list(range(10))


def test_epochs_differ_and_are_reproducible():
    s = EpochSampler(20, shuffle=True, seed=0)
    s.set_epoch(1)
    first = list(s)
    s.set_epoch(2)
    assert list(s) != first
    s.set_epoch(1)
    assert list(s) == first


def test_start_skips_the_done_samples():
    s = EpochSampler(9, shuffle=True, seed=0)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, start=5)
    assert list(s) == full[5:] and len(s) == 4


def test_padding_and_disjoint_evaluation_shards():
    padded = [list(EpochSampler(5, shuffle=False, rank=r, world_size=2)) for r in range(2)]
    assert padded == [[0, 2, 4], [1, 3, 0]]
    disjoint = [list(EpochSampler(5, shuffle=False, rank=r, world_size=2, pad=False)) for r in range(2)]
    assert disjoint == [[0, 2, 4], [1, 3]]


def test_bad_start_raises():
    with pytest.raises(ValueError, match=r"start must be in \[0, 3\]"):
        EpochSampler(3, shuffle=False).set_epoch(0, start=4)


class _EpochEcho(torch.utils.data.Dataset):
    """Item i is (epoch set on this copy, i, pid of the process that loaded it)."""

    def __init__(self) -> None:
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return self.epoch, index, os.getpid()


def test_workers_persist_and_see_each_epoch():
    loader = make_loader(_EpochEcho(), batch_size=2, collate_fn=list, train=True, seed=0, num_workers=1)
    pids = set()
    for epoch in range(3):  # as the trainer does: sampler, then dataset, then iterate
        loader.sampler.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        items = [item for batch in loader for item in batch]
        assert sorted(i for _, i, _ in items) == [0, 1, 2, 3]
        assert {e for e, _, _ in items} == {epoch}  # the worker's copy saw the main process's epoch
        pids |= {pid for _, _, pid in items}
    assert len(pids) == 1 and os.getpid() not in pids  # one worker process, kept across the epochs
