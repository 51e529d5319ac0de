import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.data.formats import IGNORE_INDEX, ScanNetReader, nyu40_to_scannet20
from pcseg.data.formats.scannet import OFFICIAL_SPLIT_DIR
from pcseg.data.synthetic import INDOOR_CLASSES
from pcseg.utils.errors import InputError

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
        ScanNetReader(root, "train", instances=True).load("scene0000_00")
    (folder / "scene0000_00_vh_clean_2.labels.ply").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels\.ply: expected the ScanNet NYU40 label mesh here"):
        ScanNetReader(root, "train").load("scene0000_00")


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
    assert (scene["segment"] == IGNORE_INDEX).all() and "instance" not in scene
    np.testing.assert_array_equal(scene["coord"], truth.coord)


def _two_ply_scene(src: Path, root: Path, name: str) -> None:
    """``root/scans/<name>/`` with only the two PLY files of scene folder ``src`` (renamed): what
    ``download-scannet.py --type _vh_clean_2.ply --type _vh_clean_2.labels.ply`` gives."""
    folder = root / "scans" / name
    folder.mkdir(parents=True)
    for suffix in ("_vh_clean_2.ply", "_vh_clean_2.labels.ply"):
        shutil.copy(src / f"{src.name}{suffix}", folder / f"{name}{suffix}")


def _expected_segment(truth) -> np.ndarray:
    return nyu40_to_scannet20(NYU40[truth.semantic])[0]


