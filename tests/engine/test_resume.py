"""A run SIGKILLed mid-epoch and resumed with --resume ends bit-identical to an uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import torch

from pcseg.engine.checkpoint import load_checkpoint

from .tiny import REPO, write_config

TRAIN = [sys.executable, str(REPO / "tools" / "train.py")]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(config, work_dir, *extra):
    subprocess.run(TRAIN + ["--config", str(config), "--work-dir", str(work_dir), *extra],
                   env=ENV, check=True, capture_output=True, timeout=120)


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    # 16 images, batch 2 → 8 iterations per epoch; a mid-epoch checkpoint every 3 iterations
    config = write_config(tmp_path, epochs=2, checkpoint_period=3, num_train=16)
    _run(config, tmp_path / "full")

    work = tmp_path / "killed"
    proc = subprocess.Popen(TRAIN + ["--config", str(config), "--work-dir", str(work)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = work / "model_last.pth"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(last)
    assert (killed_at["epoch"], killed_at["iter"]) == (0, 3)  # the first mid-epoch checkpoint

    _run(config, work, "--resume")
    full, resumed = load_checkpoint(tmp_path / "full" / "model_last.pth"), load_checkpoint(last)
    assert resumed["step"] == full["step"] == 16
    assert full["model"].keys() == resumed["model"].keys()
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    for a, b in zip(full["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert resumed["best_miou"] == full["best_miou"]
