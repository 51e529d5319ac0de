import os
import re
import warnings

import numpy as np
import pytest

from pcseg.data.formats import IGNORE_INDEX, S3DIS_CLASS_NAMES, S3DISReader, read_s3dis_txt
from pcseg.data.formats import s3dis
from pcseg.data.synthetic import INDOOR_CLASSES
from pcseg.utils.errors import InputError

S3DIS_ID = np.array([S3DIS_CLASS_NAMES.index(c.s3dis) for c in INDOOR_CLASSES])


def _rows(coord, color, segment):
    """Rows (x, y, z in mm, r, g, b, segment) as int64, sorted, for order-free comparison."""
    table = np.c_[np.rint(coord * 1000), color, segment].astype(np.int64)
    order = np.lexsort(table.T[::-1])
    return table[order], order


def test_round_trip_matches_generator_and_reports_corrupt_lines(s3dis_data, tmp_path):
    root, oracle = s3dis_data
    for split, name in (("train", "Area_1/office_1"), ("val", "Area_5/office_1"), ("test", "Area_5/office_1")):
        reader = S3DISReader(root, split, cache_dir=tmp_path / split)  # each parses: no cache shared
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
    with pytest.raises(InputError, match="no <class>_<i>.txt annotation files; room 'Area_1/office_9' is empty"):
        S3DISReader(tmp_path, "train").load("Area_1/office_9")


def test_missing_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected Area_<k> folders here"):
        S3DISReader(tmp_path, "train")
    (tmp_path / "Area_1").mkdir()
    with pytest.raises(FileNotFoundError, match="expected the S3DIS annotations of room 'Area_1/office_1' here"):
        S3DISReader(tmp_path, "train").load("Area_1/office_1")


def test_comment_lines_and_trailing_comments_are_skipped_and_counted(tmp_path):
    path = tmp_path / "table_1.txt"
    path.write_text("1 2 3 4 5 6\n# exported by CloudCompare\n7 8 9 10 11 12 # note\n13 14 15 16 17 18\n")
    with pytest.warns(UserWarning) as caught:
        rows, skipped = read_s3dis_txt(path, "A/table_1.txt")
    assert sorted(str(w.message) for w in caught) == [
        "A/table_1.txt:2: expected 6 floats, got 4; line skipped",
        "A/table_1.txt:3: expected 6 floats, got 8; line skipped",
    ]
    assert skipped == 2
    np.testing.assert_array_equal(rows, np.float32([[1, 2, 3, 4, 5, 6], [13, 14, 15, 16, 17, 18]]))


