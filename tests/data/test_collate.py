import pytest
import torch

from pcseg.data.collate import collate_sparse


def _sample(coords, inverse, labels, point_labels, name):
    coords = torch.tensor(coords, dtype=torch.int32)
    n = len(inverse)
    return {
        "coords": coords, "feats": torch.arange(len(coords) * 2, dtype=torch.float32).view(-1, 2),
        "labels": torch.tensor(labels), "inverse": torch.tensor(inverse),
        "point_labels": torch.tensor(point_labels), "points": torch.full((n, 3), float(len(name))),
        "name": name,
    }


def test_two_sample_batch_by_hand():
    a = _sample([[0, 0, 0], [1, 0, 0]], [0, 1, 1], [3, -100], [3, 4, 4], "a")
    b = _sample([[5, 5, 5], [0, 1, 2], [2, 2, 2]], [2, 0, 1, 1], [1, 2, 0], [1, 2, 2, 0], "bb")
    batch = collate_sparse([a, b])
    assert batch["coords"].dtype == torch.int32
    assert batch["coords"].tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [1, 5, 5, 5], [1, 0, 1, 2], [1, 2, 2, 2]]
    assert batch["inverse"].tolist() == [0, 1, 1, 4, 2, 3, 3]
    assert batch["labels"].tolist() == [3, -100, 1, 2, 0]
    assert batch["point_labels"].tolist() == [3, 4, 4, 1, 2, 2, 0]
    assert batch["point_batch"].tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert batch["feats"].shape == (5, 2) and batch["points"].shape == (7, 3)
    assert batch["names"] == ["a", "bb"]
    # each point's batch row carries its own sample's coordinates
    for s, sample in enumerate([a, b]):
        rows = batch["inverse"][batch["point_batch"] == s]
        assert (batch["coords"][rows, 0] == s).all()
        assert torch.equal(batch["coords"][rows, 1:], sample["coords"][sample["inverse"]])


def test_errors():
    a = _sample([[0, 0, 0]], [0], [1], [1], "a")
    b = _sample([[0, 0]], [0], [1], [1], "b")
    with pytest.raises(ValueError, match="sample 1 \\('b'\\) 'coords' has shape \\(1, 2\\), expected \\(\\*, 3\\)"):
        collate_sparse([a, b])
    with pytest.raises(ValueError, match="at least one sample"):
        collate_sparse([])
    with pytest.raises(KeyError, match="lacks labels"):
        collate_sparse([{k: v for k, v in a.items() if k != "labels"}])
