"""In-process checks of the loop: method and plain hook order, after_train on errors, clipping, autocast, logs,
the LR schedule under a skipping GradScaler, the StepTimer and Profiler hooks and their config."""
import json

import pytest
import torch
from torch import nn

from pcseg.data.collate import collate_sparse
from pcseg.engine import hooks as hooks_module
from pcseg.engine.build import build_hooks
from pcseg.engine.config import ConfigKeyError
from pcseg.engine.hooks import Hook, Profiler, StepTimer, Supervised, TrainState
from pcseg.engine.loader import make_loader
from pcseg.engine.lr import WarmupLR
from pcseg.engine.trainer import Trainer
from pcseg.sparse import SparseTensor


class Pointwise(nn.Module):
    """Per-voxel linear classifier: (M, 3) → (M, 2) logits on the same coordinates."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, x):
        return SparseTensor(self.linear(x.F), x.C, context=x.context)


class Recording(Supervised):
    def __init__(self, fail_at=None):
        super().__init__()
        self.calls, self.dtypes, self.fail_at = [], [], fail_at

    def losses(self, model, batch, state):
        if state.step == self.fail_at:
            raise RuntimeError("boom")
        self.calls.append(("losses", state.epoch, state.step))
        self.dtypes.append(model(SparseTensor(batch["feats"], batch["coords"])).F.dtype)
        return super().losses(model, batch, state)

    def before_train(self, model, state):
        self.calls.append(("before_train", state.epoch, state.step))

    def before_epoch(self, model, state):
        self.calls.append(("before_epoch", state.epoch, state.step))

    def after_step(self, model, state):
        self.calls.append(("after_step", state.epoch, state.step))

    def after_epoch(self, model, state):
        self.calls.append(("after_epoch", state.epoch, state.step))

    def after_train(self, model, state):
        self.calls.append(("after_train", state.epoch, state.step))


def _samples(n=4):
    g = torch.Generator().manual_seed(0)
    return [{"coords": torch.arange(10, dtype=torch.int32)[:, None].repeat(1, 3), "feats": 10 * torch.randn(10, 3, generator=g),
             "labels": torch.randint(0, 2, (10,), generator=g), "inverse": torch.arange(10),
             "point_labels": torch.randint(0, 2, (10,), generator=g), "points": torch.zeros(10, 3), "name": f"s{i}"}
            for i in range(n)]


def _trainer(tmp_path, method, epochs=2, lr=0.1, **kw):
    torch.manual_seed(0)
    model = Pointwise()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loader = make_loader(_samples(), batch_size=2, collate_fn=collate_sparse, train=True, seed=0)
    sched = WarmupLR(opt, epochs * len(loader), "constant")
    return Trainer(model, method, opt, sched, loader, max_epochs=epochs, work_dir=tmp_path,
                   device=torch.device("cpu"), log_period=1, **kw)


def test_hooks_run_in_order_with_state(tmp_path):
    method = Recording()
    _trainer(tmp_path, method).train()
    assert method.calls == [
        ("before_train", 0, 0),
        ("before_epoch", 0, 0), ("losses", 0, 0), ("after_step", 0, 0), ("losses", 0, 1), ("after_step", 0, 1),
        ("after_epoch", 0, 1),
        ("before_epoch", 1, 2), ("losses", 1, 2), ("after_step", 1, 2), ("losses", 1, 3), ("after_step", 1, 3),
        ("after_epoch", 1, 3),
        ("after_train", 1, 3),
    ]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["type"], r["epoch"], r["step"]) for r in records] == [("train", 1, 1), ("train", 1, 2),
                                                                     ("train", 2, 3), ("train", 2, 4)]
    assert records[0]["lr"] == 0.1 and records[0]["loss"] == records[0]["loss_ce"]


def test_after_train_runs_when_training_raises(tmp_path):
    method = Recording(fail_at=1)
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(tmp_path, method).train()
    assert method.calls[-1] == ("after_train", 0, 1)


def test_gradient_clipping_bounds_the_sgd_update(tmp_path):
    trainer = _trainer(tmp_path, Supervised(), lr=1.0, grad_clip=0.01)
    before = torch.cat([p.detach().clone().flatten() for p in trainer.model.parameters()])
    batch = collate_sparse(_samples()[:2])
    trainer.run_step(batch, trainer._state(0, 0))
    after = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # |lr * clipped grad| = clip


def test_bf16_autocast_on_cpu(tmp_path):
    method = Recording()
    trainer = _trainer(tmp_path, method, epochs=1, amp="bf16")
    trainer.train()
    assert set(method.dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="amp 'fp16' needs a cuda device"):
        _trainer(tmp_path, Supervised(), amp="fp16")


class RecordingHook(Hook):
    """A plain hook appending (name, epoch, step) to a list shared with a Recording method."""

    def __init__(self, calls):
        self.calls = calls

    def _record(self, name, trainer):
        self.calls.append((f"hook.{name}", trainer.state.epoch, trainer.state.step))

    def before_train(self, trainer):
        self._record("before_train", trainer)

    def before_epoch(self, trainer):
        self._record("before_epoch", trainer)

    def before_step(self, trainer):
        self._record("before_step", trainer)

    def after_step(self, trainer):
        self._record("after_step", trainer)

    def after_epoch(self, trainer):
        self._record("after_epoch", trainer)

    def after_train(self, trainer):
        self._record("after_train", trainer)


def test_plain_hooks_run_after_the_method_at_each_point(tmp_path):
    method = Recording()
    _trainer(tmp_path, method, epochs=1, hooks=[RecordingHook(method.calls)]).train()
    assert method.calls == [
        ("before_train", 0, 0), ("hook.before_train", 0, 0),
        ("before_epoch", 0, 0), ("hook.before_epoch", 0, 0),
        ("hook.before_step", 0, 0), ("losses", 0, 0), ("after_step", 0, 0), ("hook.after_step", 0, 0),
        ("hook.before_step", 0, 1), ("losses", 0, 1), ("after_step", 0, 1), ("hook.after_step", 0, 1),
        ("after_epoch", 0, 1), ("hook.after_epoch", 0, 1),
        ("after_train", 0, 1), ("hook.after_train", 0, 1),
    ]


class InfAt(Supervised):
    """Supervised, with an infinite loss (so infinite gradients) at step ``bad``."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def losses(self, model, batch, state):
        ce = super().losses(model, batch, state)["ce"]
        return {"ce": ce * float("inf") if state.step == self.bad else ce}


