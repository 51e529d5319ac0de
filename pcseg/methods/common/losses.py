"""Loss terms shared by the methods: labelled cross-entropy, JS and KL consistency, the ramp-up weight.

CPCM uses :func:`labelled_cross_entropy`, :func:`js_divergence` and :func:`rampup_weight`; HPAL uses
:func:`labelled_cross_entropy`, :func:`kl_consistency` and :func:`rampup_weight`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pcseg.engine.hooks import TrainState

__all__ = ["labelled_cross_entropy", "js_divergence", "kl_consistency", "rampup_weight"]


def labelled_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over the rows whose label is not ``ignore_index``.

    logits: (M, C) float; labels: (M,) int64. Without labelled rows the result is a zero that still
    depends on ``logits`` (so every parameter gets a gradient, as DDP needs).
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


def js_divergence(target: Tensor, logits: Tensor) -> Tensor:
    """Mean Jensen–Shannon divergence (natural log) between rows of ``target`` and ``softmax(logits)``.

    target: (P, C) probabilities, treated as constants (detached here: the stop-gradient branch).
    logits: (P, C) float, the branch that learns. With q = softmax(logits) and m = (p + q) / 2,
    ``JS = ½ Σ p log(p/m) + ½ Σ q log(q/m)`` per row (0 log 0 = 0), averaged over the P rows;
    a zero-row input gives 0. Values lie in [0, log 2].
    """
    if target.shape != logits.shape:
        raise ValueError(f"js_divergence: target {tuple(target.shape)} and logits {tuple(logits.shape)} differ")
    if target.shape[0] == 0:
        return logits.sum() * 0.0
    p = target.detach().float()
    q = torch.softmax(logits.float(), dim=1)
    m = 0.5 * (p + q)
    kl_p = torch.xlogy(p, p) - torch.xlogy(p, m)
    kl_q = torch.xlogy(q, q) - torch.xlogy(q, m)
    return 0.5 * (kl_p + kl_q).sum(dim=1).mean()


def kl_consistency(teacher_probs: Tensor, student_logits: Tensor) -> Tensor:
    """Mean over rows of ``KL(p || softmax(logits)) = sum_c p_c (log p_c - log q_c)`` (0 log 0 = 0).

    teacher_probs: (P, C) probabilities, detached here; student_logits: (P, C). Zero rows give 0
    (still depending on ``student_logits``).
    """
    if teacher_probs.shape != student_logits.shape:
        raise ValueError(f"kl_consistency: teacher {tuple(teacher_probs.shape)} and student "
                         f"{tuple(student_logits.shape)} differ")
    if teacher_probs.shape[0] == 0:
        return student_logits.sum() * 0.0
    p = teacher_probs.detach().float()
    log_q = torch.log_softmax(student_logits.float(), dim=1)
    return (torch.xlogy(p, p) - p * log_q).sum(dim=1).mean()


def rampup_weight(weight: float, rampup_epochs: float, state: TrainState) -> float:
    """``weight`` times a linear ramp from 0 at step 0 to 1 after ``rampup_epochs`` epochs.

    The ramp is per iteration: ``min(1, step / (rampup_epochs * iters_per_epoch))``; 0 epochs = no ramp.
    """
    if rampup_epochs <= 0:
        return float(weight)
    return float(weight) * min(1.0, state.step / (rampup_epochs * state.iters_per_epoch))
