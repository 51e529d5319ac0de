"""voxelize against a brute-force numpy reference."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from pcseg.sparse import CoordinateOverflowError, voxelize
from pcseg.sparse.voxelize import voxel_sizes


def brute_force(points, voxel_size, feats, labels, ignore=-100):
    groups = defaultdict(list)
    for i, p in enumerate(points):
        groups[tuple(np.floor(p / voxel_size).astype(np.int64))].append(i)
    ref = {}
    for key, idx in groups.items():
        votes = Counter(int(labels[i]) for i in idx if labels[i] != ignore)
        if votes:
            top = max(votes.values())
            label = min(l for l, c in votes.items() if c == top)
        else:
            label = ignore
        ref[key] = (feats[idx].mean(0), feats[idx[0]], label, idx[0], idx)
    return ref


@pytest.mark.parametrize("voxel_size", [0.05, 0.2])
def test_voxelize_equals_brute_force(voxel_size):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (5000, 3)).astype(np.float32)
    pts[:500] = pts[:1][0] + rng.normal(0, 0.01, (500, 3))  # a dense cluster with many collisions
    feats = rng.normal(size=(5000, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 5000)
    labels[rng.random(5000) < 0.5] = -100
    v = voxelize(torch.from_numpy(pts), voxel_size, torch.from_numpy(feats), torch.from_numpy(labels))
    ref = brute_force(pts, voxel_size, feats, labels)
    assert v.coords.shape[0] == len(ref)
    keys = [tuple(c) for c in v.coords.tolist()]
    assert keys == sorted(keys)
    for m, key in enumerate(keys):
        mean, first, label, first_idx, idx = ref[key]
        np.testing.assert_allclose(v.feats[m].numpy(), mean, rtol=1e-5, atol=1e-6)
        assert int(v.labels[m]) == label
        assert int(v.unique_index[m]) == first_idx
        assert set(np.nonzero(v.inverse.numpy() == m)[0].tolist()) == set(idx)
    vf = voxelize(torch.from_numpy(pts), voxel_size, torch.from_numpy(feats), reduce="first")
    np.testing.assert_array_equal(vf.feats.numpy(), feats[vf.unique_index.numpy()])


def test_ignore_wins_only_when_alone_and_ties_go_to_smallest_id():
    pts = torch.tensor([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [1.5, 0.1], [1.6, 0.2], [2.5, 0.5], [2.6, 0.5]])
    labels = torch.tensor([-100, -100, 3, 2, 1, -100, -100])
    v = voxelize(pts, 1.0, labels=labels)
    assert v.labels.tolist() == [3, 1, -100]


def test_batch_keeps_scenes_apart():
    pts = torch.zeros(4, 3)
    v = voxelize(pts, 0.1, batch=torch.tensor([0, 1, 1, 0]))
    assert v.coords.tolist() == [[0, 0, 0, 0], [1, 0, 0, 0]]
    assert v.inverse.tolist() == [0, 1, 1, 0]


def test_bad_input_raises():
    with pytest.raises(ValueError, match="NaN"):
        voxelize(torch.tensor([[0.0, float("nan"), 0.0]]), 0.1)
    with pytest.raises(ValueError, match="feats has 1 rows"):
        voxelize(torch.zeros(2, 3), 0.1, feats=torch.zeros(1, 2))
    with pytest.raises(ValueError, match="expected a finite number > 0"):
        voxelize(torch.zeros(2, 3), 0.0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32])
def test_integer_points_use_the_fractional_voxel_size(dtype):
    # hand-computed floor(p / 1.5) = [0, 0, 1, 2, 2]; a cast of 1.5 to int would give [0, 1, 2, 3, 4]
    pts = torch.tensor([[0], [1], [2], [3], [4]], dtype=dtype)
    v = voxelize(pts, 1.5)
    assert v.coords.tolist() == [[0], [1], [2]]
    assert v.inverse.tolist() == [0, 0, 1, 2, 2]
    # at 0.5 (cast to int: 0, "must be positive") integer points land on even voxels
    v = voxelize(pts, 0.5)
    assert v.coords.tolist() == [[0], [2], [4], [6], [8]]
    # per-axis sizes, one fractional
    v = voxelize(torch.tensor([[3, 3], [4, 4]], dtype=dtype), [1.5, 2])
    assert v.coords.tolist() == [[2, 1], [2, 2]]


def test_zero_dimensional_array_voxel_size_is_one_value():
    assert voxel_sizes(np.array(0.25), 3) == [0.25]
    with pytest.raises(ValueError, match="^voxel_size: expected a finite number > 0, got -1.0$"):
        voxel_sizes(np.array(-1.0), 3)


@pytest.mark.parametrize("size, message", [
    (float("nan"), "^voxel_size: expected a finite number > 0, got nan$"),
    (float("inf"), "^voxel_size: expected a finite number > 0, got inf$"),
    (0.0, "^voxel_size: expected a finite number > 0, got 0.0$"),
    (-0.1, "^voxel_size: expected a finite number > 0, got -0.1$"),
    (True, "^voxel_size: expected a finite number > 0, got True$"),
    ("0.1", "^voxel_size: expected a finite number > 0, got '0.1'$"),
    ([0.1, 0.0, 0.1], r"^voxel_size\[1\]: expected a finite number > 0, got 0.0$"),
    (torch.tensor([0.1, -1.0, 0.1]), r"^voxel_size\[1\]: expected a finite number > 0, got -1.0$"),
    ([0.1, 0.1], r"^voxel_size: expected a finite number > 0 or 3 \(one per axis\), got \[0.1, 0.1\]$"),
    ([], r"^voxel_size: expected a finite number > 0 or 3 \(one per axis\), got \[\]$"),
    (torch.full((4,), 0.1), r"^voxel_size: expected a finite number > 0 or 3 \(one per axis\)")])
def test_bad_voxel_size_raises_with_message(size, message):
    with pytest.raises(ValueError, match=message):
        voxelize(torch.zeros(2, 3, dtype=torch.int64), size)


def test_huge_grid_raises_overflow_not_wraps():
    with pytest.raises(CoordinateOverflowError, match="axis 0"):
        voxelize(torch.tensor([[1e30, 0.0, 0.0]]), 0.05)
    with pytest.raises(CoordinateOverflowError, match="axis 2"):   # integer points, huge quotient
        voxelize(torch.tensor([[0, 0, 2**62]], dtype=torch.int64), 0.5)
