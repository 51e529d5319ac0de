"""configs/image2d/sparse_pixels.yaml end to end: synthetic street images → 50-pixel budget → train + eval."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from miou_oracle import checkpoint_val_miou
from pcseg.data.synthetic import write_image_folder

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "image2d" / "sparse_pixels.yaml")
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _images_with_budget(root: Path, num_images: int, width: int = 160) -> list[str]:
    """Street images and a 50-pixel budget under ``root``; the overrides that point the config at them."""
    write_image_folder(root / "data", num_images, seed=0, width=width)
    overrides = [f"data.kwargs.root={root / 'data'}", f"data.budget={root / 'budget'}"]
    make_budget = runpy.run_path(str(REPO / "tools" / "make_budget.py"))["main"]
    make_budget(["--config", CONFIG, "--kind", "points_per_scene", "--amount", "50", "--seed", "0", *overrides])
    return overrides


def _train(work: Path, *overrides: str) -> list[dict]:
    command = [sys.executable, str(REPO / "tools" / "train.py"), "--config", CONFIG, "--work-dir", str(work),
               "train.log_period=1", "train.warmup_iters=0", *overrides]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]


def test_one_epoch_on_four_images_then_evaluation(tmp_path):
    overrides = _images_with_budget(tmp_path, num_images=6)  # 4 train, 2 val
    records = _train(tmp_path / "work", *overrides, "train.epochs=1", "data.batch_size=2", "eval.period=1")
    assert [r["type"] for r in records] == ["train", "train", "val"]
    # the logged mIoU is that of the saved last model, rerun on the 2 val images and scored in numpy
    assert records[-1]["miou"] == pytest.approx(checkpoint_val_miou(tmp_path / "work"), abs=1e-12)


def test_loss_decreases_on_one_image(tmp_path):
    overrides = _images_with_budget(tmp_path, num_images=2, width=96)  # 1 train, 1 val; 96 x 29 for speed
    records = _train(tmp_path / "work", *overrides, "train.epochs=1", "data.kwargs.loop=20", "data.batch_size=1",
                     "eval.period=0", "train.lr=0.01")
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), losses
