import shutil

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.data.formats import IGNORE_INDEX, ScanNetReader, nyu40_to_scannet20
from pcseg.data.synthetic import INDOOR_CLASSES

NYU40 = np.array([c.nyu40 for c in INDOOR_CLASSES])


def test_nyu40_to_scannet20_on_hand_written_ids():
    ids = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39, 0, 13, 15, 22, 38, 40])
    segment, n_unknown = nyu40_to_scannet20(ids)
    assert segment.tolist() == list(range(20)) + [IGNORE_INDEX] * 6
    assert n_unknown == 0
    with pytest.warns(UserWarning, match=r"x.ply: field 'label': 2 points have unknown class ids \[41, 255\]"):
        segment, n_unknown = nyu40_to_scannet20(np.array([41, 255, 5]), "x.ply")
    assert segment.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 4] and n_unknown == 2


def test_round_trip_matches_generator(scannet_data):
    root, oracle = scannet_data
    train, val = ScanNetReader(root, "train"), ScanNetReader(root, "val")
    assert train.scenes == ["scene0000_00"] and val.scenes == ["scene0001_00"]
    assert len(ScanNetReader(root, "test")) == 0
    for reader in (train, val):
        name = reader.scenes[0]
        scene, truth = reader.load(name), oracle[name]
        assert scene["name"] == name
        np.testing.assert_array_equal(scene["coord"], truth.coord)
        np.testing.assert_array_equal(scene["color"], truth.color.astype(np.float32))
        np.testing.assert_array_equal(scene["segment"], nyu40_to_scannet20(NYU40[truth.semantic])[0])
        np.testing.assert_array_equal(scene["instance"], truth.instance)
        assert scene["coord"].dtype == np.float32 and scene["segment"].dtype == np.int64
        assert len(np.unique(scene["instance"])) == len(np.unique(truth.instance))
        assert reader.reports[name].nonfinite_points == 0


@pytest.fixture
def scene_copy(scannet_data, tmp_path):
    """A writable copy of scene0000_00 in its own root; returns (root, scene folder, oracle)."""
    root, oracle = scannet_data
    shutil.copytree(root / "scans" / "scene0000_00", tmp_path / "scans" / "scene0000_00")
    (tmp_path / "scannetv2_train.txt").write_text("scene0000_00\n")
    return tmp_path, tmp_path / "scans" / "scene0000_00", oracle["scene0000_00"]


def _rewrite_vertices(path, edit):
    ply = PlyData.read(str(path))
    vertices = edit(np.array(ply["vertex"].data))
    PlyData([PlyElement.describe(vertices, "vertex")], text=False).write(str(path))


def test_label_count_mismatch_names_file_field_expected_got(scene_copy):
    root, folder, truth = scene_copy
    _rewrite_vertices(folder / "scene0000_00_vh_clean_2.labels.ply", lambda v: v[:-5])
    n = len(truth.coord)
    with pytest.raises(ValueError, match=rf"labels\.ply: field 'label' has {n - 5} entries, expected {n}"):
        ScanNetReader(root, "train").load("scene0000_00")


def test_missing_file_names_what_was_expected_where(scene_copy):
    root, folder, _ = scene_copy
    (folder / "scene0000_00_vh_clean_2.0.010000.segs.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"segs\.json: expected the ScanNet over-segmentation here"):
        ScanNetReader(root, "train").load("scene0000_00")
    with pytest.raises(FileNotFoundError, match=r"scannetv2_val\.txt: expected the split file here"):
        ScanNetReader(root, "val")


def test_nonfinite_vertices_dropped_with_warning_and_count(scene_copy):
    root, folder, truth = scene_copy

    def poison(v):
        v["x"][0], v["z"][7] = np.nan, np.inf
        return v

    _rewrite_vertices(folder / "scene0000_00_vh_clean_2.ply", poison)
    reader = ScanNetReader(root, "train")
    with pytest.warns(UserWarning, match=rf"dropped 2 of {len(truth.coord)} points with non-finite coordinates"):
        scene = reader.load("scene0000_00")
    keep = np.ones(len(truth.coord), bool)
    keep[[0, 7]] = False
    np.testing.assert_array_equal(scene["instance"], truth.instance[keep])
    assert reader.reports["scene0000_00"].nonfinite_points == 2


def test_unknown_label_ids_are_ignored_with_count(scene_copy):
    root, folder, _ = scene_copy

    def corrupt(v):
        v["label"][:3] = 99
        return v

    _rewrite_vertices(folder / "scene0000_00_vh_clean_2.labels.ply", corrupt)
    reader = ScanNetReader(root, "train")
    with pytest.warns(UserWarning, match=r"3 points have unknown class ids \[99\]"):
        scene = reader.load("scene0000_00")
    assert (scene["segment"][:3] == IGNORE_INDEX).all()
    assert reader.reports["scene0000_00"].unknown_labels == 3


def test_empty_scene_is_an_error(scene_copy):
    root, folder, _ = scene_copy
    for suffix in ("_vh_clean_2.ply", "_vh_clean_2.labels.ply"):
        _rewrite_vertices(folder / f"scene0000_00{suffix}", lambda v: v[:0])
    (folder / "scene0000_00_vh_clean_2.0.010000.segs.json").write_text('{"segIndices": []}')
    with pytest.raises(ValueError, match="scene 'scene0000_00' has no points"):
        ScanNetReader(root, "train").load("scene0000_00")


def test_test_split_reads_scans_test_without_labels(scene_copy):
    root, folder, truth = scene_copy
    test_folder = root / "scans_test" / "scene0707_00"
    test_folder.mkdir(parents=True)
    shutil.copy(folder / "scene0000_00_vh_clean_2.ply", test_folder / "scene0707_00_vh_clean_2.ply")
    (root / "scannetv2_test.txt").write_text("scene0707_00\n")
    scene = ScanNetReader(root, "test").load("scene0707_00")
    assert (scene["segment"] == IGNORE_INDEX).all() and (scene["instance"] == -1).all()
    assert len(scene["coord"]) == len(truth.coord)
