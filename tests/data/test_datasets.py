from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from pcseg.data.budget import make_budget
from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import ImageFolderReader, ImageSegmentationDataset, SegmentationDataset
from pcseg.data.registry import DATASETS
from pcseg.data.transforms import build_transforms
from pcseg.engine.build import build_dataset
from pcseg.engine.config import ConfigKeyError, config_from_dict
from pcseg.utils.errors import BadArgumentError, InputError
from pcseg.utils.yaml_io import load_yaml_text

IGNORE = -100


class ArrayReader:
    """In-memory stand-in for a pcseg.data.formats reader."""

    NUM_CLASSES = 4
    CLASS_NAMES = ("a", "b", "c", "d")

    def __init__(self, scenes: dict, split: str = "train") -> None:
        self._scenes, self.split = scenes, split
        self.scenes = list(scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, name: str) -> dict:
        return {**{k: v.copy() for k, v in self._scenes[name].items()}, "name": name}


def _room(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    coord = rng.uniform([-1, -1, 0], [1, 1, 0.5], (n, 3)).astype(np.float32)
    segment = (np.floor(coord[:, 0] * 3) % 4).astype(np.int64)  # spatially coherent classes
    flip = rng.random(n) < 0.3
    segment[flip] = rng.integers(0, 4, flip.sum())
    segment[rng.random(n) < 0.1] = IGNORE
    return {"coord": coord, "color": rng.uniform(0, 255, (n, 3)).astype(np.float32),
            "strength": rng.random((n, 1)).astype(np.float32), "segment": segment,
            "instance": np.full(n, -1, np.int64)}


def _reader(seed: int = 0) -> ArrayReader:
    return ArrayReader({"room_a": _room(4000, seed), "Area_1/room_b": _room(2500, seed + 1)})


def _brute_force_check(sample: dict, points: np.ndarray, labels: np.ndarray, feats: np.ndarray, voxel: float) -> None:
    """Voxels, features and labels recomputed point by point, independently of pcseg.sparse."""
    grid = np.floor(points / voxel).astype(np.int64)
    grid -= grid.min(axis=0)
    coords, inverse = sample["coords"].numpy(), sample["inverse"].numpy()
    assert sample["coords"].dtype == torch.int32 and coords.min(axis=0).tolist() == [0] * points.shape[1]
    np.testing.assert_array_equal(coords[inverse], grid)
    assert len({tuple(c) for c in coords.tolist()}) == len(coords)
    members: dict[int, list[int]] = {}
    for i, v in enumerate(inverse.tolist()):
        members.setdefault(v, []).append(i)
    for v, idx in members.items():
        np.testing.assert_allclose(sample["feats"][v].numpy(), feats[idx].mean(axis=0), rtol=1e-5, atol=1e-4)
        votes = Counter(int(labels[i]) for i in idx if labels[i] != IGNORE)
        if not votes:
            assert sample["labels"][v] == IGNORE
        else:
            top = max(votes.values())
            assert int(sample["labels"][v]) in {c for c, k in votes.items() if k == top}


def test_full_supervision_sample_matches_brute_force():
    reader = _reader()
    ds = SegmentationDataset(reader, voxel_size=0.1)
    sample = ds[1]
    raw = reader.load("Area_1/room_b")
    assert sample["name"] == "Area_1/room_b" and len(ds) == 2 and ds.num_classes == 4
    assert sample["points"].dtype == torch.float32 and sample["feats"].dtype == torch.float32
    assert sample["labels"].dtype == torch.int64 and sample["inverse"].dtype == torch.int64
    np.testing.assert_array_equal(sample["points"].numpy(), raw["coord"])
    np.testing.assert_array_equal(sample["point_labels"].numpy(), raw["segment"])
    _brute_force_check(sample, raw["coord"], raw["segment"], raw["color"], 0.1)


def test_budget_voxel_labels_are_a_majority_vote_over_budget_points(tmp_path):
    reader = _reader()
    budget = make_budget(reader, "ratio", 0.05, seed=0, out_dir=tmp_path / "budget")
    ds = SegmentationDataset(reader, voxel_size=0.1, budget=tmp_path / "budget")
    for index, name in enumerate(reader.scenes):
        sample = ds[index]
        raw = reader.load(name)
        budgeted = np.full_like(raw["segment"], IGNORE)
        idx = budget.indices(name)
        budgeted[idx] = raw["segment"][idx]
        _brute_force_check(sample, raw["coord"], budgeted, raw["color"], 0.1)
        np.testing.assert_array_equal(sample["point_labels"].numpy(), raw["segment"])
        assert 0 < (sample["labels"] != IGNORE).sum() <= len(idx)


def test_transforms_are_seeded_per_epoch_and_index(tmp_path):
    make_budget(_reader(), "points_per_scene", 30, seed=0, out_dir=tmp_path / "b")
    pipeline = build_transforms([{"name": "RandomRotateZ"}, {"name": "RandomScale"}, {"name": "NormalizeColor"},
                                 {"name": "RandomDropout", "ratio": 0.3, "p": 1.0}])
    ds = SegmentationDataset(_reader(), voxel_size=0.05, transforms=pipeline, budget=tmp_path / "b", loop=2, seed=5)
    assert len(ds) == 4
    a, b = ds[0], ds[0]
    assert torch.equal(a["points"], b["points"]) and torch.equal(a["coords"], b["coords"])
    assert not torch.equal(ds[2]["points"][:10], a["points"][:10])  # second loop, other augmentation
    assert len(a["points"]) == 4000 - 1200 and a["feats"].abs().max() <= 1
    assert (a["labels"] != IGNORE).sum() >= 1
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["points"][:10], a["points"][:10])
    ds.set_epoch(0)
    assert torch.equal(ds[0]["points"], a["points"])
    with pytest.raises(IndexError, match="index 4 out of range"):
        ds[4]


