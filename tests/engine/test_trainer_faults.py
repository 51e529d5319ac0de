"""Faults the trainer must survive without losing or hiding data.

A run killed between writing model_best.pth and model_last.pth, non-finite losses and weights,
a resumed run whose learning rate was changed on purpose, and reader drops made in loader workers.
"""
import json
import subprocess
import sys

import pytest
import torch

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import SegmentationDataset
from pcseg.data.formats import S3DISReader
from pcseg.engine import trainer as trainer_module
from pcseg.engine.checkpoint import load_checkpoint
from pcseg.engine.evaluator import Evaluator
from pcseg.engine.hooks import Supervised
from pcseg.engine.loader import make_loader
from pcseg.engine.lr import WarmupLR
from pcseg.engine.trainer import NonFiniteError, Trainer, Validation

from .test_trainer import Pointwise, Recording, _samples


def _trainer(work, method, *, epochs=1, lr=0.1, num_train=6, validate=False, **kw):
    """Pointwise classifier on ``num_train`` samples, batch 2, constant lr, a checkpoint after every step."""
    torch.manual_seed(0)
    model = Pointwise()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = make_loader(_samples(num_train), batch_size=2, collate_fn=collate_sparse, train=True, seed=0)
    sched = WarmupLR(opt, epochs * len(loader), "constant")
    validation = None
    if validate:
        val_loader = make_loader(_samples(2), batch_size=1, collate_fn=collate_sparse, train=False, seed=0)
        validation = Validation(val_loader, Evaluator(2, device=torch.device("cpu")), period=1)
    return Trainer(model, method, opt, sched, loader, max_epochs=epochs, work_dir=work, device=torch.device("cpu"),
                   validation=validation, checkpoint_period=1, **kw)


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ case 8
def test_killed_between_the_best_and_the_last_write_then_resumed_leaves_a_consistent_pair(tmp_path, monkeypatch):
    _trainer(tmp_path / "full", Supervised(), validate=True).train()
    full_best, full_last = load_checkpoint(tmp_path / "full" / "model_best.pth"), \
        load_checkpoint(tmp_path / "full" / "model_last.pth")
    assert full_best["step"] == full_last["best_step"] == 3  # one epoch of 3 steps, evaluated at its end

    real_save, written = trainer_module.save_checkpoint, []

    def killed_after_the_first_write_of_the_final_save(ckpt, path):
        if ckpt["step"] == 3 and written:
            raise KeyboardInterrupt(f"killed before writing {path.name}")
        if ckpt["step"] == 3:
            written.append(path.name)
        real_save(ckpt, path)

    work = tmp_path / "killed"
    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_after_the_first_write_of_the_final_save)
    with pytest.raises(KeyboardInterrupt):
        _trainer(work, Supervised(), validate=True).train()
    monkeypatch.undo()
    assert written == ["model_best.pth"]  # best first: the last still holds the mid-epoch checkpoint
    assert load_checkpoint(work / "model_last.pth")["step"] == 2
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = work / f".model_last.pth.{dead.pid}.tmp"  # what a SIGKILL inside torch.save leaves
    orphan.write_bytes(b"half a checkpoint")

    _trainer(work, Supervised(), validate=True).train(resume=True)
    best, last = load_checkpoint(work / "model_best.pth"), load_checkpoint(work / "model_last.pth")
    assert best["step"] == last["best_step"] == 3 and last["step"] == 3
    assert _same_weights(best["model"], full_best["model"]) and _same_weights(last["model"], full_last["model"])
    assert best["best_miou"] == last["best_miou"] == full_best["best_miou"]
    assert not orphan.exists()
    log = (work / "train.log").read_text()
    assert f"removed {orphan}, a temporary left by a killed run" in log
    assert "is newer than the best" in log


@pytest.mark.parametrize("damage", ["missing", "stale"])
def test_resume_rewrites_a_missing_or_stale_best_from_the_last_that_recorded_it(tmp_path, damage):
    work = tmp_path / "run"
    _trainer(work, Supervised(), validate=True).train()
    last = load_checkpoint(work / "model_last.pth")
    assert last["best_step"] == last["step"] == 3  # the only evaluation was the best
    if damage == "missing":  # what an older pcseg (last written first) left when killed between the two
        (work / "model_best.pth").unlink()
    else:
        stale = dict(last, step=1, model={k: torch.zeros_like(v) for k, v in last["model"].items()})
        torch.save(stale, work / "model_best.pth")
    _trainer(work, Supervised(), validate=True).train(resume=True)  # nothing left to train; only the repair
    best = load_checkpoint(work / "model_best.pth")
    assert best["step"] == 3 and _same_weights(best["model"], last["model"])
    assert "rewrote it from model_last.pth (step 3)" in (work / "train.log").read_text()


