"""tools/train.py and tools/test.py end to end on a tiny image dataset (D=2), in subprocesses."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pcseg.engine.checkpoint import load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.tiny import REPO, write_config  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _tool(name, *args):
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], env=ENV, capture_output=True,
                          text=True, timeout=120, check=True)


def test_train_then_test_on_a_tiny_config(tmp_path):
    config = write_config(tmp_path)
    work = tmp_path / "work"
    _tool("train.py", "--config", str(config), "--work-dir", str(work), "train.epochs=1", "train.optimizer=adamw",
          "train.lr=1e-3", "train.scheduler=cosine")
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train"] * 3 + ["val"]  # 6 images / batch 2, log_period 1
    assert {"model_last.pth", "model_best.pth", "config.yaml", "train.log"} <= {p.name for p in work.iterdir()}
    assert "optimizer: adamw" in (work / "config.yaml").read_text()

    preds = tmp_path / "preds"
    out = _tool("test.py", "--config", str(config), "--checkpoint", str(work / "model_best.pth"),
                "--save-predictions", str(preds)).stdout
    miou_line = [line for line in out.splitlines() if line.startswith("mIoU")]
    assert miou_line and float(miou_line[0].split()[1]) == pytest.approx(100 * records[-1]["miou"], abs=0.051)
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["class_0", "class_1", "class_2"]
    saved = sorted(p.name for p in preds.iterdir())
    assert saved == ["img00.npy", "img01.npy"]
    pred = np.load(preds / "img00.npy")
    assert pred.dtype == np.int32 and pred.shape == (24 * 24,)


def test_config_errors_exit_with_the_field_named(tmp_path):
    config = write_config(tmp_path)
    train = runpy.run_path(str(REPO / "tools" / "train.py"))
    with pytest.raises(SystemExit, match=r"error: command line: train.lrr unknown; known: amp, betas"):
        train["main"](["--config", str(config), "train.lrr=0.1"])


def test_torchrun_two_processes_on_cpu(tmp_path):
    config = write_config(tmp_path, num_train=8, checkpoint_period=1)
    work = tmp_path / "work"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(REPO / "tools" / "train.py"), "--config", str(config), "--work-dir", str(work),
                    "train.epochs=1"], env=ENV, capture_output=True, text=True, timeout=120, check=True)
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    # 8 images over 2 processes with batch 2 per process → 2 iterations; rank 0 alone writes
    assert [(r["type"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("val", 2)]
    ckpt = load_checkpoint(work / "model_last.pth")
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and ckpt["step"] == 2


def test_unknown_model_name_exits_naming_the_config(tmp_path):
    config = write_config(tmp_path)
    train = runpy.run_path(str(REPO / "tools" / "train.py"))
    with pytest.raises(SystemExit, match=rf"error: {config}: model 'MinkUNet15A' unknown; known: MinkUNet14A,"):
        train["main"](["--config", str(config), "--work-dir", str(tmp_path / "w"), "model.name=MinkUNet15A",
                       "deterministic=false"])  # keep this pytest process's torch flags at their defaults
