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
    expected = rf"error: {config}: model.name: model 'MinkUNet15A' unknown; known: LSeg, MinkUNet14A,"
    with pytest.raises(SystemExit, match=expected):
        train["main"](["--config", str(config), "--work-dir", str(tmp_path / "w"), "model.name=MinkUNet15A",
                       "deterministic=false"])  # keep this pytest process's torch flags at their defaults


def _records(work):
    return [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]


def test_resume_with_a_changed_config_is_refused_unless_the_keys_are_allowed(tmp_path, capsys):
    config = write_config(tmp_path, epochs=2, scheduler="constant", warmup_iters=0)
    work = tmp_path / "work"
    train = runpy.run_path(str(REPO / "tools" / "train.py"))
    common = ["--config", str(config), "--work-dir", str(work)]
    flags = "deterministic=false"  # keep this pytest process's torch flags
    train["main"](common + ["train.epochs=1", flags])  # a finished 1-epoch run: 3 steps at lr 0.02
    saved = (work / "config.yaml").read_bytes()
    capsys.readouterr()

    with pytest.raises(SystemExit) as refused:
        train["main"](common + ["--resume", "train.epochs=1", "train.lr=0.05", "data.batch_size=3", flags])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"error: {work / 'config.yaml'}: --resume with a changed config (data.batch_size: "
                                    f"2 -> 3; train.lr: 0.02 -> 0.05); resume with the saved config, or pass "
                                    f"--allow-changed data.batch_size,train.lr to accept the change")
    assert (work / "config.yaml").read_bytes() == saved  # not rewritten
    assert len(_records(work)) == 4  # nothing trained: 3 train records + 1 val

    with pytest.raises(SystemExit, match=r"data.batch_size: 2 -> 3\); resume with the saved config, or pass "
                                         r"--allow-changed data.batch_size"):
        train["main"](common + ["--resume", "--allow-changed", "train.lr", "train.epochs=1", "train.lr=0.05",
                                "data.batch_size=3", flags])
    assert (work / "config.yaml").read_bytes() == saved

    # an allowed change is accepted, logged, saved and used; a log period change takes effect too
    train["main"](common + ["--resume", "--allow-changed", "train.lr,train.log_period", "train.epochs=1",
                            "train.lr=0.05", "train.log_period=2", flags])
    assert "lr: 0.05" in (work / "config.yaml").read_text()
    assert "resume: train.lr changed from 0.02 to 0.05 (--allow-changed)" in (work / "train.log").read_text()
    assert len(_records(work)) == 4  # the 1-epoch run was complete: nothing left to train

