import shutil

import numpy as np
import pytest

from pcseg.data.formats import IGNORE_INDEX, SemanticKITTIReader, parse_calib
from pcseg.data.formats.semantickitti import SEMANTICKITTI_LEARNING_MAP


def _expected_segment(raw_label):
    return np.array([SEMANTICKITTI_LEARNING_MAP[int(r)] - 1 if SEMANTICKITTI_LEARNING_MAP[int(r)] else IGNORE_INDEX
                     for r in raw_label])


def test_round_trip_matches_generator(semantickitti_data):
    root, oracle = semantickitti_data
    for split, name in (("train", "00/000000"), ("val", "08/000000")):
        reader = SemanticKITTIReader(root, split)
        assert reader.scenes == [name]
        scene, sweep = reader.load(name), oracle[name]
        np.testing.assert_array_equal(scene["coord"], sweep.points)
        np.testing.assert_array_equal(scene["strength"][:, 0], sweep.remission)
        np.testing.assert_array_equal(scene["segment"], _expected_segment(sweep.label))
        full = sweep.label.astype(np.int64) | (sweep.instance.astype(np.int64) << 16)
        np.testing.assert_array_equal(scene["instance"], np.where(sweep.instance > 0, full, -1))
        things = scene["instance"] >= 0
        assert len(np.unique(scene["instance"][things])) == len(np.unique(sweep.instance[sweep.instance > 0]))
        assert "color" not in scene and scene["strength"].shape == (len(scene["coord"]), 1)


def test_image_and_calibration_agree(semantickitti_data):
    root, _ = semantickitti_data
    reader = SemanticKITTIReader(root, "val")
    image, calib = reader.load_image("08/000000"), reader.load_calib("08/000000")
    assert image.dtype == np.uint8 and image.shape == (94, 310, 3)  # 1241x376 scaled by 0.25
    assert calib["P2"].shape == (3, 4) and calib["Tr"].shape == (4, 4)
    points = reader.load("08/000000")["coord"]
    pixels = np.c_[points, np.ones(len(points))] @ (calib["P2"] @ calib["Tr"]).T
    front = pixels[:, 2] > 1
    uv = pixels[front, :2] / pixels[front, 2:]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 310) & (uv[:, 1] >= 0) & (uv[:, 1] < 94)
    assert inside.mean() > 0.2  # the camera looks forward, the LiDAR all around


@pytest.fixture
def kitti_copy(semantickitti_data, tmp_path):
    """A writable copy of sequence 08 (without semantic-kitti.yaml); returns (root, sequence folder, oracle)."""
    root, oracle = semantickitti_data
    shutil.copytree(root / "sequences" / "08", tmp_path / "sequences" / "08")
    return tmp_path, tmp_path / "sequences" / "08", oracle["08/000000"]


def test_builtin_map_without_yaml_and_yaml_overrides_it(kitti_copy):
    root, _, sweep = kitti_copy
    np.testing.assert_array_equal(SemanticKITTIReader(root, "val").load("08/000000")["segment"],
                                  _expected_segment(sweep.label))
    (root / "semantic-kitti.yaml").write_text("learning_map:\n" + "".join(
        f"  {raw}: {0 if raw == 40 else lid}\n" for raw, lid in SEMANTICKITTI_LEARNING_MAP.items()))
    segment = SemanticKITTIReader(root, "val").load("08/000000")["segment"]
    assert (segment[sweep.label == 40] == IGNORE_INDEX).all() and (sweep.label == 40).any()


def test_bin_size_not_multiple_of_16_is_an_error(kitti_copy):
    root, folder, _ = kitti_copy
    with open(folder / "velodyne" / "000000.bin", "ab") as f:
        f.write(b"\0" * 6)
    with pytest.raises(ValueError, match=r"000000\.bin: size \d+ bytes is not a multiple of 16"):
        SemanticKITTIReader(root, "val").load("08/000000")


def test_label_count_mismatch_names_file_field_expected_got(kitti_copy):
    root, folder, sweep = kitti_copy
    path = folder / "labels" / "000000.label"
    path.write_bytes(path.read_bytes()[:-8])
    n = len(sweep.points)
    with pytest.raises(ValueError, match=rf"000000\.label: field 'label' has {n - 2} entries, expected {n}"):
        SemanticKITTIReader(root, "val").load("08/000000")