# ------------------------------------------------------------------------------------------------ case 9
class NaNAt(Supervised):
    """Supervised, but the loss of step ``step`` is NaN; keeps the weights it saw at the start of that step."""

    def __init__(self, step):
        super().__init__()
        self.step, self.weights_before = step, None

    def losses(self, model, batch, state):
        losses = super().losses(model, batch, state)
        if state.step == self.step:
            self.weights_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
            losses = {"ce": losses["ce"] * float("nan")}
        return losses


def test_a_nan_loss_between_log_steps_never_reaches_model_last(tmp_path):
    method = NaNAt(step=1)
    trainer = _trainer(tmp_path, method, log_period=100)  # no log step before the mid-epoch checkpoint
    with pytest.raises(NonFiniteError) as err:
        trainer.train()
    assert str(err.value) == (f"loss is not finite at step 2 (epoch 1); training stopped and no checkpoint was "
                              f"written after it; the last good checkpoint: {tmp_path / 'model_last.pth'} "
                              f"(epoch 1, iteration 1, step 1)")
    saved = load_checkpoint(tmp_path / "model_last.pth")
    assert saved["step"] == 1 and _same_weights(saved["model"], method.weights_before)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not any(torch.isfinite(p).all() for p in trainer.model.parameters())  # the NaN did reach the model


class PoisonAfter(Supervised):
    """Supervised, but after step ``step`` one weight becomes NaN (the loss of that step was finite)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def after_step(self, model, state):
        if state.step == self.step:
            with torch.no_grad():
                model.linear.weight[0, 0] = float("nan")


def test_non_finite_weights_are_never_saved(tmp_path):
    with pytest.raises(NonFiniteError, match=r"^model weights are not finite after step 1 \(linear.weight\); "
                                             r"training stopped and no checkpoint was written; the last good "
                                             r"checkpoint: none \(no checkpoint written yet\)$"):
        _trainer(tmp_path, PoisonAfter(step=0)).train()
    assert not (tmp_path / "model_last.pth").exists()


# ----------------------------------------------------------------------------------------------- case 13
def test_resume_keeps_this_runs_learning_rate_and_optimiser_settings(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):  # dies at step 2, after the epoch-end checkpoint of step 2
        _trainer(tmp_path, Recording(fail_at=2), epochs=2, num_train=4, log_period=1).train()
    resumed = _trainer(tmp_path, Supervised(), epochs=2, num_train=4, log_period=1, lr=0.05)
    resumed.optimizer.param_groups[0]["momentum"] = 0.5  # a changed train.momentum
    resumed.train(resume=True)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["lr"]) for r in records] == [(1, 0.1), (2, 0.1), (3, 0.05), (4, 0.05)]
    assert resumed.optimizer.param_groups[0]["momentum"] == 0.5
    assert resumed.scheduler.last_epoch == 4  # the schedule's position came from the checkpoint


# ----------------------------------------------------------------------------------------------- case 14
def _write_room(folder, objects):
    (folder / "Annotations").mkdir(parents=True)
    for name, lines in objects.items():
        (folder / "Annotations" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def test_reader_drops_in_loader_workers_reach_train_log_and_log_jsonl(tmp_path):
    root = tmp_path / "s3dis"
    points = [f"{x * 0.1:.1f} {y * 0.1:.1f} 0.0 {10 * x} {10 * y} 50" for x in range(4) for y in range(4)]
    _write_room(root / "Area_1" / "office_1", {"floor_1": points + ["1.0 2.0 3.0 10 20"],  # 5 values: skipped
                                               "chair_1": ["0.5 0.5 0.5 1 2 3", "not a number line 1 2"]})
    _write_room(root / "Area_2" / "office_1", {"wall_1": points[:8] + ["0.1 0.2 0.3 4 5 6 7"]})  # 7 values
    _write_room(root / "Area_5" / "office_1", {"wall_1": points})
    dataset = SegmentationDataset(S3DISReader(root, "train", cache_dir=tmp_path / "cache"), voxel_size=0.05)
    torch.manual_seed(0)
    model = Pointwise()
    model.linear = torch.nn.Linear(3, 13)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    # both training rooms in one batch: collate sums their reports (2 + 1 corrupt lines)
    loader = make_loader(dataset, batch_size=2, collate_fn=collate_sparse, train=True, seed=0, num_workers=1)
    trainer = Trainer(model, Supervised(), opt, WarmupLR(opt, 2, "constant"), loader, max_epochs=2,
                      work_dir=tmp_path / "work", device=torch.device("cpu"), log_period=10)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    reports = [r for r in records if r["type"] == "load_report"]
    # 3 corrupt lines in the two training rooms, each room loaded once per epoch (the 2nd epoch from the cache)
    assert [(r["epoch"], r["step"], r["skipped_lines"]) for r in reports] == [(1, 1, 3), (2, 2, 3)]
    warnings = [line for line in (tmp_path / "work" / "train.log").read_text().splitlines() if "WARNING" in line]
    assert [w.split("] ", 1)[1] for w in warnings] == [
        f"epoch {e}: the readers dropped or remapped data in this epoch's scenes: skipped_lines 3 (the per-file "
        f"warnings are in the data-loader workers' output)" for e in (1, 2)]
