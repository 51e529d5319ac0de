"""tools/active_learn.py end to end: two tiny HPAL rounds on synthetic S3DIS rooms, resumed between them."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pcseg.data.budget import load_budget
from pcseg.data.synthetic import make_s3dis

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _config(tmp: Path) -> Path:
    """Two training rooms (Area_1, Area_2) and one validation room (Area_5) of 8000 points; HPAL, 1 epoch."""
    make_s3dis(tmp / "data", num_scenes=3, seed=0, num_points=8000, areas=(1, 2, 5))
    cfg = {"data": {"name": "TwoViews",
                    "kwargs": {"dataset": "S3DIS", "root": str(tmp / "data"), "voxel_size": 0.1,
                               "view_transforms": [{"name": "RandomRotateZ"}, {"name": "RandomFlip"},
                                                   {"name": "ChromaticJitter"}, {"name": "NormalizeColor"}]},
                    "train": {"split": "train", "transforms": []},
                    "val": {"split": "val", "transforms": [{"name": "NormalizeColor"}]}, "batch_size": 2},
           "model": {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 13, "D": 3},
           "method": {"name": "HPAL"}, "train": {"epochs": 1, "log_period": 1}, "eval": {"period": 0}}
    path = tmp / "hpal.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _active_learn(config: Path, work: Path, rounds: int, *extra: str) -> None:
    subprocess.run([sys.executable, str(REPO / "tools" / "active_learn.py"), "--config", str(config), "--rounds",
                    str(rounds), "--total-budget", "0.02", "--work-dir", str(work), *extra],
                   env=ENV, capture_output=True, text=True, timeout=120, check=True)


def test_two_rounds_resumed_after_the_first(tmp_path):
    config, work = _config(tmp_path), tmp_path / "work"
    _active_learn(config, work, 1)
    first = work / "round_0"
    kept = [first / "metrics.json", first / "model_last.pth", first / "budget" / "manifest.json",
            *sorted((first / "budget").glob("*.npy"))]
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept}
    assert not (work / "round_1").exists()

    main = runpy.run_path(str(REPO / "tools" / "active_learn.py"))["main"]
    with pytest.raises(SystemExit, match="pass --resume"):
        main(["--config", str(config), "--rounds", "2", "--total-budget", "0.02", "--work-dir", str(work)])
    _active_learn(config, work, 2, "--resume", "--warm-start")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == stamps  # round 0 reused, not redone
    log = (work / "round_1" / "train.log").read_text()
    assert f"model.init_from: loaded {first / 'model_last.pth'}; 0 tensors keep their fresh initialisation" in log

    b0, b1 = load_budget(first / "budget"), load_budget(work / "round_1" / "budget")
    points = b0.manifest["counts"]["total"]["points"]
    assert b0.manifest["counts"]["total"]["selected"] == round(0.2 * 0.02 * points)
    assert b1.manifest["counts"]["total"]["selected"] == round(0.02 * points)  # the whole budget after round 1
    assert b1.kind == "active" and b1.manifest["meta"]["round"] == 1 and b1.manifest["meta"]["strategy"] == "hpal"
    for scene in b0.scenes:
        assert np.isin(b0.indices(scene), b1.indices(scene)).all()  # cumulative
    for k in (0, 1):
        metrics = json.loads((work / f"round_{k}" / "metrics.json").read_text())
        assert metrics["round"] == k and 0 <= metrics["miou"] <= 1
        assert metrics["init_from"] == (None if k == 0 else str(first / "model_last.pth"))
        budget = load_budget(work / f"round_{k}" / "budget")
        assert metrics["labelled_points"] == budget.manifest["counts"]["total"]["selected"]

    with pytest.raises(SystemExit, match=r"round_0/budget/manifest.json: written by another schedule \(expected"):
        main(["--config", str(config), "--rounds", "2", "--total-budget", "0.03", "--work-dir", str(work), "--resume",
              "deterministic=false"])  # another budget in the same work dir; keeps this process's torch flags