def test_missing_label_file_and_missing_sequences(kitti_copy, tmp_path):
    root, folder, _ = kitti_copy
    (folder / "labels" / "000000.label").unlink()
    with pytest.raises(FileNotFoundError, match=r"000000\.label: expected the SemanticKITTI labels here"):
        SemanticKITTIReader(root, "val").load("08/000000")
    with pytest.raises(FileNotFoundError, match="expected <seq>/velodyne/ for sequences 00, 01"):
        SemanticKITTIReader(root, "train")
    assert SemanticKITTIReader(root, "train", sequences=("08",)).scenes == ["08/000000"]


def test_unknown_raw_ids_ignored_with_warning_and_nonfinite_dropped(kitti_copy):
    root, folder, sweep = kitti_copy
    labels = np.fromfile(folder / "labels" / "000000.label", dtype="<u4")
    labels[:4] = 123
    labels.tofile(folder / "labels" / "000000.label")
    scan = np.fromfile(folder / "velodyne" / "000000.bin", dtype="<f4").reshape(-1, 4)
    scan[10, 1] = np.nan
    scan.tofile(folder / "velodyne" / "000000.bin")
    reader = SemanticKITTIReader(root, "val")
    with pytest.warns(UserWarning) as caught:
        scene = reader.load("08/000000")
    messages = " | ".join(str(w.message) for w in caught)
    assert "field 'label': 4 points have unknown class ids [123]" in messages
    assert f"dropped 1 of {len(sweep.points)} points with non-finite coordinates" in messages
    assert (scene["segment"][:4] == IGNORE_INDEX).all() and len(scene["coord"]) == len(sweep.points) - 1
    report = reader.reports["08/000000"]
    assert (report.unknown_labels, report.nonfinite_points) == (4, 1)


P2 = np.arange(12, dtype=float).reshape(3, 4) + 0.5
TR = np.array([[0.0, -1, 0, 1], [0, 0, -1, 2], [1, 0, 0, 3]])
R0 = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def _line(key, m, sep=": "):
    return key + sep + " ".join(repr(float(v)) for v in m.ravel()) + "\n"


def test_parse_calib_semantickitti_form(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(_line("P0", P2) + _line("P1", P2) + _line("P2", P2) + _line("P3", P2) + _line("Tr", TR))
    calib = parse_calib(path)
    np.testing.assert_array_equal(calib["P2"], P2)
    np.testing.assert_array_equal(calib["Tr"], [[0, -1, 0, 1], [0, 0, -1, 2], [1, 0, 0, 3], [0, 0, 0, 1]])


@pytest.mark.parametrize("r0_key, tr_key, sep", [("R0_rect", "Tr_velo_to_cam", ": "), ("R_rect", "Tr_velo_cam", " ")])
def test_parse_calib_raw_kitti_forms_fold_in_r0_rect(tmp_path, r0_key, tr_key, sep):
    path = tmp_path / "calib.txt"
    path.write_text(_line("P0", P2) + _line("P2", P2) + _line(r0_key, R0, sep) + _line(tr_key, TR, sep)
                    + _line("Tr_imu_to_velo", TR))
    calib = parse_calib(path)
    np.testing.assert_array_equal(calib["P2"], P2)
    # R0_rect @ Tr_velo_to_cam by hand: rows (r0, -r2, r1) of Tr
    np.testing.assert_array_equal(calib["Tr"], [[0, -1, 0, 1], [-1, 0, 0, -3], [0, 0, -1, 2], [0, 0, 0, 1]])


def test_parse_calib_errors_name_file_key_expected_got(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(_line("P2", P2) + "Tr: 1 2 3\n")
    with pytest.raises(ValueError, match=r"calib\.txt:2: 'Tr' expected 12 floats, got 3"):
        parse_calib(path)
    path.write_text(_line("P2", P2))
    with pytest.raises(ValueError, match=r"calibration 'Tr' missing"):
        parse_calib(path)
