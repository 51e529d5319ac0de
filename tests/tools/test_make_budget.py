"""tools/make_budget.py on a tiny synthetic ScanNet (2 training rooms), run in-process."""
import runpy
from pathlib import Path

import numpy as np
import pytest

from pcseg.data.budget import load_budget
from pcseg.data.formats import IGNORE_INDEX, ScanNetReader
from pcseg.data.synthetic import make_scannet

REPO = Path(__file__).resolve().parents[2]
SPARSE = str(REPO / "configs" / "scannet" / "sparse_0.1pct.yaml")


@pytest.fixture(scope="module")
def scannet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    make_scannet(root, num_scenes=3, seed=0, num_points=20_000)  # 2 train rooms, 1 val room
    return root


@pytest.fixture(scope="module")
def make_budget_main():
    return runpy.run_path(str(REPO / "tools" / "make_budget.py"))["main"]


def _run(main, root, *args, config=SPARSE, budget=None):
    overrides = [f"data.kwargs.root={root}"] + ([f"data.budget={budget}"] if budget else [])
    return main(["--config", config, *args, *overrides])


def test_ratio_budget_goes_to_data_budget_with_brute_force_counts(make_budget_main, scannet_root, tmp_path, capsys):
    out = tmp_path / "budget"
    _run(make_budget_main, scannet_root, "--kind", "ratio", "--amount", "0.01", "--seed", "3", budget=out)
    budget = load_budget(out)  # the default --out is data.budget
    reader = ScanNetReader(scannet_root, "train")
    assert (budget.kind, budget.amount, budget.seed, budget.scenes) == ("ratio", 0.01, 3, reader.scenes)
    total_selected = np.zeros(reader.NUM_CLASSES, dtype=np.int64)
    for scene in reader.scenes:
        segment = reader.load(scene)["segment"]
        got = np.bincount(segment[budget.indices(scene)], minlength=reader.NUM_CLASSES)
        present = np.unique(segment[segment != IGNORE_INDEX])
        expected = np.zeros(reader.NUM_CLASSES, dtype=np.int64)
        for c in present:
            expected[c] = max(int((segment == c).sum() * 0.01), 1)
        np.testing.assert_array_equal(got, expected, err_msg=scene)
        total_selected += got
    table = capsys.readouterr().out.splitlines()
    rows = {line.rsplit(None, 3)[0]: line.rsplit(None, 3) for line in table[2:]}  # names may hold spaces
    for c, name in enumerate(reader.CLASS_NAMES):
        assert int(rows[name][1]) == total_selected[c]
    assert int(rows["total"][1]) == total_selected.sum() and rows["total"][3].endswith("%")


def test_points_per_scene_budget(make_budget_main, scannet_root, tmp_path):
    out = tmp_path / "pps"
    _run(make_budget_main, scannet_root, "--kind", "points_per_scene", "--amount", "20", "--seed", "0",
         "--out", str(out))
    budget = load_budget(out)
    reader = ScanNetReader(scannet_root, "train")
    for scene in reader.scenes:
        idx = budget.indices(scene)
        assert len(idx) == 20 and (reader.load(scene)["segment"][idx] != IGNORE_INDEX).all()


def test_existing_budget_is_kept_if_same_and_never_overwritten(make_budget_main, scannet_root, tmp_path, capsys):
    def run(seed, out):
        _run(make_budget_main, scannet_root, "--kind", "ratio", "--amount", "0.001", "--seed", str(seed),
             "--out", str(out))

    out = tmp_path / "budget"
    run(0, out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    run(0, out)
    assert "a budget with these settings exists" in capsys.readouterr().out
    different = r"manifest.json: a different budget exists here \(seed: requested 1, found 0\)"
    with pytest.raises(SystemExit, match=different):
        run(1, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit, match=r"other: exists and is not a budget directory"):
        run(0, tmp_path / "other")


def test_errors_name_what_is_wrong(make_budget_main, scannet_root):
    supervised = str(REPO / "configs" / "scannet" / "supervised.yaml")
    with pytest.raises(SystemExit, match=r"supervised.yaml: data.budget is not set; set it or pass --out"):
        _run(make_budget_main, scannet_root, "--kind", "ratio", "--amount", "0.01", "--seed", "0", config=supervised)
    with pytest.raises(SystemExit, match=r"--amount for --kind points_per_scene: expected an integer"):
        _run(make_budget_main, scannet_root, "--kind", "points_per_scene", "--amount", "0.5", "--seed", "0")
    with pytest.raises(SystemExit, match=r"amount for kind 'ratio' expected a fraction in \(0, 1\], got 2.0"):
        _run(make_budget_main, scannet_root, "--kind", "ratio", "--amount", "2", "--seed", "0", "--out", "unused")
