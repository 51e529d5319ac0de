"""HPAL's semi-supervised training (mean teacher) as a :class:`MethodHooks` plug-in.

Each batch holds two augmented views of the same scenes (``data.name: TwoViews``,
:mod:`pcseg.data.views`). The EMA **teacher** sees view 1 (no gradient, eval mode); the **student**
(the trained model) sees view 2, made stronger still by feature noise (Gaussian, std
``student_noise``) and feature dropout (the input features of a ``student_dropout`` fraction of
voxels zeroed), drawn per scene from :func:`~pcseg.methods.common.step_generator` of the run seed
(``cfg.seed``, given by ``build_trainer``), the step and the scene's position in the joined batch of
all processes (:meth:`~pcseg.engine.hooks.TrainState.joined_positions`), so a resumed run draws the
same and two processes draw what one process draws for the joined batch.
Losses, compared on the *points* (each view's voxels read through its inverse map):

- ``ce``: cross-entropy on the labelled voxels of the student view;
- ``kl``: ``KL(p_teacher || p_student)`` per point, averaged, times ``kl_weight``;
- ``pseudo``: cross-entropy of the student against the teacher's class at the unlabelled points
  where the teacher's top probability is ``> confidence`` (0.75), times ``pseudo_weight``.

Both unsupervised weights ramp up linearly over ``rampup_epochs``. The model the trainer trains is a
:class:`MeanTeacher`: the student (the backbone, whose weights ``model.init_from`` may have loaded)
and the teacher, a copy of it made when the method wraps it, with ``requires_grad`` False (neither
the optimiser nor DDP's gradient all-reduce sees it; DDP gives every process rank 0's copy when it
is built). After every optimiser step the teacher moves towards the student: ``t = decay * t +
(1 - decay) * s`` (0.955) for parameters and floating-point buffers (BatchNorm statistics); integer
buffers are copied. The checkpoint keeps the teacher (``"method": {"teacher": …}``), so a resumed
run continues with the same teacher.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.views import VIEW2_KEYS
from pcseg.engine.distributed import unwrap_model
from pcseg.engine.hooks import MethodHooks, MethodModel, TrainState
from pcseg.methods.common import kl_consistency, labelled_cross_entropy, rampup_weight, step_generator
from pcseg.methods.registry import METHODS
from pcseg.sparse import SparseTensor

__all__ = ["HPAL", "MeanTeacher", "ema_update", "pseudo_labels", "strong_features"]


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


def strong_features(feats: Tensor, batch_index: Tensor, noise: float, dropout: float,
                    generators: Sequence[torch.Generator]) -> Tensor:
    """``feats`` (M, C) plus N(0, noise²) noise, with the rows of a ``dropout`` fraction of voxels zeroed.

    batch_index: (M,) int, the scene of each voxel (``coords[:, 0]``). generators: CPU generators,
    one per scene: scene ``b`` draws its (M_b, C) normals, then its M_b uniforms, from
    ``generators[b]`` (on the CPU, then moved to ``feats``' device).
    """
    jitter = torch.zeros(feats.shape)
    drop = torch.zeros(feats.shape[0], dtype=torch.bool)
    index = batch_index.cpu()
    for b, generator in enumerate(generators):
        rows = torch.nonzero(index == b).squeeze(1)
        jitter[rows] = torch.randn((len(rows), feats.shape[1]), generator=generator)
        drop[rows] = torch.rand(len(rows), generator=generator) < dropout
    return (feats + jitter.to(feats.device, feats.dtype) * noise).masked_fill(drop.to(feats.device)[:, None], 0.0)


class MeanTeacher(MethodModel):
    """The student ``backbone`` (trained) and its EMA ``teacher``: a copy, never trained, always in eval mode."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self.teacher = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> "MeanTeacher":
        """``mode`` for the student; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, student: SparseTensor, teacher: SparseTensor) -> tuple[Tensor, Tensor]:
        """Student logits (M2, C) on ``student`` and teacher logits (M1, C) on ``teacher`` (no gradient)."""
        logits = self.backbone(student).F
        with torch.no_grad():
            target = self.teacher(teacher).F
        return logits, target


@METHODS.register
class HPAL(MethodHooks):
    """Mean-teacher training of HPAL (see the module docstring).

    ema_decay: teacher momentum (paper 0.955). confidence: pseudo-label threshold (paper 0.75).
    kl_weight, pseudo_weight: weights of the unsupervised terms after ``rampup_epochs``.
    student_noise, student_dropout: the student's extra feature perturbation, drawn from the run's seed
    (``self.seed``, see :meth:`~pcseg.engine.hooks.MethodHooks.set_seed`), the step and each scene's
    position in the joined batch. Predictions (evaluation, selection) come from the student.
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

    def wrap(self, backbone: nn.Module) -> MeanTeacher:
        """The student ``backbone`` and a copy of it as the teacher."""
        return MeanTeacher(backbone)

    @staticmethod
    def _mean_teacher(model: nn.Module) -> MeanTeacher:
        """``model`` (possibly DDP-wrapped) as the :class:`MeanTeacher` of :meth:`wrap`."""
        bare = unwrap_model(model)
        if not isinstance(bare, MeanTeacher):
            raise TypeError(f"HPAL: expected the MeanTeacher model of HPAL.wrap(backbone) (build_trainer makes it), "
                            f"got {type(bare).__name__}")
        return bare

    def after_step(self, model: nn.Module, state: TrainState) -> None:
        mean_teacher = self._mean_teacher(model)
        ema_update(mean_teacher.teacher, mean_teacher.backbone, self.ema_decay)

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        missing = [k for k in VIEW2_KEYS if k not in batch]
        if missing:
            raise KeyError(f"HPAL needs two views per scene but the batch lacks {', '.join(missing)}; use "
                           f"data.name: TwoViews (pcseg.data.views) with kwargs.dataset naming the base dataset")
        self._mean_teacher(model)
        generators = [step_generator(self.seed, state.step, position)
                      for position in state.joined_positions(len(batch["names"]))]
        feats = strong_features(batch["view2_feats"], batch["view2_coords"][:, 0], self.student_noise,
                                self.student_dropout, generators)
        student, teacher = model(SparseTensor(feats, batch["view2_coords"]),
                                 SparseTensor(batch["feats"], batch["coords"]))
        student, teacher = student.float(), teacher.float()
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
