"""tools/annotate.py: select → a person fills to_label.csv → apply, on synthetic S3DIS rooms without labels."""
import csv
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from plyfile import PlyData

from pcseg.data.budget import load_budget
from pcseg.data.formats import IGNORE_INDEX, S3DISReader
from pcseg.data.formats.s3dis import S3DIS_CLASS_NAMES
from pcseg.data.synthetic import make_s3dis
from pcseg.engine.build import build_dataset
from pcseg.engine.checkpoint import save_checkpoint
from pcseg.engine.config import load_config
from pcseg.models import build_model

REPO = Path(__file__).resolve().parents[2]
HEADER = ["scene", "index", "x", "y", "z", "suggested", "label"]
MODEL = {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 13, "D": 3}

pytestmark = pytest.mark.filterwarnings("ignore:.*unknown, its .* points mapped to ignore")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two training rooms whose annotation files name no known class: every point is ignore (own scans).

    Returns the config path, the data root and a randomly initialised checkpoint.
    """
    tmp = tmp_path_factory.mktemp("annotate")
    make_s3dis(tmp / "data", num_scenes=2, seed=0, num_points=3000, areas=(1, 2))
    for room in (tmp / "data").glob("Area_*/*/Annotations"):
        for k, path in enumerate(sorted(room.glob("*.txt"))):
            path.rename(room / f"scan_{k}.txt")
    cfg = {"data": {"name": "S3DIS", "kwargs": {"root": str(tmp / "data"), "voxel_size": 0.1},
                    "train": {"split": "train", "transforms": []},
                    "val": {"split": "val", "transforms": [{"name": "NormalizeColor"}]}},
           "model": MODEL, "method": {"name": "Supervised"}}
    config = tmp / "scans.yaml"
    config.write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    checkpoint = tmp / "model.pth"
    save_checkpoint({"model": build_model(MODEL).state_dict()}, checkpoint)
    return config, tmp / "data", checkpoint


@pytest.fixture(scope="module")
def annotate():
    return runpy.run_path(str(REPO / "tools" / "annotate.py"))["main"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == HEADER
        return list(reader)


def _write_rows(path: Path, rows: list[dict], header=HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _fill(to_label: Path, out: Path, seed: int) -> dict:
    """The person: a random class per row, as a name on even rows and as an id on odd ones.

    Returns (scene, index) → class id, read back from the written file with the csv module.
    """
    rng = np.random.default_rng(seed)
    rows = _rows(to_label)
    for k, row in enumerate(rows):
        cls = int(rng.integers(len(S3DIS_CLASS_NAMES)))
        row["label"] = S3DIS_CLASS_NAMES[cls] if k % 2 == 0 else str(cls)
    _write_rows(out, rows)
    return {(r["scene"], int(r["index"])): (S3DIS_CLASS_NAMES.index(r["label"]) if not r["label"].isdigit()
                                            else int(r["label"])) for r in _rows(out)}


def _budget_labels(path: Path) -> dict:
    budget = load_budget(path)
    return {(s, int(i)): int(c) for s in budget.scenes for i, c in zip(budget.indices(s), budget.labels(s))}


def _check_selection(out: Path, rows: list[dict], data: Path) -> None:
    """Rows are unique raw points with their coordinates; each scene's PLY highlights exactly its rows."""
    reader = S3DISReader(data, "train")
    assert len({(r["scene"], r["index"]) for r in rows}) == len(rows)
    for scene in {r["scene"] for r in rows}:
        coord = reader.load(scene)["coord"]
        mine = [(line, r) for line, r in enumerate(rows, start=2) if r["scene"] == scene]
        idx = np.array([int(r["index"]) for _, r in mine])
        np.testing.assert_allclose([[float(r[a]) for a in "xyz"] for _, r in mine], coord[idx], atol=1e-5)
        vertex = PlyData.read(str(out / (scene.replace("/", "__") + ".ply")))["vertex"]
        assert len(vertex) == len(coord)
        marked = np.flatnonzero(vertex["label"] >= 0)
        assert marked.tolist() == sorted(idx.tolist())
        assert {int(vertex["label"][int(r["index"])]): line for line, r in mine} == {line: line for line, _ in mine}
        assert (vertex["red"][marked] == 255).all() and (vertex["green"][marked] == 0).all()


