"""HPAL's semi-supervised training (mean teacher) as a :class:`MethodHooks` plug-in.

Each batch holds two augmented views of the same scenes (``data.name: TwoViews``,
:mod:`pcseg.data.views`). The EMA **teacher** sees view 1 (no gradient, eval mode); the **student**
(the trained model) sees view 2, made stronger still by feature noise (Gaussian, std
``student_noise``) and feature dropout (the input features of a ``student_dropout`` fraction of
voxels zeroed), drawn from :func:`~pcseg.methods.common.step_generator` of the run seed
(``cfg.seed + rank``, given by ``build_trainer``) and the step, so a resumed run draws the same.
Losses, compared on the *points* (each view's voxels read through its inverse map):

- ``ce``: cross-entropy on the labelled voxels of the student view;
- ``kl``: ``KL(p_teacher || p_student)`` per point, averaged, times ``kl_weight``;
- ``pseudo``: cross-entropy of the student against the teacher's class at the unlabelled points
  where the teacher's top probability is ``> confidence`` (0.75), times ``pseudo_weight``.

Both unsupervised weights ramp up linearly over ``rampup_epochs``. After every optimiser step the
teacher moves towards the student: ``t = decay * t + (1 - decay) * s`` (0.955) for parameters and
floating-point buffers (BatchNorm statistics); integer buffers are copied. The teacher is part of
:meth:`HPAL.state_dict`, so a resumed run continues with the same teacher.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.views import VIEW2_KEYS
from pcseg.engine.hooks import MethodHooks, TrainState
from pcseg.methods.common import kl_consistency, labelled_cross_entropy, rampup_weight, step_generator
from pcseg.methods.registry import METHODS
from pcseg.sparse import SparseTensor

__all__ = ["HPAL", "ema_update", "pseudo_labels", "strong_features"]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: ``t = decay * t + (1 - decay) * s`` for parameters and float buffers; other buffers copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s, alpha=1.0 - decay)
        else:
            t.copy_(s)


def pseudo_labels(teacher_probs: Tensor, labelled: Tensor, confidence: float,
                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """(P,) int64: the teacher's class where ``max p > confidence`` and the point is unlabelled, else ignore.

    teacher_probs: (P, C); labelled: (P,) bool.
    """
    top, cls = teacher_probs.max(dim=1)
    keep = (top > confidence) & ~labelled
    return torch.where(keep, cls, torch.full_like(cls, ignore_index))


def strong_features(feats: Tensor, noise: float, dropout: float, generator: torch.Generator) -> Tensor:
    """``feats`` (M, C) plus N(0, noise²) noise, with the rows of a ``dropout`` fraction of voxels zeroed.

    generator: CPU generator (the draws are made on the CPU, then moved to ``feats``' device).
    """
    jitter = torch.randn(feats.shape, generator=generator).to(feats.device, feats.dtype) * noise
    drop = (torch.rand(feats.shape[0], generator=generator) < dropout).to(feats.device)
    return (feats + jitter).masked_fill(drop[:, None], 0.0)


@METHODS.register
class HPAL(MethodHooks):
    """Mean-teacher training of HPAL (see the module docstring).

    ema_decay: teacher momentum (paper 0.955). confidence: pseudo-label threshold (paper 0.75).
    kl_weight, pseudo_weight: weights of the unsupervised terms after ``rampup_epochs``.
    student_noise, student_dropout: the student's extra feature perturbation, drawn from the run's seed
    (``self.seed``, see :meth:`~pcseg.engine.hooks.MethodHooks.set_seed`) and the step.
    """

    def __init__(self, ema_decay: float = 0.955, confidence: float = 0.75, kl_weight: float = 1.0,
                 pseudo_weight: float = 1.0, rampup_epochs: float = 0.0, student_noise: float = 0.1,
                 student_dropout: float = 0.1, ignore_index: int = IGNORE_INDEX) -> None:
        for name, value in (("ema_decay", ema_decay), ("confidence", confidence), ("student_dropout", student_dropout)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"HPAL.{name}: expected a value in [0, 1], got {value}")
        for name, value in (("kl_weight", kl_weight), ("pseudo_weight", pseudo_weight),
                            ("rampup_epochs", rampup_epochs), ("student_noise", student_noise)):
            if value < 0:
                raise ValueError(f"HPAL.{name}: expected >= 0, got {value}")
        self.ema_decay = float(ema_decay)
        self.confidence = float(confidence)
        self.kl_weight = float(kl_weight)
        self.pseudo_weight = float(pseudo_weight)
        self.rampup_epochs = float(rampup_epochs)
        self.student_noise = float(student_noise)
        self.student_dropout = float(student_dropout)
        self.ignore_index = ignore_index
        self.teacher: Optional[nn.Module] = None
        self._pending: Optional[Mapping[str, Tensor]] = None  # teacher weights loaded before before_train

    # -- teacher -----------------------------------------------------------------------------
    def before_train(self, model: nn.Module, state: TrainState) -> None:
        """Create the teacher as a copy of the student (or with the weights of a resumed checkpoint)."""
        self.teacher = copy.deepcopy(model)
        if self._pending is not None:
            self.teacher.load_state_dict(self._pending)
            self._pending = None
        self.teacher.eval()
        self.teacher.requires_grad_(False)

    def after_step(self, model: nn.Module, state: TrainState) -> None:
        ema_update(self._teacher(), model, self.ema_decay)

    def _teacher(self) -> nn.Module:
        if self.teacher is None:
            raise RuntimeError("HPAL: the teacher does not exist yet; the trainer calls before_train first")
        return self.teacher

    def state_dict(self) -> dict[str, Any]:
        return {} if self.teacher is None else {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"teacher"})
        if unknown:
            raise ValueError(f"HPAL.load_state_dict: expected only the key 'teacher', got {unknown}")
        if "teacher" in state:
            if self.teacher is None:
                self._pending = state["teacher"]
            else:
                self.teacher.load_state_dict(state["teacher"])

    # -- losses ------------------------------------------------------------------------------
    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        missing = [k for k in VIEW2_KEYS if k not in batch]
        if missing:
            raise KeyError(f"HPAL needs two views per scene but the batch lacks {', '.join(missing)}; use "
                           f"data.name: TwoViews (pcseg.data.views) with kwargs.dataset naming the base dataset")
        feats = strong_features(batch["view2_feats"], self.student_noise, self.student_dropout,
                                step_generator(self.seed, state.step))
        student = model(SparseTensor(feats, batch["view2_coords"])).F.float()
        with torch.no_grad():
            teacher = self._teacher()(SparseTensor(batch["feats"], batch["coords"])).F.float()
        teacher_probs = torch.softmax(teacher, dim=1)[batch["inverse"]]
        student_points = student[batch["view2_inverse"]]
        labelled = (batch["view2_labels"] != self.ignore_index)[batch["view2_inverse"]]
        weight = rampup_weight(1.0, self.rampup_epochs, state)
        pseudo = pseudo_labels(teacher_probs, labelled, self.confidence, self.ignore_index)
        return {
            "ce": labelled_cross_entropy(student, batch["view2_labels"], self.ignore_index),
            "kl": weight * self.kl_weight * kl_consistency(teacher_probs, student_points),
            "pseudo": weight * self.pseudo_weight * labelled_cross_entropy(student_points, pseudo, self.ignore_index),
        }