def test_the_lr_schedule_does_not_step_when_the_grad_scaler_skips_the_optimiser_step(tmp_path):
    trainer = _trainer(tmp_path, InfAt(bad=1), epochs=3)
    trainer.scheduler = WarmupLR(trainer.optimizer, 6, "poly")  # lr 0.1 * (1 - step / 6) ** 0.9
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # fp16's scaler (the trainer's needs cuda)
    batch = collate_sparse(_samples()[:2])
    weights, lrs, scales = [], [], []
    for step in range(3):
        weights.append(trainer.model.linear.weight.detach().clone())
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        scales.append(trainer.scaler.get_scale())
        trainer.run_step(batch, trainer._state(0, step))
    assert scales == [1024.0, 1024.0, 512.0]  # step 1's inf gradient: the scaler skipped and backed off
    assert torch.equal(weights[1], weights[2]) and not torch.equal(weights[0], weights[1])  # step 1 skipped
    assert lrs == [0.1, pytest.approx(0.1 * (5 / 6) ** 0.9), pytest.approx(0.1 * (5 / 6) ** 0.9)]  # lr kept
    assert trainer.scheduler.last_epoch == 2  # two optimiser steps, two schedule steps
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * (4 / 6) ** 0.9)


def test_step_timer_splits_data_and_step_time_per_log_period(monkeypatch):
    ticks = iter([0.0, 1.0, 3.0, 4.5, 7.5, 7.5, 8.0, 8.5, 8.5])  # epoch start, (before, after) per step, resets
    monkeypatch.setattr(hooks_module.time, "perf_counter", lambda: next(ticks))
    written = []

    class FakeTrainer:
        log_period, state = 2, None
        writer = type("W", (), {"write": lambda self, kind, record: written.append((kind, record))})()

    trainer, timer = FakeTrainer(), StepTimer()
    timer.before_epoch(trainer)  # 0.0
    for step in range(3):
        trainer.state = TrainState(epoch=0, step=step, max_epochs=1, max_steps=4, iters_per_epoch=4)
        timer.before_step(trainer)
        timer.after_step(trainer)
    # steps 0, 1: data 1.0 and 1.5, step 2.0 and 3.0 (logged after step 1, then reset at 7.5); step 2: data 0.5
    assert written == [("timer", {"epoch": 1, "step": 2, "data_time": 1.25, "step_time": 2.5})]
    assert timer._count == 1 and timer._data == 0.5 and timer._step == 0.5


def test_profiler_hook_writes_a_chrome_trace_of_its_steps(tmp_path):
    trainer = _trainer(tmp_path, Supervised(), epochs=2, hooks=[Profiler(start_step=1, num_steps=2)])
    trainer.train()
    trace = json.loads((tmp_path / "profiler" / "steps_1-2.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert "aten::linear" in names and "aten::cross_entropy_loss" in names  # Pointwise's forward, Supervised's loss
    assert sorted(p.name for p in (tmp_path / "profiler").iterdir()) == ["steps_1-2.json"]


def test_train_hooks_are_built_from_the_config_with_mistakes_named_by_key():
    timer, profiler = build_hooks([{"name": "StepTimer"}, {"name": "Profiler", "start_step": 3}])
    assert isinstance(timer, StepTimer) and isinstance(profiler, Profiler) and profiler.start_step == 3
    with pytest.raises(ConfigKeyError, match=r"train.hooks\[1\].name: hook 'Timer' unknown; known: Profiler, Step"):
        build_hooks([{"name": "StepTimer"}, {"name": "Timer"}])
    with pytest.raises(ConfigKeyError, match=r"train.hooks\[0\].steps: .*unknown key"):
        build_hooks([{"name": "Profiler", "steps": 2}])
    with pytest.raises(ConfigKeyError, match=r"train.hooks\[0\]: Profiler: expected start_step >= 0 and num_steps"):
        build_hooks([{"name": "Profiler", "num_steps": 0}])
