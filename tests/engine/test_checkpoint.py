import os
import random

import numpy as np
import pytest
import torch

from pcseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "model_last.pth"
    save_checkpoint({"w": torch.arange(3), "epoch": 2}, path)
    got = load_checkpoint(path)
    assert torch.equal(got["w"], torch.arange(3)) and got["epoch"] == 2
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model_last.pth"]  # no temporary left


def test_crash_between_write_and_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model_last.pth"
    save_checkpoint({"epoch": 1}, path)

    def crash(src, dst):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # old file intact, the new one never replaced it
    assert sorted(f.name for f in tmp_path.iterdir()) == ["model_last.pth"]  # and its temporary is gone


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    device = torch.device("cpu")
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint({"rng": get_rng_state(device)}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"], device)
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")
