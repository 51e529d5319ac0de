import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from pcseg.data.formats import IGNORE_INDEX, SemanticKITTIReader, parse_calib
from pcseg.data.formats.semantickitti import SEMANTICKITTI_LEARNING_MAP
from pcseg.data.projection import project_points
from pcseg.utils.errors import InputError


def _expected_segment(raw_label):
    return np.array([SEMANTICKITTI_LEARNING_MAP[int(r)] - 1 if SEMANTICKITTI_LEARNING_MAP[int(r)] else IGNORE_INDEX
                     for r in raw_label])


def test_round_trip_matches_generator(semantickitti_data):
    root, oracle = semantickitti_data
    for split, name in (("train", "00/000000"), ("val", "08/000000")):
        reader = SemanticKITTIReader(root, split, sequences=[name[:2]])
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
    assert set(calib) == {"P", "Tr"} and calib["P"].shape == (3, 4) and calib["Tr"].shape == (4, 4)
    points = reader.load("08/000000")["coord"]
    pixels = np.c_[points, np.ones(len(points))] @ (calib["P"] @ calib["Tr"]).T
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


def test_missing_label_file_names_the_label_free_switch(kitti_copy):
    root, folder, _ = kitti_copy
    (folder / "labels" / "000000.label").unlink()
    with pytest.raises(InputError, match=r"labels/000000\.label: expected the SemanticKITTI labels of 000000\.bin "
                                         r"here, no such file; .* labels: false"):
        SemanticKITTIReader(root, "val").load("08/000000")


def test_sequences_named_per_split_and_missing_ones_listed(kitti_copy):
    root, folder, _ = kitti_copy
    shutil.copytree(folder, root / "sequences" / "03")
    # the official train split: 03 is on disk, the other 9 are skipped with a warning naming them
    with pytest.warns(UserWarning, match=r"split 'train': 9 of its 10 sequences are not on disk "
                                         r"\(00, 01, 02, 04, 05, 06, 07, 09, 10\); reading 03"):
        assert SemanticKITTIReader(root, "train").scenes == ["03/000000"]
    shutil.rmtree(root / "sequences" / "03")
    with pytest.raises(InputError, match=r"sequences: split 'train': expected <seq>/velodyne/ for its sequences "
                                         r"00, 01, .*, 10, found none of them \(on disk: 08\); .*"
                                         r"data\.train\.kwargs\.sequences"):
        SemanticKITTIReader(root, "train")
    # named sequences: YAML reads [08] as ['08'] and [00, 7] as [0, 7]; all must exist
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert SemanticKITTIReader(root, "train", sequences=["08"]).scenes == ["08/000000"]
        assert SemanticKITTIReader(root, "val", sequences=[8]).scenes == ["08/000000"]
    with pytest.raises(InputError, match=r"sequences: expected <seq>/velodyne/ for 00, 07 \(split 'val'\), "
                                         r"not found; on disk: 08$"):
        SemanticKITTIReader(root, "val", sequences=[0, "08", 7])
    with pytest.raises(InputError, match=r"sequences: expected distinct sequence names, got \['08', '08'\]"):
        SemanticKITTIReader(root, "val", sequences=["08", 8])
    with pytest.raises(InputError, match=r"sequences: expected a list such as \[00, 01\], got '08'"):
        SemanticKITTIReader(root, "val", sequences="08")
    for path in (folder / "velodyne").glob("*.bin"):
        path.unlink()
    with pytest.raises(InputError, match=r"08/velodyne: expected <frame>\.bin scans, found none"):
        SemanticKITTIReader(root, "val", sequences=["08"])


def test_label_free_sequence_of_any_number(kitti_copy):
    """velodyne + image_2 + calib.txt only, under a sequence number outside 00-21 (e.g. a KITTI raw drive)."""
    root, folder, sweep = kitti_copy
    shutil.copytree(folder, root / "sequences" / "42", ignore=shutil.ignore_patterns("labels", "poses.txt"))
    shutil.rmtree(folder)
    assert sorted(p.name for p in (root / "sequences" / "42").iterdir()) == ["calib.txt", "image_2", "times.txt",
                                                                             "velodyne"]
    reader = SemanticKITTIReader(root, "train", sequences=["42"], labels=False)
    scene = reader.load("42/000000")
    np.testing.assert_array_equal(scene["coord"], sweep.points)
    np.testing.assert_array_equal(scene["strength"][:, 0], sweep.remission)
    assert (scene["segment"] == IGNORE_INDEX).all() and (scene["instance"] == -1).all()
    assert reader.load_image("42/000000").shape == (94, 310, 3)
    with pytest.raises(InputError, match=r"42/labels/000000\.label: expected the SemanticKITTI labels"):
        SemanticKITTIReader(root, "train", sequences=["42"]).load("42/000000")


