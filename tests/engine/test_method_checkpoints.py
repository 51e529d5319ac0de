"""Checkpoints of a method that owns modules: the backbone as "model", the method's modules and state as "method".

A toy method wraps the backbone with a trained module (``extra``) and a rebuilt one (``frozen``,
never saved); HPAL's EMA teacher goes through the same path. Files are read back with
``torch.load`` and compared with the modules' own tensors.
"""
import pytest
import torch
from torch import nn

from pcseg.data.views import collate_two_views
from pcseg.engine.build import load_weights
from pcseg.engine.checkpoint import load_checkpoint, save_checkpoint
from pcseg.engine.hooks import MethodHooks, MethodModel, Supervised
from pcseg.engine.loader import make_loader
from pcseg.engine.lr import WarmupLR
from pcseg.engine.trainer import Trainer
from pcseg.methods import HPAL
from pcseg.sparse import SparseTensor
from pcseg.utils.errors import InputError

from .test_trainer import Pointwise


class Toy(MethodModel):
    rebuilt = ("frozen",)

    def __init__(self, backbone):
        super().__init__(backbone)
        self.extra = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x):
        return self.frozen(self.extra(self.backbone(x).F))


class ToyMethod(Supervised):
    """Cross-entropy of ``frozen(extra(backbone(x)))``; counts its steps as method state."""

    def __init__(self):
        super().__init__()
        self.steps = 0

    def wrap(self, backbone):
        return Toy(backbone)

    def losses(self, model, batch, state):
        logits = model(SparseTensor(batch["feats"], batch["coords"]))
        return {"ce": nn.functional.cross_entropy(logits, batch["labels"])}

    def after_step(self, model, state):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def _samples(n=4):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        coords = torch.arange(10, dtype=torch.int32)[:, None].repeat(1, 3)
        labels = torch.randint(0, 2, (10,), generator=g)
        out.append({"coords": coords, "feats": torch.randn(10, 3, generator=g), "labels": labels,
                    "inverse": torch.arange(10), "point_labels": labels, "points": torch.zeros(10, 3), "name": f"s{i}",
                    "view2_coords": coords, "view2_feats": torch.randn(10, 3, generator=g), "view2_labels": labels,
                    "view2_inverse": torch.arange(10)})
    return out


def _trainer(tmp_path, method: MethodHooks, seed=0, groups=None):
    torch.manual_seed(seed)
    model = method.wrap(Pointwise())
    opt = torch.optim.SGD(groups(model) if groups else method.param_groups(model), lr=0.1)
    loader = make_loader(_samples(), batch_size=2, collate_fn=collate_two_views, train=True, seed=0)
    return Trainer(model, method, opt, WarmupLR(opt, 2 * len(loader), "poly"), loader, max_epochs=2,
                   work_dir=tmp_path, device=torch.device("cpu"), log_period=1)


def test_the_backbone_is_the_model_entry_and_the_methods_modules_the_method_entry(tmp_path):
    trainer = _trainer(tmp_path, ToyMethod())
    model = trainer.bare_model
    assert [p for g in trainer.optimizer.param_groups for p in g["params"]] == \
        [*model.backbone.parameters(), *model.extra.parameters()]  # the frozen module is not optimised
    trainer.train()
    ckpt = load_checkpoint(tmp_path / "model_last.pth")
    assert set(ckpt["model"]) == {"linear.weight", "linear.bias"}
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.backbone.state_dict().items())
    assert set(ckpt["method"]) == {"extra", "steps"} and ckpt["method"]["steps"] == 4  # "frozen" is rebuilt, not saved
    assert all(torch.equal(ckpt["method"]["extra"][k], v) for k, v in model.extra.state_dict().items())
    # tools/test.py's path: the plain backbone of the config loads the file strictly
    plain = load_weights(Pointwise(), tmp_path / "model_last.pth", torch.device("cpu"))
    assert torch.equal(plain.linear.weight, model.backbone.linear.weight)

    resumed = _trainer(tmp_path, ToyMethod(), seed=1)  # other initial weights
    assert not torch.equal(resumed.bare_model.extra.weight, model.extra.weight)
    assert resumed.resume() == (2, 0)
    assert torch.equal(resumed.bare_model.extra.weight, model.extra.weight)
    assert torch.equal(resumed.bare_model.backbone.linear.weight, model.backbone.linear.weight)
    assert resumed.method.steps == 4


def test_resuming_a_checkpoint_without_a_methods_module_or_with_other_groups_names_the_problem(tmp_path):
    _trainer(tmp_path, ToyMethod()).train()
    path = tmp_path / "model_last.pth"
    ckpt = load_checkpoint(path)
    with pytest.raises(InputError, match=r"optimizer: expected the parameter groups of this run's method ToyMethod "
                                         r"\(sizes \[2, 2\]\), the checkpoint's do not fit"):
        _trainer(tmp_path, ToyMethod(), groups=lambda m: [{"params": list(m.backbone.parameters())},
                                                          {"params": list(m.extra.parameters())}]).resume()
    del ckpt["method"]["extra"]
    save_checkpoint(ckpt, path)
    with pytest.raises(InputError, match=r"model_last.pth: method.extra: expected the state of the method's module "
                                         r"'extra', the checkpoint's method entry holds \['steps'\]"):
        _trainer(tmp_path, ToyMethod()).resume()


def test_hpal_saves_its_ema_teacher_and_resumes_with_it(tmp_path):
    trainer = _trainer(tmp_path, HPAL(rampup_epochs=0))
    trainer.train()
    model = trainer.bare_model
    ckpt = load_checkpoint(tmp_path / "model_last.pth")
    assert set(ckpt["method"]) == {"teacher"} and set(ckpt["model"]) == {"linear.weight", "linear.bias"}
    teacher = ckpt["method"]["teacher"]
    assert all(torch.equal(teacher[k], v) for k, v in model.teacher.state_dict().items())
    assert not torch.equal(teacher["linear.weight"], ckpt["model"]["linear.weight"])  # an EMA, not a copy
    resumed = _trainer(tmp_path, HPAL(rampup_epochs=0), seed=1)
    resumed.resume()
    assert torch.equal(resumed.bare_model.teacher.linear.weight, teacher["linear.weight"])
    assert torch.equal(resumed.bare_model.backbone.linear.weight, ckpt["model"]["linear.weight"])
