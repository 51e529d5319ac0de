"""Two augmented views of the same points: correspondence, independence, batching, registry."""
import numpy as np
import pytest
import torch

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import SegmentationDataset
from pcseg.data.registry import DATASETS
from pcseg.data.transforms import build_transforms
from pcseg.data.views import VIEW2_KEYS, TwoViewDataset, collate_two_views

AUGMENT = [{"name": "RandomRotateZ"}, {"name": "RandomScale", "scale": [0.8, 1.2]}, {"name": "Jitter"}]


class Reader:
    NUM_CLASSES = 3
    CLASS_NAMES = ("a", "b", "c")

    def __init__(self, n: int = 400) -> None:
        rng = np.random.default_rng(0)
        self.scenes = ["r0", "r1"]
        self.data = {s: {"coord": rng.uniform(0, 2, (n, 3)).astype(np.float32),
                         "color": rng.uniform(0, 255, (n, 3)).astype(np.float32),
                         "segment": rng.integers(0, 3, n).astype(np.int64)} for s in self.scenes}

    def load(self, name):
        return {**{k: v.copy() for k, v in self.data[name].items()}, "name": name}


def _dataset(view_transforms=AUGMENT, shared=None) -> TwoViewDataset:
    base = SegmentationDataset(Reader(), 0.1, transforms=build_transforms(shared) if shared else None, seed=3)
    return TwoViewDataset(base, build_transforms(view_transforms))


def test_views_hold_the_same_points_differently_augmented():
    ds = _dataset()
    s = ds[0]
    assert len(s["inverse"]) == len(s["view2_inverse"]) == 400
    assert not torch.equal(s["coords"], s["view2_coords"])
    # labels follow the points: each point's voxel label agrees in both views for fully labelled scenes
    seg = torch.from_numpy(Reader().data["r0"]["segment"])
    assert torch.equal(s["point_labels"], seg)
    assert (s["labels"][s["inverse"]] == seg).float().mean() > 0.5
    assert (s["view2_labels"][s["view2_inverse"]] == seg).float().mean() > 0.5


def test_views_are_seeded_by_seed_epoch_index_and_view():
    a, b = _dataset(), _dataset()
    assert torch.equal(a[1]["view2_coords"], b[1]["view2_coords"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["view2_coords"], b[1]["view2_coords"])
    without = _dataset(view_transforms=[])
    s = without[0]
    assert torch.equal(s["coords"], s["view2_coords"]) and torch.equal(s["inverse"], s["view2_inverse"])


def test_shared_transforms_may_drop_points_but_view_transforms_may_not():
    shared = _dataset(shared=[{"name": "RandomDropout", "ratio": 0.5, "p": 1.0, "keep_budget": False}])[0]
    assert len(shared["inverse"]) == len(shared["view2_inverse"]) == 200
    dropping = _dataset(view_transforms=[{"name": "RandomDropout", "ratio": 0.5, "p": 1.0, "keep_budget": False}])
    with pytest.raises(ValueError, match="changed the number of points"):
        dropping[0]


def test_collate_two_views_offsets_each_view():
    ds = _dataset()
    samples = [ds[0], ds[1]]
    batch = ds.collate_fn(samples)
    plain = collate_sparse(samples)
    assert all(torch.equal(batch[k], plain[k]) for k in ("coords", "feats", "labels", "inverse"))
    m2 = len(samples[0]["view2_coords"])
    assert torch.equal(batch["view2_inverse"], torch.cat([samples[0]["view2_inverse"], samples[1]["view2_inverse"] + m2]))
    assert batch["view2_coords"][:, 0].tolist() == [0] * m2 + [1] * len(samples[1]["view2_coords"])
    with pytest.raises(KeyError, match="TwoViewDataset"):
        collate_two_views([{k: v for k, v in samples[0].items() if k not in VIEW2_KEYS}])


def test_registry_wraps_only_the_two_view_splits(tmp_path):
    from pcseg.data.synthetic import make_scannet
    make_scannet(tmp_path, num_scenes=2, seed=0, num_points=1000)
    spec = {"name": "TwoViews", "dataset": "ScanNet", "root": str(tmp_path), "voxel_size": 0.3,
            "view_transforms": AUGMENT}
    train = DATASETS.build({**spec, "split": "train"})
    val = DATASETS.build({**spec, "split": "val"})
    assert isinstance(train, TwoViewDataset) and train.num_classes == 20
    assert isinstance(val, SegmentationDataset)
    with pytest.raises(TypeError, match="unknown key"):
        DATASETS.build({**spec, "split": "train", "voxel_sise": 0.1})