def test_strength_features_and_collate_through_a_dataloader():
    ds = SegmentationDataset(_reader(), voxel_size=0.2, feature_keys=("strength", "color"))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_sparse)
    batch = next(iter(loader))
    assert batch["feats"].shape[1] == 4 and batch["coords"].shape[1] == 4
    assert batch["names"] == ["room_a", "Area_1/room_b"] and batch["points"].shape == (6500, 3)
    with pytest.raises(KeyError, match="feature key 'normal' missing"):
        SegmentationDataset(_reader(), voxel_size=0.2, feature_keys=("normal",))[0]


def test_budget_of_other_data_is_refused(tmp_path):
    make_budget(_reader(seed=0), "ratio", 0.01, seed=0, out_dir=tmp_path / "b")
    ds = SegmentationDataset(_reader(seed=10), voxel_size=0.1, budget=tmp_path / "b")
    with pytest.raises(ValueError, match="labels of scene 'room_a' do not match"):
        ds[0]
    other = ArrayReader({"room_c": _room(100, 0)})
    with pytest.raises(ValueError, match=r"1 scene\(s\) of ArrayReader are not in the budget"):
        SegmentationDataset(other, voxel_size=0.1, budget=tmp_path / "b")


def _write_images(root, split="train", size=(6, 8)):
    rng = np.random.default_rng(0)
    (root / split / "images").mkdir(parents=True)
    (root / split / "labels").mkdir(parents=True)
    for name in ("img0", "img1"):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, 3, size, dtype=np.uint8)
        label[0, :] = 255
        Image.fromarray(image).save(root / split / "images" / f"{name}.png")
        Image.fromarray(label).save(root / split / "labels" / f"{name}.png")
    return image, label  # of img1


def test_image_folder_is_a_2d_dataset_with_pixel_budgets(tmp_path):
    image, label = _write_images(tmp_path / "imgs")
    reader = ImageFolderReader(tmp_path / "imgs", "train", num_classes=3)
    scene = reader.load("img1")
    assert scene["coord"].shape == (48, 2) and scene["coord"][9].tolist() == [1, 1]  # (column, row)
    np.testing.assert_array_equal(scene["segment"], np.where(label == 255, IGNORE, label.astype(np.int64)).ravel())
    make_budget(reader, "points_per_scene", 5, seed=0, out_dir=tmp_path / "b")
    ds = ImageSegmentationDataset(tmp_path / "imgs", "train", num_classes=3, budget=tmp_path / "b")
    sample = ds[1]
    assert sample["coords"].shape == (48, 2) and (sample["labels"] != IGNORE).sum() == 5
    np.testing.assert_array_equal(sample["feats"][sample["inverse"]].numpy(), image.reshape(-1, 3).astype(np.float32))
    assert sample["points"][:, 2].abs().sum() == 0
    np.testing.assert_array_equal(sample["coords"].numpy()[sample["inverse"].numpy()], scene["coord"].astype(np.int32))
    batch = collate_sparse([ds[0], sample])
    assert batch["coords"].shape == (96, 3)


def test_registry_builds_image_folder_from_config(tmp_path):
    _write_images(tmp_path / "imgs")
    assert {"ScanNet", "S3DIS", "SemanticKITTI", "ImageFolder"} <= set(DATASETS)
    ds = DATASETS.build({"name": "ImageFolder", "root": str(tmp_path / "imgs"), "split": "train", "num_classes": 3,
                         "transforms": [{"name": "RandomFlip", "p": 1.0}, {"name": "NormalizeColor"}]})
    sample = ds[0]
    assert sample["coords"].shape == (48, 2) and sample["coords"].min() == 0
    assert sample["points"][:, :2].max() <= 0 and sample["feats"].abs().max() <= 1
    with pytest.raises(TypeError, match="dataset 'ImageFolder': unknown key\\(s\\) voxel_size"):
        DATASETS.build({"name": "ImageFolder", "root": "x", "split": "train", "num_classes": 3, "voxel_size": 1})
    with pytest.raises(ValueError, match="labels expected in \\[0, 2\\) or 255, got \\[2\\]"):
        ImageFolderReader(tmp_path / "imgs", "train", num_classes=2).load("img0")


