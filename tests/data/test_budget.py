import json

import numpy as np
import pytest

from pcseg.data.budget import (
    label_hash, load_budget, make_budget, sample_points_per_scene, scene_filename, write_active_budget,
    write_annotated_budget,
)

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
    with pytest.raises(ValueError, match="labels of scene 'a' do not match"):
        budget.mask("a", np.full(51, IGNORE))  # ... and pins the number of points
    with pytest.raises(ValueError, match="labels of scene 'a' do not match"):
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
