"""The tools on the usual ScanNet download for semantic segmentation, run in-process with a tiny schedule.

The root holds only ``scans/<scene>/<scene>_vh_clean_2.ply`` and ``_vh_clean_2.labels.ply`` per scene
(``download-scannet.py --type _vh_clean_2.ply --type _vh_clean_2.labels.ply``): no over-segmentation,
no aggregation, no split files. The splits come from the official lists shipped with pcseg: two
official train scenes and one official val scene are on disk.
"""
import csv
import json
import runpy
from pathlib import Path

import numpy as np
import pytest

from pcseg.data.budget import load_budget
from pcseg.data.formats import IGNORE_INDEX, nyu40_to_scannet20
from pcseg.data.synthetic import INDOOR_CLASSES, generate_room, write_scannet_scene

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "scannet" / "sparse_0.1pct.yaml")
TRAIN = ("scene0002_00", "scene0000_00")  # lines 287 and 828 of the official train list: its order
VAL = "scene0011_00"  # official val
NYU40 = np.array([c.nyu40 for c in INDOOR_CLASSES])

pytestmark = pytest.mark.filterwarnings("ignore:.*the official (train|val) list shipped with pcseg is used")


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """(root, oracle): the rooms written as a two-PLY-files-per-scene download; oracle: name → IndoorScene."""
    root = tmp_path_factory.mktemp("scannet_minimal")
    oracle = {}
    for i, name in enumerate((*TRAIN, VAL)):
        oracle[name] = generate_room(np.random.default_rng([7, i]), num_points=3000)
        write_scannet_scene(oracle[name], root, name)
        for extra in (f"{name}_vh_clean_2.0.010000.segs.json", f"{name}.aggregation.json"):
            (root / "scans" / name / extra).unlink()
    assert sorted(p.name for p in root.iterdir()) == ["scans"]
    assert {p.name for p in (root / "scans" / VAL).iterdir()} == {f"{VAL}_vh_clean_2.ply",
                                                                  f"{VAL}_vh_clean_2.labels.ply"}
    return root, oracle


def _tool(name: str):
    return runpy.run_path(str(REPO / "tools" / f"{name}.py"))["main"]


def _overrides(root: Path, budget: Path) -> list[str]:
    return [f"data.kwargs.root={root}", "data.kwargs.voxel_size=0.1", f"data.budget={budget}", "data.num_workers=0",
            "model.name=MinkUNet14A", "train.epochs=1", "train.amp=none", "train.log_period=1", "eval.period=1"]


def _segment(scene) -> np.ndarray:
    return nyu40_to_scannet20(NYU40[scene.semantic])[0]


def test_budget_train_test_visualize_annotate(download, tmp_path):
    root, oracle = download
    budget_dir = tmp_path / "budget"
    overrides = _overrides(root, budget_dir)

    with pytest.warns(UserWarning, match=r"no scannetv2_train\.txt, so the official train list shipped with pcseg "
                                         r"is used: 2 of its 1201 scenes are under"):
        budget = _tool("make_budget")(["--config", CONFIG, "--kind", "ratio", "--amount", "0.01", "--seed", "0",
                                       *overrides])
    assert budget.scenes == list(TRAIN)
    for name in TRAIN:  # brute force over the generator's labels: max(int(n_c * p), 1) per class present
        segment = _segment(oracle[name])
        got = np.bincount(segment[budget.indices(name)], minlength=20)
        expected = [max(int((segment == c).sum() * 0.01), 1) if (segment == c).any() else 0 for c in range(20)]
        assert got.tolist() == expected, name

    work = tmp_path / "work"
    _tool("train")(["--config", CONFIG, "--work-dir", str(work), *overrides])
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "val"]  # 2 training scenes / batch 2; one evaluation
    assert {"model_last.pth", "model_best.pth"} <= {p.name for p in work.iterdir()}

    preds = tmp_path / "preds"
    metrics = _tool("test")(["--config", CONFIG, "--checkpoint", str(work / "model_best.pth"),
                             "--save-predictions", str(preds), *overrides])
    assert sorted(p.name for p in preds.iterdir()) == [f"{VAL}.npy"]
    pred = np.load(preds / f"{VAL}.npy")
    assert pred.shape == (len(oracle[VAL].coord),) and pred.dtype == np.int32
    segment = _segment(oracle[VAL])
    valid = segment != IGNORE_INDEX
    confusion = np.bincount(segment[valid] * 20 + pred[valid], minlength=400).reshape(20, 20)  # rows: truth
    np.testing.assert_array_equal(metrics.confusion.numpy(), confusion)  # every labelled point, point level

    written = _tool("visualize")(["--config", CONFIG, "--checkpoint", str(work / "model_best.pth"),
                                  "--out", str(tmp_path / "vis"), *overrides])
    assert [p.name for p in written] == [f"{VAL}.png"] and written[0].stat().st_size > 0
    assert {f"{VAL}_pred.ply", f"{VAL}_gt.ply"} <= {p.name for p in (tmp_path / "vis").iterdir()}

    annotate = _tool("annotate")
    to_label = annotate(["select", "--config", CONFIG, "--count", "6", "--strategy", "random",
                         "--out", str(tmp_path / "pick"), *overrides])
    with open(to_label, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["scene"] for r in rows} <= set(TRAIN)
    for k, row in enumerate(rows):
        coord = oracle[row["scene"]].coord[int(row["index"])]
        np.testing.assert_allclose([float(row[a]) for a in "xyz"], coord, atol=1e-5)
        row["label"] = str(k)
    filled = tmp_path / "filled.csv"
    with open(filled, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    annotate(["apply", "--labels", str(filled), "--config", CONFIG, "--out", str(tmp_path / "annotated"), *overrides])
    annotated = load_budget(tmp_path / "annotated")
    got = {(s, int(i)): int(c) for s in annotated.scenes for i, c in zip(annotated.indices(s), annotated.labels(s))}
    assert got == {(r["scene"], int(r["index"])): k for k, r in enumerate(rows)}
