import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from pcseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from pcseg.utils.atomic import remove_stale_temporaries
from pcseg.utils.errors import InputError


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


def test_missing_truncated_or_foreign_checkpoints_are_input_errors_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.pth: expected a checkpoint file, no such file"):
        load_checkpoint(tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    save_checkpoint({"w": torch.arange(1000)}, good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # a copy cut short
    with pytest.raises(InputError, match=r"torn\.pth: expected a checkpoint written by torch.save, cannot read it"):
        load_checkpoint(torn)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(InputError, match=r"notes\.pth: expected a checkpoint written by torch.save"):
        load_checkpoint(text)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(InputError, match=r"list\.pth: expected a checkpoint holding a dict, got list"):
        load_checkpoint(listed)


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "model_last.pth"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid names a process that no longer runs
    orphan = tmp_path / f".model_last.pth.{dead.pid}.tmp"
    mine = tmp_path / f".model_last.pth.{os.getpid()}.tmp"  # a writer that is still running
    other = tmp_path / f".model_best.pth.{dead.pid}.tmp"  # another file's temporary
    for path in (orphan, mine, other):
        path.write_bytes(b"partial")
    assert remove_stale_temporaries(target) == [orphan]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])