def test_camera_3_reads_image_3_and_p3(kitti_copy):
    root, folder, _ = kitti_copy
    (folder / "image_3").mkdir()
    right = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    Image.fromarray(right).save(folder / "image_3" / "000000.png")
    lines = dict(line.split(":", 1) for line in (folder / "calib.txt").read_text().splitlines())
    p3 = np.array(lines["P3"].split(), dtype=float).reshape(3, 4)
    tr = np.vstack([np.array(lines["Tr"].split(), dtype=float).reshape(3, 4), [0, 0, 0, 1]])
    reader = SemanticKITTIReader(root, "val", camera=3)
    np.testing.assert_array_equal(reader.load_image("08/000000"), right)
    calib = reader.load_calib("08/000000")
    np.testing.assert_array_equal(calib["P"], p3)
    np.testing.assert_array_equal(calib["Tr"], tr)
    assert not np.array_equal(p3, np.array(lines["P2"].split(), dtype=float).reshape(3, 4))
    (folder / "calib.txt").write_text("".join(f"{k}:{v}\n" for k, v in lines.items() if k != "P3"))
    with pytest.raises(InputError, match=r"calib\.txt: P3: expected this matrix \(a line P3\), found only "
                                         r"P0, P1, P2, Tr"):
        SemanticKITTIReader(root, "val", camera=3).load_calib("08/000000")
    with pytest.raises(InputError, match=r"camera: expected one of \(0, 1, 2, 3\), got 5"):
        SemanticKITTIReader(root, "val", camera=5)


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


