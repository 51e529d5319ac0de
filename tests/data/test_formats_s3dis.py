import warnings

import numpy as np
import pytest

from pcseg.data.formats import IGNORE_INDEX, S3DIS_CLASS_NAMES, S3DISReader, read_s3dis_txt
from pcseg.data.synthetic import INDOOR_CLASSES

S3DIS_ID = np.array([S3DIS_CLASS_NAMES.index(c.s3dis) for c in INDOOR_CLASSES])


def _rows(coord, color, segment):
    """Rows (x, y, z in mm, r, g, b, segment) as int64, sorted, for order-free comparison."""
    table = np.c_[np.rint(coord * 1000), color, segment].astype(np.int64)
    order = np.lexsort(table.T[::-1])
    return table[order], order


def test_round_trip_matches_generator_and_reports_corrupt_lines(s3dis_data):
    root, oracle = s3dis_data
    for split, name in (("train", "Area_1/office_1"), ("val", "Area_5/office_1"), ("test", "Area_5/office_1")):
        reader = S3DISReader(root, split)
        assert reader.scenes == [name]
        truth, written = oracle[name]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scene = reader.load(name)
        reported = sorted(str(w.message) for w in caught)
        expected = sorted(f"{f}:{line}: expected 6 floats" for f, line in written.corrupt)
        assert len(reported) == len(expected) == 3
        assert all(r.startswith(e) and r.endswith("; line skipped") for r, e in zip(reported, expected))
        assert reader.reports[name].skipped_lines == 3

        got, got_order = _rows(scene["coord"], scene["color"], scene["segment"])
        want, want_order = _rows(truth.coord.astype(np.float64) + written.offset, truth.color, S3DIS_ID[truth.semantic])
        np.testing.assert_array_equal(got, want)
        pairs = set(zip(scene["instance"][got_order].tolist(), truth.instance[want_order].tolist()))
        assert len(pairs) == len(np.unique(truth.instance)) == len(np.unique(scene["instance"]))


def test_test_area_argument_moves_the_held_out_area(s3dis_data):
    root, _ = s3dis_data
    assert S3DISReader(root, "val", test_area=1).scenes == ["Area_1/office_1"]
    assert S3DISReader(root, "train", test_area=1).scenes == ["Area_5/office_1"]


@pytest.fixture
def hand_room(tmp_path):
    folder = tmp_path / "Area_2" / "hallway_1" / "Annotations"
    folder.mkdir(parents=True)
    (folder / "chair_1.txt").write_bytes(
        b"1.000 2.000 3.000 10 20 30\n"
        b"1.100 2.100 3.100 10 20\n"  # line 2: short
        b"1.200 2.\xe90 3.200 10 20 30\n"  # line 3: garbled non-ASCII byte
        b"\n"
        b"1.300 2.300 3.300 11 21 31\n"
        b"nan 2.400 3.400 12 22 32\n"  # line 6: parses, but not finite
    )
    (folder / "stairs_1.txt").write_text("5 5 5 1 1 1\n")
    (folder / "unicorn_1.txt").write_text("6 6 6 2 2 2\n7 7 7 3 3 3\n")
    (folder / "chair_10.txt").write_text("8 8 8 4 4 4\n")
    (folder / "chair_2.txt").write_text("9 9 9 5 5 5\n")
    return tmp_path


def test_corrupt_lines_skipped_with_file_and_line_and_counted(hand_room):
    reader = S3DISReader(hand_room, "train")
    assert reader.scenes == ["Area_2/hallway_1"]
    with pytest.warns(UserWarning) as caught:
        scene = reader.load("Area_2/hallway_1")
    messages = [str(w.message) for w in caught]
    assert "Area_2/hallway_1/Annotations/chair_1.txt:2: expected 6 floats, got 5; line skipped" in messages
    assert any(m.startswith("Area_2/hallway_1/Annotations/chair_1.txt:3: expected 6 floats, got unparsable")
               for m in messages)
    assert any("class 'unicorn' unknown, its 2 points mapped to ignore" in m for m in messages)
    assert any("dropped 1 of 8 points with non-finite coordinates" in m for m in messages)
    report = reader.reports["Area_2/hallway_1"]
    assert (report.skipped_lines, report.unknown_labels, report.nonfinite_points) == (2, 2, 1)

    chair, clutter = S3DIS_CLASS_NAMES.index("chair"), S3DIS_CLASS_NAMES.index("clutter")
    # natural order: chair_1, chair_2, chair_10, stairs_1 (-> clutter), unicorn_1 (-> ignore)
    np.testing.assert_array_equal(scene["coord"][:, 0], np.float32([1.0, 1.3, 9, 8, 5, 6, 7]))
    np.testing.assert_array_equal(scene["instance"], [0, 0, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(scene["segment"], [chair] * 4 + [clutter] + [IGNORE_INDEX] * 2)
    np.testing.assert_array_equal(scene["color"][1], [11, 21, 31])


def test_read_s3dis_txt_fast_path_has_no_skips(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("1 2 3 4 5 6\n7 8 9 10 11 12\n")
    rows, skipped = read_s3dis_txt(path)
    assert rows.shape == (2, 6) and rows.dtype == np.float32 and skipped == 0


def test_room_without_annotation_files_is_an_error(tmp_path):
    (tmp_path / "Area_1" / "office_9" / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="no <class>_<i>.txt annotation files; room 'Area_1/office_9' is empty"):
        S3DISReader(tmp_path, "train").load("Area_1/office_9")


def test_missing_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected Area_<k> folders here"):
        S3DISReader(tmp_path, "train")
    (tmp_path / "Area_1").mkdir()
    with pytest.raises(FileNotFoundError, match="expected the S3DIS annotations of room 'Area_1/office_1' here"):
        S3DISReader(tmp_path, "train").load("Area_1/office_1")
