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

from miou_oracle import checkpoint_val_miou
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
    subprocess.run([sys.executable, str(REPO / "tools" / "active_learn.py"), "--config", str(config),
                    f"active.rounds={rounds}", "active.total_budget=0.02", "--work-dir", str(work), *extra],
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
        main(["--config", str(config), "active.rounds=2", "active.total_budget=0.02", "--work-dir", str(work)])
    _active_learn(config, work, 2, "--resume", "active.warm_start=true")
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
        assert metrics["round"] == k  # its mIoU: that of its own last model, rerun on Area_5 and scored in numpy
        assert metrics["miou"] == pytest.approx(checkpoint_val_miou(work / f"round_{k}"), abs=1e-12)
        assert metrics["init_from"] == (None if k == 0 else str(first / "model_last.pth"))
        budget = load_budget(work / f"round_{k}" / "budget")
        assert metrics["labelled_points"] == budget.manifest["counts"]["total"]["selected"]

    with pytest.raises(SystemExit, match=r"round_0/select.stage.json: stage 'select' finished with other settings "
                                         r"\(labelled_points: 64 -> 96; total_budget: 0.02 -> 0.03\); restore them"):
        main(["--config", str(config), "active.rounds=2", "active.total_budget=0.03", "--work-dir", str(work),
              "--resume", "deterministic=false"])  # another budget in the same work dir; keeps this process's flags


@pytest.mark.parametrize("overrides, message", [
    ([], "active: missing; active learning reads its rounds from an 'active:' section (rounds, total_budget, "),
    (["active.rounds=1", "active.total_budget=0.02", "active.selection.radiuss=1"],
     "active.selection.radiuss unknown; known: candidate_factor, grids, max_cosine, radius, weights"),
    (["active.rounds=1", "active.total_budget=0.02", "active.selection.weights=[1.0]"],
     "active.selection.weights: expected 4 values (the point level, then one per grid [0.1, 0.5, 1.0]), got 1"),
    (["active.rounds=1", "active.total_budget=0.02", "active.strategy=best"],
     "active.strategy: expected one of hpal, margin, random, got 'best'"),
    (["active.rounds=0", "active.total_budget=0.02"], "active.rounds: expected an int >= 1, got 0"),
    (["active.rounds=1", "active.total_budget=0.02", "data.budget=some/budget"],
     "data.budget: is set (some/budget); active learning writes its own budget per round, remove it"),
])
def test_protocol_mistakes_end_with_one_error_line_naming_the_config(tmp_path, overrides, message, capsys):
    config = _config(tmp_path)
    main = runpy.run_path(str(REPO / "tools" / "active_learn.py"))["main"]
    with pytest.raises(SystemExit) as err:
        main(["--config", str(config), "--work-dir", str(tmp_path / "work"), *overrides])
    assert str(err.value).startswith(f"error: {config}: {message}") and err.value.code == 2
    assert not (tmp_path / "work").exists()


def test_selection_settings_reach_the_selection(tmp_path):
    """active.selection is what the rounds select with: HPAL with the point level only and no suppression
    picks exactly what plain margin sampling picks, and a top-M too small for the count fails."""
    torch = pytest.importorskip("torch")
    from pcseg.engine.config import load_config
    from pcseg.methods.hpal import SelectionSettings
    from pcseg.methods.hpal.rounds import prediction_dataset, select_next, selection_settings
    from pcseg.models import build_model

    cfg = load_config(_config(tmp_path), ["active.rounds=2", "active.total_budget=0.02",
                                          "active.selection={grids: [], weights: [1.0], max_cosine: 2.0}"])
    settings = selection_settings(cfg)
    assert settings == SelectionSettings(grids=(), weights=(1.0,), max_cosine=2.0)
    dataset = prediction_dataset(cfg)
    torch.manual_seed(0)
    model = build_model({"name": "MinkUNet14A", "in_channels": 3, "num_classes": 13, "D": 3})
    cpu = torch.device("cpu")
    margin = select_next(dataset, None, model, 40, "margin", 0, cpu)
    flat = select_next(dataset, None, model, 40, "hpal", 0, cpu, settings)
    assert flat.keys() == margin.keys() and all(np.array_equal(flat[s], margin[s]) for s in margin)
    hierarchical = select_next(dataset, None, model, 40, "hpal", 0, cpu, SelectionSettings())
    assert any(not np.array_equal(hierarchical[s], margin[s]) for s in margin)
    with pytest.raises(ValueError, match="raise candidate_factor"):
        select_next(dataset, None, model, 40, "hpal", 0, cpu, SelectionSettings(candidate_factor=0.01))