def test_parse_calib_errors_name_file_line_matrix(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(_line("P2", P2) + "Tr: 1 2 3\n")
    with pytest.raises(InputError, match=r"calib\.txt:2: Tr: expected 12 floats, got 3"):
        parse_calib(path)
    path.write_text(_line("P2", P2))
    with pytest.raises(InputError, match=r"calib\.txt: Tr: expected this matrix \(a line Tr, Tr_velo_to_cam, "
                                         r"Tr_velo_cam\), found only P2"):
        parse_calib(path)
    path.write_text(_line("P2", P2) + _line("Tr", TR) + _line("P2", P2))
    with pytest.raises(InputError, match=r"calib\.txt:3: P2: expected once, already given at line 1"):
        parse_calib(path)
    path.write_text(_line("P2", P2) + "Tr: 0 -1 0 1 0 0 -1 x 1 0 0 3\n")
    with pytest.raises(InputError, match=r"calib\.txt:2: Tr: expected numbers, got '0 -1 0 1 0 0 -1 x 1 0 0 3'"):
        parse_calib(path)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_parse_calib_refuses_non_finite_values(tmp_path, bad):
    path = tmp_path / "calib.txt"
    values = [repr(float(v)) for v in R0.ravel()]
    values[4] = bad
    path.write_text(_line("P2", P2) + "R_rect " + " ".join(values) + "\n" + _line("Tr_velo_cam", TR, " "))
    with pytest.raises(InputError, match=rf"calib\.txt:2: R_rect: expected finite numbers, got \[{bad}\] at "
                                         r"positions \[4\]"):
        parse_calib(path)


# KITTI tracking calibration (training/calib/0000.txt), as published: camera matrices with colons,
# R_rect / Tr_velo_cam / Tr_imu_velo without
TRACKING_CALIB = """\
P0: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 0.000000000000e+00 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P1: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.875744000000e+02 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 0.000000000000e+00
P2: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 4.485728000000e+01 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 2.163791000000e-01 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 2.745884000000e-03
P3: 7.215377000000e+02 0.000000000000e+00 6.095593000000e+02 -3.395242000000e+02 0.000000000000e+00 7.215377000000e+02 1.728540000000e+02 2.199936000000e+00 0.000000000000e+00 0.000000000000e+00 1.000000000000e+00 2.729905000000e-03
R_rect 9.999239000000e-01 9.837760000000e-03 -7.445048000000e-03 -9.869795000000e-03 9.999421000000e-01 -4.278459000000e-03 7.402527000000e-03 4.351614000000e-03 9.999631000000e-01
Tr_velo_cam 7.533745000000e-03 -9.999714000000e-01 -6.166020000000e-04 -4.069766000000e-03 1.480249000000e-02 7.280733000000e-04 -9.998902000000e-01 -7.631618000000e-02 9.998621000000e-01 7.523790000000e-03 1.480755000000e-02 -2.717806000000e-01
Tr_imu_velo 9.999976000000e-01 7.553071000000e-04 -2.035826000000e-03 -8.086759000000e-01 -7.854027000000e-04 9.998898000000e-01 -1.482298000000e-02 3.195559000000e-01 2.024406000000e-03 1.482454000000e-02 9.998881000000e-01 -7.997231000000e-01
"""


def _numbers(key):
    line = next(line for line in TRACKING_CALIB.splitlines() if line.split()[0].rstrip(":") == key)
    return np.array(line.split()[1:], dtype=np.float64)


def test_parse_calib_kitti_tracking_form_projects_like_numpy(tmp_path):
    path = tmp_path / "0000.txt"
    path.write_text(TRACKING_CALIB)
    calib = parse_calib(path, required=("P2", "P3"))
    assert set(calib) == {"P0", "P1", "P2", "P3", "Tr"}
    r_rect = np.eye(4)
    r_rect[:3, :3] = _numbers("R_rect").reshape(3, 3)
    velo_to_cam = np.vstack([_numbers("Tr_velo_cam").reshape(3, 4), [0, 0, 0, 1]])
    point = np.array([12.5, -1.75, -0.6])  # 12.5 m ahead, 1.75 m to the right, 0.6 m below the LiDAR
    for camera in ("P2", "P3"):
        np.testing.assert_array_equal(calib[camera], _numbers(camera).reshape(3, 4))
        u, v, w = _numbers(camera).reshape(3, 4) @ r_rect @ velo_to_cam @ np.r_[point, 1.0]
        pixel = np.array([u / w, v / w])
        proj = project_points(point[None], calib[camera], calib["Tr"], image_size=(1242, 375))
        np.testing.assert_array_equal(proj.pixel[0], np.floor(pixel + 0.5))
        np.testing.assert_allclose(proj.depth[0], w, rtol=1e-12)
    # P2 by hand (4 digits): Tr_velo_cam -> (1.8404, 0.7074, 12.2045), R_rect -> (1.7564, 0.6370, 12.2208);
    # u = (721.54 * 1.7564 + 609.56 * 12.2208 + 44.857) / 12.2235 = 716.8, v = (721.54 * 0.6370 + 172.85 * 12.2208
    # + 0.216) / 12.2235 = 210.4
    np.testing.assert_array_equal(project_points(point[None], calib["P2"], calib["Tr"], (1242, 375)).pixel[0],
                                  [717, 210])


def test_reader_reads_a_tracking_calib_and_refuses_nan(kitti_copy):
    root, folder, _ = kitti_copy
    (folder / "calib.txt").write_text(TRACKING_CALIB)
    calib = SemanticKITTIReader(root, "val", camera=3).load_calib("08/000000")
    np.testing.assert_array_equal(calib["P"], _numbers("P3").reshape(3, 4))
    tr = np.eye(4)
    tr[:3, :3] = _numbers("R_rect").reshape(3, 3)
    np.testing.assert_allclose(calib["Tr"], tr @ np.vstack([_numbers("Tr_velo_cam").reshape(3, 4), [0, 0, 0, 1]]),
                               rtol=0, atol=1e-15)
    (folder / "calib.txt").write_text(TRACKING_CALIB.replace("-3.395242000000e+02", "nan"))
    with pytest.raises(InputError, match=r"calib\.txt:4: P3: expected finite numbers, got \[nan\] at positions \[3\]"):
        SemanticKITTIReader(root, "val", camera=3).load_calib("08/000000")


def _yaml_map(mapping):
    return "labels:\n  0: unlabeled\nlearning_map:\n" + "".join(f"  {raw}: {lid}\n" for raw, lid in mapping)


def test_semantic_kitti_yaml_learning_map_checked(kitti_copy):
    root, _, _ = kitti_copy
    path = root / "semantic-kitti.yaml"
    path.write_text(_yaml_map([*SEMANTICKITTI_LEARNING_MAP.items(), (300, 20)]))
    with pytest.raises(InputError, match=r"semantic-kitti\.yaml: learning_map: 300: expected a learning id in 0\.\.19 "
                                         r"\(0 = ignored, l = train id l-1 of the 19 classes\), got 20"):
        SemanticKITTIReader(root, "val")
    path.write_text(_yaml_map([*SEMANTICKITTI_LEARNING_MAP.items(), (10, 1)]))  # 10 written twice
    last = len(SEMANTICKITTI_LEARNING_MAP) + 4  # 3 header lines, then one line per entry; 10 is the 3rd entry
    with pytest.raises(InputError, match=rf"semantic-kitti\.yaml: duplicate key 10 \(line {last}; first at line 6\)"):
        SemanticKITTIReader(root, "val")
    path.write_text(_yaml_map([(0, 0), (10, "car")]))
    with pytest.raises(InputError, match=r"learning_map: 10: expected a raw id >= 0 mapped to an integer learning id, "
                                         r"got 10: 'car'"):
        SemanticKITTIReader(root, "val")
    path.write_text("labels: {0: unlabeled}\n")
    with pytest.raises(InputError, match=r"learning_map: expected a mapping raw id -> learning id, got None"):
        SemanticKITTIReader(root, "val")
    path.write_text("\ufeff" + _yaml_map([(0, 0), (10, 19)]))  # BOM stripped; largest valid learning id
    assert SemanticKITTIReader(root, "val")._to_train == {0: IGNORE_INDEX, 10: 18}
