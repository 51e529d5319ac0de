import pytest

from pcseg.engine.loader import EpochSampler


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