def test_scene_with_only_the_two_ply_files_loads_without_instances(scannet_data, tmp_path):
    root, oracle = scannet_data
    _two_ply_scene(root / "scans" / "scene0000_00", tmp_path, "scene0000_00")
    (tmp_path / "scannetv2_train.txt").write_text("scene0000_00\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is missing that was asked for: no warning
        scene = ScanNetReader(tmp_path, "train").load("scene0000_00")
    truth = oracle["scene0000_00"]
    assert "instance" not in scene
    np.testing.assert_array_equal(scene["coord"], truth.coord)
    np.testing.assert_array_equal(scene["color"], truth.color.astype(np.float32))
    np.testing.assert_array_equal(scene["segment"], _expected_segment(truth))
    with pytest.raises(FileNotFoundError, match=r"segs\.json: expected the ScanNet over-segmentation here"):
        ScanNetReader(tmp_path, "train", instances=True).load("scene0000_00")


def test_instances_false_skips_the_json_files(scene_copy):
    root, folder, truth = scene_copy
    (folder / "scene0000_00.aggregation.json").write_text("not json")  # never opened
    scene = ScanNetReader(root, "train", instances=False).load("scene0000_00")
    assert "instance" not in scene
    np.testing.assert_array_equal(scene["segment"], _expected_segment(truth))
    with pytest.raises(InputError, match=r"aggregation\.json: expected JSON, got a parse error"):
        ScanNetReader(root, "train").load("scene0000_00")
    with pytest.raises(InputError, match=r"instances: expected None, True or False, got 'yes'"):
        ScanNetReader(root, "train", instances="yes")


def test_half_an_instance_annotation_is_warned_about_not_used(scene_copy):
    root, folder, _ = scene_copy
    (folder / "scene0000_00.aggregation.json").unlink()
    with pytest.warns(UserWarning, match=r"aggregation\.json: missing, so scene0000_00_vh_clean_2\.0\.010000\.segs"
                                         r"\.json is not used: scene 'scene0000_00' has no instance ids"):
        scene = ScanNetReader(root, "train").load("scene0000_00")
    assert "instance" not in scene


def _float_labels(vertices: np.ndarray) -> np.ndarray:
    """The same vertices with ``label`` stored as float32 (as some exporters write it)."""
    dtype = [(n, "f4" if n == "label" else vertices.dtype[n]) for n in vertices.dtype.names]
    out = np.empty(len(vertices), dtype=dtype)
    for n in vertices.dtype.names:
        out[n] = vertices[n]
    return out


def test_float_labels_holding_whole_numbers_read_like_integers(scene_copy):
    root, folder, truth = scene_copy
    path = folder / "scene0000_00_vh_clean_2.labels.ply"
    _rewrite_vertices(path, _float_labels)
    assert PlyData.read(str(path))["vertex"].data["label"].dtype == np.float32
    scene = ScanNetReader(root, "train").load("scene0000_00")
    np.testing.assert_array_equal(scene["segment"], _expected_segment(truth))


def test_fractional_or_nan_float_labels_are_refused_not_truncated(scene_copy):
    root, folder, truth = scene_copy

    def poison(v):
        v = _float_labels(v)
        v["label"][[3, 9]] = 2.5  # truncation would make these 2 (floor), a valid class
        v["label"][4] = np.nan
        return v

    _rewrite_vertices(folder / "scene0000_00_vh_clean_2.labels.ply", poison)
    with pytest.raises(InputError, match=re.escape(
            f"labels.ply: field 'label': expected integer class ids, found 3 of {len(truth.coord)} float32 values "
            f"that are not whole numbers in the int32 range, e.g. [2.5, nan]; refusing to truncate them")):
        ScanNetReader(root, "train").load("scene0000_00")


OFFICIAL_COUNTS = {"train": 1201, "val": 312, "test": 100}


def test_shipped_official_split_lists():
    lists = {split: (OFFICIAL_SPLIT_DIR / f"scannetv2_{split}.txt").read_text().split() for split in OFFICIAL_COUNTS}
    assert {split: len(set(names)) for split, names in lists.items()} == OFFICIAL_COUNTS  # no duplicates either
    assert {split: len(names) for split, names in lists.items()} == OFFICIAL_COUNTS
    train, val, test = (set(lists[s]) for s in ("train", "val", "test"))
    assert not train & val and not (train | val) & test
    assert all(re.fullmatch(r"scene0\d{3}_0\d", n) for n in train | val | test)
    # the benchmark: rooms 0000-0706 (with their rescans) for train/val, 0707-0806 for test
    assert {n[:9] for n in train | val} == {f"scene{i:04d}" for i in range(707)}
    assert test == {f"scene{i:04d}_00" for i in range(707, 807)}


@pytest.fixture
def partial_download(scannet_data, tmp_path):
    """Two official train scenes and one val scene, two PLY files each, no split files."""
    root, _ = scannet_data
    for name in ("scene0000_00", "scene0002_00", "scene0011_00"):
        _two_ply_scene(root / "scans" / "scene0000_00", tmp_path, name)
    return tmp_path


def test_official_lists_filtered_to_the_scenes_on_disk(partial_download, scannet_data):
    root = partial_download
    with pytest.warns(UserWarning, match=re.escape(
            f"{root}: no scannetv2_train.txt, so the official train list shipped with pcseg is used: 2 of its 1201 "
            f"scenes are under {root / 'scans'}, 1199 are not and are skipped (e.g. ['scene0191_00', "
            f"'scene0191_01', 'scene0191_02'])")):
        train = ScanNetReader(root, "train")
    assert train.scenes == ["scene0002_00", "scene0000_00"]  # the official order: lines 287 and 828
    assert train.split_file == OFFICIAL_SPLIT_DIR / "scannetv2_train.txt" and len(train.missing_scenes) == 1199
    with pytest.warns(UserWarning, match=r"1 of its 312 scenes are under .*, 311 are not and are skipped"):
        val = ScanNetReader(root, "val")
    assert val.scenes == ["scene0011_00"]
    np.testing.assert_array_equal(val.load("scene0011_00")["segment"],
                                  _expected_segment(scannet_data[1]["scene0000_00"]))
    with pytest.raises(InputError, match=re.escape(
            f"{root / 'scans_test'}: scenes: none of the 100 scenes of the official ScanNet v2 test list "
            f"({OFFICIAL_SPLIT_DIR / 'scannetv2_test.txt'}) is on disk, and {root} has no scannetv2_test.txt")):
        ScanNetReader(root, "test")


def test_the_roots_split_file_wins_over_the_official_list(partial_download):
    (partial_download / "scannetv2_train.txt").write_text("scene0011_00\nscene0000_00\n")  # 0011_00: official val
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = ScanNetReader(partial_download, "train")
    assert train.scenes == ["scene0011_00", "scene0000_00"] and train.missing_scenes == []
    assert train.split_file == partial_download / "scannetv2_train.txt"


def test_a_root_split_file_naming_a_scene_not_on_disk_fails_at_build(partial_download):
    (partial_download / "scannetv2_val.txt").write_text("scene0011_00\nscene0015_00\n")
    with pytest.raises(InputError, match=r"scannetv2_val\.txt: 1 of the 2 scenes listed are not on disk: scene0015_00"):
        ScanNetReader(partial_download, "val")
