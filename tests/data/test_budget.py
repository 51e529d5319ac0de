import json
import re

import numpy as np
import pytest

from pcseg.data.budget import (
    label_hash, load_budget, make_budget, sample_points_per_scene, scene_filename, write_active_budget,
    write_annotated_budget,
)
from pcseg.utils.errors import InputError

IGNORE = -100


class ArrayReader:
    """In-memory stand-in for a pcseg.data.formats reader."""

    def __init__(self, scenes: dict, split: str = "train") -> None:
        self._scenes, self.split = scenes, split
        self.scenes = list(scenes)

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, name: str) -> dict:
        return dict(self._scenes[name], name=name)


def _segment(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    seg = rng.choice([0, 1, 2, 5, 7], size=n, p=[0.6, 0.25, 0.1, 0.049, 0.001]).astype(np.int64)
    seg[rng.random(n) < 0.1] = IGNORE
    return seg


def _reader(names=("scene0000_00", "Area_1/office_1", "08/000123"), n=3000) -> ArrayReader:
    return ArrayReader({name: {"segment": _segment(n, i)} for i, name in enumerate(names)})


def _files(budget_dir) -> dict:
    return {p.name: p.read_bytes() for p in sorted(budget_dir.glob("*.npy"))}


def test_ratio_counts_per_class_match_brute_force(tmp_path):
    reader = _reader()
    budget = make_budget(reader, "ratio", 0.01, seed=3, out_dir=tmp_path / "b")
    for scene in reader.scenes:
        seg = reader.load(scene)["segment"]
        idx = budget.indices(scene)
        assert idx.dtype == np.int64 and (np.diff(idx) > 0).all()
        assert (seg[idx] != IGNORE).all()
        for cls in set(seg.tolist()) - {IGNORE}:
            n_c = sum(1 for v in seg if v == cls)
            assert sum(1 for i in idx if seg[i] == cls) == max(int(n_c * 0.01), 1), (scene, cls)


def test_points_per_scene(tmp_path):
    reader = _reader()
    budget = make_budget(reader, "points_per_scene", 20, seed=0, out_dir=tmp_path / "b")
    for scene in reader.scenes:
        seg = reader.load(scene)["segment"]
        idx = budget.indices(scene)
        assert len(idx) == 20 and len(set(idx.tolist())) == 20 and (seg[idx] != IGNORE).all()
    seg = np.array([IGNORE, 1, IGNORE, 2], np.int64)
    assert sample_points_per_scene(seg, 10, np.random.default_rng(0)).tolist() == [1, 3]


def test_same_seed_gives_byte_identical_files_and_scenes_are_independent(tmp_path):
    reader = _reader()
    make_budget(reader, "ratio", 0.01, seed=7, out_dir=tmp_path / "a")
    make_budget(reader, "ratio", 0.01, seed=7, out_dir=tmp_path / "b")
    make_budget(reader, "ratio", 0.01, seed=8, out_dir=tmp_path / "c")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    assert set(_files(tmp_path / "a")) == {"scene0000_00.npy", "Area_1__office_1.npy", "08__000123.npy"}
    bigger = ArrayReader({**{s: reader._scenes[s] for s in reader.scenes}, "scene0001_00": {"segment": _segment(500, 9)}})
    make_budget(bigger, "ratio", 0.01, seed=7, out_dir=tmp_path / "d")
    files_d = _files(tmp_path / "d")
    assert all(files_d[name] == data for name, data in _files(tmp_path / "a").items())


def test_manifest_contents(tmp_path):
    reader = _reader()
    make_budget(reader, "ratio", 0.01, seed=1, out_dir=tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["kind"] == "ratio" and manifest["amount"] == 0.01 and manifest["seed"] == 1
    assert manifest["reader"] == {"class": "ArrayReader", "split": "train"}
    assert manifest["scenes"] == reader.scenes and manifest["created"]
    seg = reader.load("08/000123")["segment"]
    assert manifest["label_hash"]["08/000123"] == label_hash(seg)
    counts = manifest["counts"]["per_scene"]["08/000123"]
    assert counts == {"points": 3000, "labelled": int((seg != IGNORE).sum()),
                      "selected": len(load_budget(tmp_path / "b").indices("08/000123"))}


def test_mask_checks_the_label_hash(tmp_path):
    reader = _reader()
    budget = load_budget(make_budget(reader, "points_per_scene", 5, seed=0, out_dir=tmp_path / "b").root)
    seg = reader.load("scene0000_00")["segment"]
    mask = budget.mask("scene0000_00", seg)
    assert mask.dtype == bool and mask.sum() == 5 and np.flatnonzero(mask).tolist() == budget.indices("scene0000_00").tolist()
    other = seg.copy()
    other[0] = 4 if other[0] != 4 else 3
    with pytest.raises(ValueError, match=r"manifest.json: labels of scene 'scene0000_00' do not match"):
        budget.mask("scene0000_00", other)
    with pytest.raises(KeyError, match="scene 'scene9999_00' is not in this budget"):
        budget.indices("scene9999_00")


def test_active_budget_roundtrip_and_errors(tmp_path):
    reader = _reader()
    budget = write_active_budget(tmp_path / "a", {"Area_1/office_1": np.array([9, 3, 3, 100])},
                                 {"method": "HPAL", "round": 1}, reader=reader)
    loaded = load_budget(tmp_path / "a")
    assert loaded.kind == "active" and loaded.amount == 3 and loaded.seed is None
    assert loaded.manifest["meta"] == {"method": "HPAL", "round": 1}
    assert loaded.indices("Area_1/office_1").tolist() == [3, 9, 100]
    assert loaded.indices("scene0000_00").tolist() == []
    assert budget.scenes == reader.scenes
    with pytest.raises(IndexError, match=r"indices of scene 'Area_1/office_1' expected in \[0, 3000\)"):
        write_active_budget(tmp_path / "b", {"Area_1/office_1": np.array([3000])}, {}, reader=reader)
    with pytest.raises(KeyError, match="'nowhere' are not in"):
        write_active_budget(tmp_path / "c", {"nowhere": np.array([0])}, {}, reader=reader)


def test_argument_errors(tmp_path):
    reader = _reader()
    with pytest.raises(ValueError, match="kind 'ratio' expected a fraction in \\(0, 1\\], got 2"):
        make_budget(reader, "ratio", 2, seed=0, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="'points_per_scene' expected an int >= 1, got 0.5"):
        make_budget(reader, "points_per_scene", 0.5, seed=0, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="use write_active_budget"):
        make_budget(reader, "active", 1, seed=0, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="kind expected one of ratio, points_per_scene, active, got 'rato'"):
        make_budget(reader, "rato", 0.1, seed=0, out_dir=tmp_path / "x")
    make_budget(reader, "ratio", 0.1, seed=0, out_dir=tmp_path / "x")
    with pytest.raises(FileExistsError, match="must be empty or absent"):
        make_budget(reader, "ratio", 0.1, seed=0, out_dir=tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        load_budget(tmp_path / "nothing")
    assert scene_filename("Area_1/office_1") == "Area_1__office_1.npy"


def test_annotated_budget_on_scans_without_labels(tmp_path):
    unlabelled = ArrayReader({"a": {"segment": np.full(50, IGNORE)}, "b/c": {"segment": np.full(30, IGNORE)}})
    write_annotated_budget(tmp_path / "n", {"a": np.array([7, 2, 40])}, {"a": np.array([4, 1, 0])},
                           {"method": "person"}, reader=unlabelled)
    budget = load_budget(tmp_path / "n")
    assert budget.kind == "annotated" and budget.amount == 3 and budget.manifest["meta"] == {"method": "person"}
    assert budget.indices("a").tolist() == [2, 7, 40]
    assert budget.labels("a").tolist() == [1, 4, 0]  # sorted together with the indices
    assert budget.indices("b/c").tolist() == [] and budget.labels("b/c").tolist() == []
    assert np.load(tmp_path / "n" / "a.labels.npy").tolist() == [1, 4, 0]
    assert (tmp_path / "n" / "b__c.labels.npy").is_file()
    segment = budget.labelled_segment("a", np.full(50, IGNORE))
    expected = np.full(50, IGNORE)
    expected[[2, 7, 40]] = [1, 4, 0]
    assert segment.dtype == np.int64 and segment.tolist() == expected.tolist()
    assert budget.mask("a", np.full(50, IGNORE)).sum() == 3  # the all-ignore hash is checked ...
    with pytest.raises(InputError, match="scene 'a': the budget was made for 50 points, the data has 51"):
        budget.mask("a", np.full(51, IGNORE))  # ... and the number of points is checked too
    with pytest.raises(InputError, match="scene 'a': the budget was made for 50 points, the data has 49"):
        budget.labelled_segment("a", np.full(49, IGNORE))


def test_index_budgets_have_no_labels_and_train_on_the_readers(tmp_path):
    reader = _reader()
    budget = make_budget(reader, "points_per_scene", 5, seed=0, out_dir=tmp_path / "b")
    seg = reader.load("scene0000_00")["segment"]
    assert budget.labels("scene0000_00") is None
    assert budget.labelled_segment("scene0000_00", seg).tolist() == seg.tolist()


def test_annotated_budget_keeps_the_previous_points_and_refuses_repeats(tmp_path):
    reader = _reader()
    previous = make_budget(reader, "points_per_scene", 5, seed=0, out_dir=tmp_path / "p")
    old = previous.indices("scene0000_00")
    new = np.setdiff1d(np.arange(4), old)[:1]
    budget = write_annotated_budget(tmp_path / "n", {"scene0000_00": new}, {"scene0000_00": np.array([6])}, {},
                                    reader=reader, previous=previous)
    seg = reader.load("scene0000_00")["segment"]
    assert budget.indices("scene0000_00").tolist() == sorted([*old.tolist(), int(new[0])])
    labels = dict(zip(budget.indices("scene0000_00").tolist(), budget.labels("scene0000_00").tolist()))
    assert labels == {**{int(i): int(seg[i]) for i in old}, int(new[0]): 6}  # the reader's, then the person's
    assert budget.indices("08/000123").tolist() == previous.indices("08/000123").tolist()
    with pytest.raises(ValueError, match=r"point\(s\) \[" + str(old[0]) + r"\] given more than once"):
        write_annotated_budget(tmp_path / "x", {"scene0000_00": old[:1]}, {"scene0000_00": np.array([1])}, {},
                               reader=reader, previous=previous)
    with pytest.raises(ValueError, match=r"point\(s\) \[3\] given more than once"):
        write_annotated_budget(tmp_path / "y", {"scene0000_00": np.array([3, 3])},
                               {"scene0000_00": np.array([1, 2])}, {}, reader=reader)
    with pytest.raises(ValueError, match=r"\(K,\) indices and \(K,\) labels, got shapes \(2,\) and \(1,\)"):
        write_annotated_budget(tmp_path / "z", {"scene0000_00": np.array([3, 4])}, {"scene0000_00": np.array([1])},
                               {}, reader=reader)
    with pytest.raises(KeyError, match="labels and indices expected the same scenes"):
        write_annotated_budget(tmp_path / "w", {"scene0000_00": np.array([3])}, {}, {}, reader=reader)
    with pytest.raises(IndexError, match=r"expected in \[0, 3000\)"):
        write_annotated_budget(tmp_path / "v", {"scene0000_00": np.array([3000])},
                               {"scene0000_00": np.array([1])}, {}, reader=reader)
    with pytest.raises(ValueError, match="kind 'annotated' holds a person's labels; use write_annotated_budget"):
        make_budget(reader, "annotated", 1, seed=0, out_dir=tmp_path / "u")


# --- validation of hand-written budget files (each fault names the file, the scene and the values) ---

class ClassedReader(ArrayReader):
    NUM_CLASSES = 8


def _budget_with(tmp_path, scene: str, indices: object, labels: object | None = None, num_classes=None):
    """A budget of ``_reader()`` whose files of ``scene`` are replaced by hand with ``np.save``; loaded."""
    reader = _reader()
    root = tmp_path / "b"
    if labels is None:
        make_budget(reader, "points_per_scene", 5, seed=0, out_dir=root)
    else:
        write_annotated_budget(root, {scene: np.array([1, 2])}, {scene: np.array([0, 1])}, {}, reader=reader)
        np.save(root / scene_filename(scene, ".labels.npy"), labels)
    np.save(root / scene_filename(scene), indices)
    return root / scene_filename(scene), lambda: load_budget(root, num_classes=num_classes)


@pytest.mark.parametrize("indices, message", [
    (np.array([-4000, 5, 9]), r"indices expected in \[0, 3000\) \(the scene's point count\), found 1 negative: "
                              r"\[-4000\]"),
    (np.array([5, 3000, 3001]), r"indices expected in \[0, 3000\) \(the scene's point count\), found 2 >= 3000: "
                                r"\[3000, 3001\]"),
    (np.array([1, 5, 5, 9, 9]), r"indices expected unique, found 2 repeated: \[5, 9\]"),
    (np.array([1, 9, 3, 100, 50]), r"indices expected sorted ascending, found 9 before 3 at position 1 "
                                   r"\(2 such places\)"),
    (np.array([1.0, 2.0]), r"indices expected a \(K,\) integer array \(int64\), found shape \(2,\) dtype float64"),
    (np.array([[1, 2], [3, 4]]), r"indices expected a \(K,\) integer array \(int64\), found shape \(2, 2\) "
                                 r"dtype int64"),
    (np.array([True, False]), r"indices expected a \(K,\) integer array \(int64\), found shape \(2,\) dtype bool"),
])
def test_bad_index_files_are_input_errors_naming_file_scene_values(tmp_path, indices, message):
    path, load = _budget_with(tmp_path, "Area_1/office_1", indices)
    with pytest.raises(InputError, match=re.escape(f"{path}: scene 'Area_1/office_1': ") + message):
        load()


def test_unreadable_index_files_are_input_errors(tmp_path):
    path, load = _budget_with(tmp_path, "08/000123", np.array([1, 2]))
    np.save(path, np.array([{"not": "indices"}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=re.escape(f"{path}: scene '08/000123': expected a .npy file of indices, "
                                                   "found one numpy cannot read")):
        load()
    path.write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(InputError, match=re.escape(f"{path}: scene '08/000123': expected a .npy file of indices")):
        load()


def test_valid_index_files_of_other_integer_dtypes_load_as_int64(tmp_path):
    for dtype in (np.int32, np.uint16, np.uint64):
        _, load = _budget_with(tmp_path / dtype.__name__, "scene0000_00", np.array([0, 7, 2999], dtype=dtype))
        idx = load().indices("scene0000_00")
        assert idx.dtype == np.int64 and idx.tolist() == [0, 7, 2999]
    _, load = _budget_with(tmp_path / "u64", "scene0000_00", np.array([3, 2**64 - 1], dtype=np.uint64))
    with pytest.raises(InputError, match=r"found 1 >= 3000: \[18446744073709551615\]"):  # not wrapped to -1
        load()


@pytest.mark.parametrize("labels, num_classes, message", [
    (np.array([0, 8]), 8, r"labels expected class ids \[0, 8\) or -100 \(ignore\), found 1 others: \[8\]"),
    (np.array([-1, -7]), 8, r"labels expected class ids \[0, 8\) or -100 \(ignore\), found 2 others: \[-7, -1\]"),
    (np.array([-3, 40]), None, r"labels expected class ids >= 0 or -100 \(ignore\), found 1 others: \[-3\]"),
    (np.array([1, 2, 3]), 8, r"expected one label per index of scene0000_00\.npy \(2\), found 3 labels"),
    (np.array([0.0, 1.0]), 8, r"class ids expected a \(K,\) integer array \(int64\), found shape \(2,\) "
                              r"dtype float64"),
])
def test_bad_annotated_labels_are_input_errors_naming_file_scene_values(tmp_path, labels, num_classes, message):
    _, load = _budget_with(tmp_path, "scene0000_00", np.array([1, 2]), labels, num_classes)
    labels_path = tmp_path / "b" / "scene0000_00.labels.npy"
    with pytest.raises(InputError, match=re.escape(f"{labels_path}: scene 'scene0000_00': ") + message):
        load()


def test_ignore_and_in_range_labels_load(tmp_path):
    _, load = _budget_with(tmp_path, "scene0000_00", np.array([1, 2]), np.array([IGNORE, 7]), num_classes=8)
    assert load().labels("scene0000_00").tolist() == [IGNORE, 7]
    _, load = _budget_with(tmp_path / "n", "scene0000_00", np.array([1, 2]), np.array([0, 40]), num_classes=None)
    assert load().labels("scene0000_00").tolist() == [0, 40]  # no class count given: only >= 0 is checked


def test_dataset_checks_annotated_labels_against_its_class_count_when_built(tmp_path):
    from pcseg.data.datasets import SegmentationDataset

    reader = ClassedReader({"a": {"coord": np.zeros((4, 3), np.float32), "color": np.zeros((4, 3), np.float32),
                                  "segment": np.full(4, IGNORE)}})
    write_annotated_budget(tmp_path / "b", {"a": np.array([0, 3])}, {"a": np.array([7, 8])}, {}, reader=reader)
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "b" / "a.labels.npy")) +
                       r": scene 'a': labels expected class ids \[0, 8\) or -100 \(ignore\), found 1 others: \[8\]"):
        SegmentationDataset(reader, voxel_size=0.1, budget=tmp_path / "b")


def test_manifest_faults_are_input_errors(tmp_path):
    root = make_budget(_reader(), "points_per_scene", 5, seed=0, out_dir=tmp_path / "b").root
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match=re.escape(f"{root / 'manifest.json'}: expected a JSON manifest")):
        load_budget(root)
    manifest["counts"]["per_scene"]["scene0000_00"]["points"] = -1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"counts.per_scene\['scene0000_00'\].points: expected the scene's point "
                                         r"count \(an int >= 0\), found -1"):
        load_budget(root)
    del manifest["label_hash"]["08/000123"]
    manifest["counts"]["per_scene"]["scene0000_00"]["points"] = 3000
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError,
                       match=r"label_hash: expected one entry per scene of 'scenes', found \['08/000123'\]"):
        load_budget(root)
