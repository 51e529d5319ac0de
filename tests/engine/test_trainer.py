"""In-process checks of the loop: hook order, after_train on errors, clipping, autocast, logs."""
import json

import pytest
import torch
from torch import nn

from pcseg.data.collate import collate_sparse
from pcseg.engine.hooks import Supervised
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