def test_a_round_select_fill_apply_train(scans, annotate, tmp_path):
    config, data, checkpoint = scans
    # round 0: random picks, no model yet
    to_label = annotate(["select", "--config", str(config), "--count", "25", "--strategy", "random",
                         "--out", str(tmp_path / "r0")])
    rows0 = _rows(to_label)
    assert len(rows0) == 25 and all(r["label"] == "" and r["suggested"] == "" for r in rows0)
    _check_selection(tmp_path / "r0", rows0, data)
    given0 = _fill(to_label, tmp_path / "filled0.csv", seed=1)
    annotate(["apply", "--labels", str(tmp_path / "filled0.csv"), "--config", str(config),
              "--out", str(tmp_path / "b0")])
    b0 = load_budget(tmp_path / "b0")
    assert b0.kind == "annotated" and b0.manifest["counts"]["total"]["selected"] == 25
    assert _budget_labels(tmp_path / "b0") == given0

    # round 1: the model's HPAL picks outside b0, with suggestions
    to_label = annotate(["select", "--config", str(config), "--checkpoint", str(checkpoint), "--budget",
                         str(tmp_path / "b0"), "--count", "30", "--out", str(tmp_path / "r1")])
    rows1 = _rows(to_label)
    assert len(rows1) == 30 and all(r["suggested"] in S3DIS_CLASS_NAMES for r in rows1)
    assert not {(r["scene"], int(r["index"])) for r in rows1} & set(given0)
    _check_selection(tmp_path / "r1", rows1, data)
    given1 = _fill(to_label, tmp_path / "filled1.csv", seed=2)
    annotate(["apply", "--labels", str(tmp_path / "filled1.csv"), "--config", str(config),
              "--budget", str(tmp_path / "b0"), "--out", str(tmp_path / "b1")])
    assert _budget_labels(tmp_path / "b1") == {**given0, **given1}

    # training (the config's dataset with data.budget=b1) sees exactly the person's labels
    cfg = load_config(str(config), [f"data.budget={tmp_path / 'b1'}", "data.kwargs.voxel_size=0.002"])
    dataset = build_dataset(cfg, cfg.data.train, train=True)
    for i, scene in enumerate(dataset.reader.scenes):
        sample = dataset[i]
        mine = {index: cls for (s, index), cls in {**given0, **given1}.items() if s == scene}
        idx, cls = np.array(sorted(mine)), np.array([mine[k] for k in sorted(mine)])
        expected = np.full(len(sample["point_labels"]), IGNORE_INDEX)
        expected[idx] = cls
        np.testing.assert_array_equal(sample["point_labels"].numpy(), expected)
        voxels = sample["inverse"].numpy()[idx]
        assert len(np.unique(voxels)) == len(idx)  # one budget point per voxel: its label is the voxel's
        np.testing.assert_array_equal(sample["labels"].numpy()[voxels], cls)
        assert (sample["labels"] != IGNORE_INDEX).sum() == len(idx)

    # points of the previous budget cannot be applied again
    with pytest.raises(SystemExit, match=r"filled0.csv:2: field 'index': expected a point not yet labelled"):
        annotate(["apply", "--labels", str(tmp_path / "filled0.csv"), "--config", str(config),
                  "--budget", str(tmp_path / "b0"), "--out", str(tmp_path / "b2")])
    assert not (tmp_path / "b2").exists()


@pytest.fixture(scope="module")
def filled(scans, annotate, tmp_path_factory):
    """A valid filled-in CSV of 6 random points (lines 2 … 7)."""
    config, _, _ = scans
    out = tmp_path_factory.mktemp("filled")
    annotate(["select", "--config", str(config), "--count", "6", "--strategy", "random", "--out", str(out / "sel")])
    _fill(out / "sel" / "to_label.csv", out / "filled.csv", seed=0)
    return _rows(out / "filled.csv")


def _set(line: int, **values):
    def edit(rows):
        rows[line - 2].update(values)
        return rows
    return edit


BAD = {
    "unknown scene": (_set(2, scene="Area_9/nowhere"), 2, "scene", "one of the 2 training scenes"),
    "index out of range": (_set(3, index="999999"), 3, "index", r"a point index in \[0, 3000\)"),
    "index not a number": (_set(4, index="12a"), 4, "index", "a point index"),
    "unknown class": (_set(5, label="chiar"), 5, "label", "a class name \\(ceiling, floor"),
    "class id out of range": (_set(6, label="13"), 6, "label", r"a class name .* or a class id in \[0, 13\), got '13'"),
    "empty label": (_set(7, label=""), 7, "label", "a class name .*, got nothing"),
    "moved point": (lambda rows: _set(3, x=str(float(rows[1]["x"]) + 0.5))(rows), 3, "x,y,z", "the coordinates"),
    "point twice": (lambda rows: rows + [dict(rows[0])], 8, "index", "each point once.* also on line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_apply_names_file_line_and_field_of_each_mistake(scans, annotate, filled, tmp_path, case):
    config = scans[0]
    edit, line, field, expected = BAD[case]
    path = _write_rows(tmp_path / "filled.csv", edit([dict(r) for r in filled]))
    with pytest.raises(SystemExit, match=rf"{path}:{line}: field '{field}': expected {expected}"):
        annotate(["apply", "--labels", str(path), "--config", str(config), "--out", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


def test_apply_lists_every_mistake_and_checks_the_header(scans, annotate, filled, tmp_path):
    config = scans[0]
    rows = _set(2, label="")(_set(5, scene="nowhere")([dict(r) for r in filled]))
    path = _write_rows(tmp_path / "two.csv", rows)
    with pytest.raises(SystemExit) as err:
        annotate(["apply", "--labels", str(path), "--config", str(config), "--out", str(tmp_path / "b")])
    assert "2 mistake(s)" in str(err.value)
    assert f"{path}:2: field 'label'" in str(err.value) and f"{path}:5: field 'scene'" in str(err.value)
    path = _write_rows(tmp_path / "header.csv", filled, header=HEADER[:-1])
    with pytest.raises(SystemExit, match=rf"{path}:1: field 'label': expected a header naming the columns"):
        annotate(["apply", "--labels", str(path), "--config", str(config), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="--strategy hpal ranks points with a model: pass --checkpoint"):
        annotate(["select", "--config", str(config), "--count", "3", "--out", str(tmp_path / "s")])
