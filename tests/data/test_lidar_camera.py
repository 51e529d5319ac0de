"""LiDAR → camera projection by hand, SLIC superpixel caching, and the LidarCamera dataset + collate."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pcseg.data.datasets import DATASETS, SemanticKITTI
from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.formats import SemanticKITTIReader
from pcseg.data.lidar_camera import LidarCameraDataset, collate_lidar_camera
from pcseg.data.projection import project_points
from pcseg.data.superpixels import SuperpixelCache

# KITTI-style calibration: x_cam = -y_velo, y_cam = -z_velo, z_cam = x_velo, offset t; f = 100, c = (50, 20)
TR = np.array([[0.0, -1.0, 0.0, 0.1], [0.0, 0.0, -1.0, -0.2], [1.0, 0.0, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0]])
P2 = np.array([[100.0, 0.0, 50.0, 6.0], [0.0, 100.0, 20.0, 0.0], [0.0, 0.0, 1.0, 0.0]])


def test_projection_equals_the_pinhole_model_by_hand():
    # point 0 → camera (0, -0.4, 10): u = (0 + 500 + 6) / 10 = 50.6, v = (-40 + 200) / 10 = 16
    # point 1 → camera (1.2, 0.6, 5): u = (120 + 250 + 6) / 5 = 75.2, v = (60 + 100) / 5 = 32
    points = np.array([[9.7, 0.1, 0.2],
                       [4.7, -1.1, -0.8],
                       [-5.0, 0.0, 0.0],    # camera z = -4.7: behind
                       [1.7, 5.0, 0.0],     # camera (-4.9, -0.2, 2): u = (-490 + 100 + 6) / 2 = -192: outside
                       [1.7, 0.1, -2.0]])   # camera (0, 1.8, 2): v = (180 + 40) / 2 = 110 >= 40: outside
    proj = project_points(points, P2, TR, image_size=(100, 40))
    np.testing.assert_array_equal(proj.pixel, [[51, 16], [75, 32], [-1, -1], [-1, -1], [-1, -1]])
    np.testing.assert_array_equal(proj.valid, [True, True, False, False, False])
    np.testing.assert_allclose(proj.depth, [10.0, 5.0, -4.7, 2.0, 2.0])
    assert (proj.num_behind, proj.num_outside) == (1, 2)


def test_projection_rounds_to_the_nearest_pixel_centre_and_checks_shapes():
    # u = 99.49 → pixel 99 (inside a 100-wide image); u = 99.5 → pixel 100 (outside)
    depth = 10.0
    points = np.array([[depth - 0.3, -((99.49 * depth - 6 - 50 * depth) / 100 - 0.1), 0.2],
                       [depth - 0.3, -((99.5 * depth - 6 - 50 * depth) / 100 - 0.1), 0.2]])
    proj = project_points(points, P2, TR, image_size=(100, 40))
    assert proj.pixel[0, 0] == 99 and not proj.valid[1] and proj.num_outside == 1
    with pytest.raises(ValueError, match="calibration 'P2' expected shape"):
        project_points(points, P2[:2], TR, (100, 40))
    with pytest.raises(ValueError, match=r"points expected shape \(N, 3\)"):
        project_points(np.zeros((2, 4)), P2, TR, (100, 40))


def test_superpixel_cache_returns_the_same_segmentation_from_disk(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    image = (np.random.default_rng(0).random((30, 90, 3)) * 255).astype(np.uint8)
    cache = SuperpixelCache(tmp_path / "sp", n_segments=20)
    first = cache(image)
    assert first.dtype == np.int64 and first.shape == (30, 90)
    assert set(np.unique(first)) == set(range(first.max() + 1))  # consecutive ids
    assert (cache.hits, cache.misses) == (0, 1) and len(list((tmp_path / "sp").glob("*.npy"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("SLIC ran although the segmentation is cached")

    monkeypatch.setattr("pcseg.data.superpixels.slic_superpixels", fail)
    again = SuperpixelCache(tmp_path / "sp", n_segments=20)
    np.testing.assert_array_equal(again(image), first)
    assert (again.hits, again.misses) == (1, 0)
    other = image.copy()
    other[0, 0] ^= 1  # another image (or other settings) → another key
    assert again.key(other) != again.key(image)
    assert SuperpixelCache(None, n_segments=21).key(image) != again.key(image)


def test_lidar_camera_samples_and_batch(semantickitti_data, tmp_path):
    pytest.importorskip("skimage")
    root, _ = semantickitti_data
    base = SemanticKITTI(str(root), "train", voxel_size=0.2, sequences=["00"])
    dataset = LidarCameraDataset(base, SuperpixelCache(tmp_path / "sp", n_segments=30))
    reader = SemanticKITTIReader(root, "train", sequences=["00"])
    samples = [dataset[0], dataset[0]]
    s = samples[0]
    scene, calib = reader.load(s["name"]), reader.load_calib(s["name"])
    h, w = s["image"].shape[1:]
    proj = project_points(scene["coord"], calib["P"], calib["Tr"], (w, h))
    np.testing.assert_array_equal(s["pixel"].numpy(), proj.pixel)
    assert 0 < proj.valid.sum() < len(proj.valid)  # the camera sees only the front of the sweep
    valid = proj.valid
    col, row = proj.pixel[valid].T
    np.testing.assert_array_equal(s["point_superpixel"].numpy()[valid], s["superpixels"].numpy()[row, col])
    assert (s["point_superpixel"][~torch.from_numpy(valid)] == -1).all()
    np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), reader.load_image(s["name"]))

    batch = collate_lidar_camera(samples)
    count = int(s["superpixels"].max()) + 1
    assert batch["num_superpixels"] == 2 * count and batch["images"].shape == (2, 3, h, w)
    torch.testing.assert_close(batch["superpixels"][1], s["superpixels"] + count)
    n = len(s["point_superpixel"])
    second = batch["point_superpixel"][n:]
    torch.testing.assert_close(second, torch.where(s["point_superpixel"] >= 0, s["point_superpixel"] + count, -1))
    assert batch["P"].shape == (2, 3, 4) and batch["Tr"].shape == (2, 4, 4) and batch["coords"][:, 0].max() == 1


def test_lidar_camera_pads_images_of_different_sizes():
    def sample(h, w, s):
        return {"coords": torch.zeros((1, 3), dtype=torch.int32), "feats": torch.zeros((1, 1)),
                "labels": torch.zeros(1, dtype=torch.int64), "inverse": torch.zeros(1, dtype=torch.int64),
                "point_labels": torch.zeros(1, dtype=torch.int64), "points": torch.zeros((1, 3)), "name": "x",
                "image": torch.full((3, h, w), 7, dtype=torch.uint8), "P": torch.zeros(3, 4), "Tr": torch.eye(4),
                "pixel": torch.zeros((1, 2), dtype=torch.int64), "superpixels": torch.full((h, w), s - 1),
                "point_superpixel": torch.tensor([s - 1])}

    batch = collate_lidar_camera([sample(2, 5, 3), sample(4, 3, 2)])
    assert batch["images"].shape == (2, 3, 4, 5) and batch["images"][0, :, 2:].eq(0).all()
    assert batch["superpixels"][0, 2:].eq(-1).all() and batch["superpixels"][1, :, 3:].eq(-1).all()
    assert batch["superpixels"][1, 0, 0] == 3 + 1 and batch["point_superpixel"].tolist() == [2, 4]
    with pytest.raises(KeyError, match="lacks image"):
        collate_lidar_camera([{k: v for k, v in sample(2, 2, 1).items() if k != "image"}])


def test_lidar_camera_on_unlabelled_scans_with_the_right_camera(semantickitti_data, tmp_path):
    """Pre-training input: sequence 33 holds velodyne/, image_3/ and calib.txt only; labels: false, camera: 3."""
    pytest.importorskip("skimage")
    root, oracle = semantickitti_data
    folder = tmp_path / "sequences" / "33"
    shutil.copytree(root / "sequences" / "00", folder, ignore=shutil.ignore_patterns("labels", "image_2"))
    right = (np.random.default_rng(1).random((50, 160, 3)) * 255).astype(np.uint8)
    (folder / "image_3").mkdir()
    Image.fromarray(right).save(folder / "image_3" / "000000.png")
    lines = dict(line.split(":", 1) for line in (folder / "calib.txt").read_text().splitlines())
    p3 = np.array(lines["P3"].split(), dtype=float).reshape(3, 4)
    tr = np.vstack([np.array(lines["Tr"].split(), dtype=float).reshape(3, 4), [0, 0, 0, 1]])

    dataset = DATASETS.build({"name": "LidarCamera", "dataset": "SemanticKITTI", "root": str(tmp_path),
                              "split": "train", "sequences": [33], "labels": False, "camera": 3, "voxel_size": 0.2,
                              "n_segments": 20})
    sample = dataset[0]
    assert sample["name"] == "33/000000"
    np.testing.assert_array_equal(sample["image"].permute(1, 2, 0).numpy(), right)
    np.testing.assert_array_equal(sample["P"].numpy(), p3)
    points = oracle["00/000000"].points.astype(np.float64)
    camera = np.c_[points, np.ones(len(points))] @ (p3 @ tr).T
    front = camera[:, 2] > 0
    uv = np.floor(camera[front, :2] / camera[front, 2:] + 0.5)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 160) & (uv[:, 1] >= 0) & (uv[:, 1] < 50)
    expected = np.full((len(points), 2), -1)
    expected[np.flatnonzero(front)[inside]] = uv[inside]
    np.testing.assert_array_equal(sample["pixel"].numpy(), expected)
    assert inside.sum() > 100
    assert (sample["point_labels"] == IGNORE_INDEX).all() and (sample["labels"] == IGNORE_INDEX).all()