def test_utf8_bom_is_stripped_not_a_lost_line(tmp_path):
    path = tmp_path / "wall_1.txt"
    path.write_bytes(b"\xef\xbb\xbf1.5 2 3 4 5 6\r\n7 8 9 10 11 12\r\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, skipped = read_s3dis_txt(path)
    assert skipped == 0
    np.testing.assert_array_equal(rows, np.float32([[1.5, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]))


def test_empty_annotation_files_are_counted_warnings_naming_the_file(tmp_path):
    folder = tmp_path / "Area_1" / "office_2" / "Annotations"
    folder.mkdir(parents=True)
    (folder / "chair_1.txt").write_text("1 1 1 1 1 1\n")
    (folder / "chair_2.txt").write_bytes(b"")
    (folder / "door_1.txt").write_text("1 2 3\n")  # its only line is corrupt: no points either
    (folder / "wall_1.txt").write_text("2 2 2 2 2 2\n")
    reader = S3DISReader(tmp_path, "train", cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning) as caught:
        scene = reader.load("Area_1/office_2")
    messages = [str(w.message) for w in caught]
    assert "Area_1/office_2/Annotations/chair_2.txt: no points; object 'chair_2' (instance 1) is missing from the room" in messages
    assert ("Area_1/office_2/Annotations/door_1.txt: no points after skipping 1 corrupt line(s); object 'door_1' "
            "(instance 2) is missing from the room") in messages
    report = reader.reports["Area_1/office_2"]
    assert (report.empty_files, report.skipped_lines) == (2, 1)
    np.testing.assert_array_equal(scene["instance"], [0, 3])
    np.testing.assert_array_equal(scene["segment"], [S3DIS_CLASS_NAMES.index("chair"), S3DIS_CLASS_NAMES.index("wall")])


def test_room_without_annotations_is_a_counted_warning(tmp_path):
    for room in ("office_1", "office_3", "storage_1", "hallway_2", "lounge_1", "pantry_1", "WC_1"):
        (tmp_path / "Area_1" / room).mkdir(parents=True)
    (tmp_path / "Area_1" / "office_1" / "Annotations").mkdir()
    (tmp_path / "Area_1" / "Area_1_alignmentAngle.txt").write_text("0\n")  # a file, not a room
    with pytest.warns(UserWarning, match=r"6 room folder\(s\) of split 'train' have no Annotations/ folder and are "
                                         r"skipped: Area_1/WC_1, Area_1/hallway_2, Area_1/lounge_1, "
                                         r"Area_1/office_3, Area_1/pantry_1 and 1 more"):
        reader = S3DISReader(tmp_path, "train")
    assert reader.scenes == ["Area_1/office_1"]
    assert reader.skipped_rooms == ["Area_1/WC_1", "Area_1/hallway_2", "Area_1/lounge_1", "Area_1/office_3",
                                    "Area_1/pantry_1", "Area_1/storage_1"]


def _no_parse(*args, **kwargs):
    raise AssertionError("the room was parsed again")


def _arrays(scene):
    return {k: v for k, v in scene.items() if k != "name"}


def test_parsed_room_is_cached_once_and_reused_without_warnings(hand_room, monkeypatch):
    cache = hand_room / "cache"
    with pytest.warns(UserWarning):
        first = S3DISReader(hand_room, "train", cache_dir=cache).load("Area_2/hallway_1")
    assert (cache / "Area_2" / "hallway_1.npz").is_file()
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(s3dis, "read_s3dis_txt", _no_parse)
    reader = S3DISReader(hand_room, "train", cache_dir=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = reader.load("Area_2/hallway_1")
    # only the non-finite drop (done on every load, after the cache) speaks again
    assert [str(w.message) for w in caught if "non-finite" not in str(w.message)] == []
    assert _arrays(first).keys() == _arrays(second).keys()
    for key in _arrays(first):
        np.testing.assert_array_equal(first[key], second[key])
    report = reader.reports["Area_2/hallway_1"]
    assert (report.skipped_lines, report.unknown_labels, report.nonfinite_points) == (2, 2, 1)


def _load_counting_parses(root, cache, monkeypatch):
    parsed = []
    real = s3dis.read_s3dis_txt
    monkeypatch.setattr(s3dis, "read_s3dis_txt", lambda path, label=None: parsed.append(label) or real(path, label))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = S3DISReader(root, "train", cache_dir=cache).load("Area_2/hallway_1")
    return scene, len(parsed)


def test_touching_or_changing_a_source_file_invalidates_the_cache(hand_room, monkeypatch):
    cache = hand_room / "cache"
    assert _load_counting_parses(hand_room, cache, monkeypatch)[1] == 5
    assert _load_counting_parses(hand_room, cache, monkeypatch)[1] == 0
    chair = hand_room / "Area_2" / "hallway_1" / "Annotations" / "chair_2.txt"
    stat = chair.stat()
    os.utime(chair, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same content
    assert _load_counting_parses(hand_room, cache, monkeypatch)[1] == 5
    stat = chair.stat()
    chair.write_text("9 9 9 5 5 6\n")  # same size; mtime put back: only the content hash sees it
    os.utime(chair, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scene, parses = _load_counting_parses(hand_room, cache, monkeypatch)
    assert parses == 5 and scene["color"][2].tolist() == [5, 5, 6]
    (chair.parent / "chair_3.txt").write_text("4 4 4 4 4 4\n")  # a new object
    scene, parses = _load_counting_parses(hand_room, cache, monkeypatch)
    assert parses == 6 and len(scene["coord"]) == 8


def test_corrupt_cache_file_is_rebuilt(hand_room, monkeypatch):
    cache = hand_room / "cache"
    truth, _ = _load_counting_parses(hand_room, cache, monkeypatch)
    entry = cache / "Area_2" / "hallway_1.npz"
    for garbage in (entry.read_bytes()[:100], b"not a zip file at all"):
        entry.write_bytes(garbage)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scene = S3DISReader(hand_room, "train", cache_dir=cache).load("Area_2/hallway_1")
        assert sum(bool(re.search(r"hallway_1\.npz: unreadable S3DIS cache file .*; parsing the room again",
                                  str(w.message))) for w in caught) == 1
        for key in _arrays(truth):
            np.testing.assert_array_equal(scene[key], truth[key])
        assert _load_counting_parses(hand_room, cache, monkeypatch)[1] == 0  # rewritten whole


def test_unwritable_cache_warns_once_and_still_loads(hand_room):
    blocker = hand_room / "cache_is_a_file"
    blocker.write_text("")
    reader = S3DISReader(hand_room, "train", cache_dir=blocker)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader.load("Area_2/hallway_1")
        reader.load("Area_2/hallway_1")
    assert sum("cannot write the S3DIS cache" in str(w.message) for w in caught) == 1
    assert reader.reports["Area_2/hallway_1"].skipped_lines == 2


def test_default_cache_dir_beside_writable_data_else_xdg(tmp_path, monkeypatch):
    assert s3dis.default_cache_dir(tmp_path) == tmp_path / ".pcseg_cache" / "s3dis"
    assert S3DISReader(_one_room(tmp_path), "train").cache_dir == tmp_path / ".pcseg_cache" / "s3dis"
    monkeypatch.setattr(s3dis.os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    got = s3dis.default_cache_dir(tmp_path)
    assert got.parent == tmp_path / "xdg" / "pcseg" / "s3dis" and len(got.name) == 16
    assert got != s3dis.default_cache_dir(tmp_path / "other")


def _one_room(root):
    folder = root / "Area_1" / "office_1" / "Annotations"
    folder.mkdir(parents=True)
    (folder / "wall_1.txt").write_text("1 2 3 4 5 6\n")
    return root