@pytest.mark.parametrize("name, reader_attr, extra, features, voxel", [
    ("ScanNet", "ScanNetReader", {"instances": False}, ("color",), 0.02),
    ("S3DIS", "S3DISReader", {"test_area": 2, "cache_dir": "/cache/s3dis"}, ("color",), 0.05),
    ("SemanticKITTI", "SemanticKITTIReader", {"sequences": ["00"], "labels": False, "camera": 3}, ("strength",), 0.05),
])
def test_registry_wires_the_format_readers(monkeypatch, name, reader_attr, extra, features, voxel):
    import pcseg.data.datasets as datasets

    calls = []

    def fake_reader(root, split, **kwargs):
        calls.append((root, split, kwargs))
        return _reader()

    monkeypatch.setattr(datasets, reader_attr, fake_reader)
    ds = DATASETS.build({"name": name, "root": "/data/x", "split": "val", "loop": 3, **extra,
                         "transforms": [{"name": "RandomFlip"}]})
    assert calls == [("/data/x", "val", extra)]
    assert ds.feature_keys == features and ds.voxel_size == voxel and len(ds) == 6
    assert ds[0]["feats"].shape[1] == {"color": 3, "strength": 1}[features[0]]


@pytest.mark.parametrize("voxel_size, message", [
    (float("nan"), "SegmentationDataset.voxel_size: expected a finite number > 0, got nan"),
    (float("inf"), "SegmentationDataset.voxel_size: expected a finite number > 0, got inf"),
    (0, "SegmentationDataset.voxel_size: expected a finite number > 0, got 0"),
    (-0.1, "SegmentationDataset.voxel_size: expected a finite number > 0, got -0.1"),
    (np.float32("nan"), "SegmentationDataset.voxel_size: expected a finite number > 0, got nan"),
    ((0.1, float("nan"), 0.1), "SegmentationDataset.voxel_size[1]: expected a finite number > 0, got nan"),
    ([0.1, 0.1, -float("inf")], "SegmentationDataset.voxel_size[2]: expected a finite number > 0, got -inf"),
    ((0.0, 0.1, 0.1), "SegmentationDataset.voxel_size[0]: expected a finite number > 0, got 0.0"),
    ((), "SegmentationDataset.voxel_size: expected a finite number > 0 or one per axis, got ()"),
    ("0.1", "SegmentationDataset.voxel_size: expected a finite number > 0, got '0.1'"),
    (True, "SegmentationDataset.voxel_size: expected a finite number > 0, got True"),
])
def test_bad_voxel_size_is_refused_naming_the_field(voxel_size, message):
    with pytest.raises(InputError) as info:
        SegmentationDataset(_reader(), voxel_size=voxel_size)
    assert str(info.value) == message
    assert isinstance(info.value, BadArgumentError) and info.value.argument == "voxel_size"


def test_per_axis_voxel_size_is_accepted_and_used():
    ds = SegmentationDataset(_reader(), voxel_size=(0.2, 0.5, 0.25))
    scene = ds.load_scene(0)
    grid = np.floor(scene["coord"] / np.array([0.2, 0.5, 0.25])).astype(np.int64)
    grid -= grid.min(axis=0)
    sample = ds[0]
    np.testing.assert_array_equal(sample["coords"].numpy()[sample["inverse"].numpy()], grid)


def _scannet_config(root, text: str):
    """A config whose ``data`` section is the YAML ``text`` on top of ScanNet at ``root``."""
    data = load_yaml_text(text)
    data = {**data, "name": "ScanNet", "kwargs": {"root": str(root), "voxel_size": 0.05, **data.get("kwargs", {})}}
    return config_from_dict({"data": data, "model": {"name": "MinkUNet14A", "num_classes": 20}})


def test_scannet_config_passes_instances_to_the_reader(scannet_data):
    root, _ = scannet_data
    cfg = _scannet_config(root, "train: {split: train, kwargs: {instances: false}}\nval: {split: val}\n")
    train = build_dataset(cfg, cfg.data.train, train=True)
    val = build_dataset(cfg, cfg.data.val, train=False)
    assert train.reader.instances is False and val.reader.instances is None
    assert "instance" not in train.load_scene(0)  # the fixture wrote the JSON files: only False skips them
    assert "instance" in val.load_scene(0)


@pytest.mark.parametrize("value, shown", [("maybe", "'maybe'"), ("0", "0"), ("[false]", "[False]")])
def test_scannet_config_refuses_an_unknown_instances_value(scannet_data, value, shown):
    root, _ = scannet_data
    cfg = _scannet_config(root, f"train: {{split: train, kwargs: {{instances: {value}}}}}\n")
    with pytest.raises(ConfigKeyError) as info:
        build_dataset(cfg, cfg.data.train, train=True)
    assert str(info.value) == ("data.train.kwargs.instances: ScanNetReader: instances: expected None, True or "
                               f"False, got {shown}")


def test_scannet_config_names_a_nan_voxel_size(scannet_data):
    root, _ = scannet_data
    cfg = _scannet_config(root, "kwargs: {voxel_size: .nan}\n")
    with pytest.raises(ConfigKeyError, match=r"^data\.kwargs\.voxel_size: SegmentationDataset\.voxel_size: "
                                             r"expected a finite number > 0, got nan$"):
        build_dataset(cfg, cfg.data.train, train=True)
