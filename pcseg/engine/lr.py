"""Learning-rate schedules with linear warmup, stepped once per iteration.

For iteration ``s`` (0-based) of ``max_steps``, warmup length ``W`` and base lr ``b``:

- warmup (``s < W``): ``b * (r + (1 - r) * s / W)`` with ``r = warmup_ratio``;
- then, with progress ``p = (s - W) / (max_steps - W)`` in [0, 1):
  - ``poly``:     ``b * (1 - p) ** power``
  - ``cosine``:   ``b * (m + (1 - m) * (1 + cos(pi * p)) / 2)`` with ``m = min_lr_ratio``
  - ``constant``: ``b``.
"""
from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["WarmupLR", "lr_factor"]

Schedule = Literal["poly", "cosine", "constant"]


def lr_factor(step: int, max_steps: int, schedule: Schedule, *, warmup_steps: int = 0,
              warmup_ratio: float = 0.1, power: float = 0.9, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at iteration ``step`` (see the module docstring)."""
    if step < warmup_steps:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps
    progress = min((step - warmup_steps) / max(max_steps - warmup_steps, 1), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** power
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"lr schedule {schedule!r} unknown; known: constant, cosine, poly")


class WarmupLR(LRScheduler):
    """Per-iteration scheduler: ``lr = base_lr * lr_factor(step, ...)`` for every param group.

    Call ``step()`` once after each ``optimizer.step()``. ``state_dict()`` holds plain numbers.
    """

    def __init__(self, optimizer: Optimizer, max_steps: int, schedule: Schedule = "poly", *,
                 warmup_steps: int = 0, warmup_ratio: float = 0.1, power: float = 0.9,
                 min_lr_ratio: float = 0.0) -> None:
        if max_steps <= 0:
            raise ValueError(f"max_steps must be positive, got {max_steps}")
        if not 0 <= warmup_steps < max_steps:
            raise ValueError(f"warmup_steps must be in [0, max_steps={max_steps}), got {warmup_steps}")
        lr_factor(0, max_steps, schedule)  # reject an unknown schedule before torch calls get_lr
        self.max_steps = max_steps
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.power = power
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor = lr_factor(self.last_epoch, self.max_steps, self.schedule,
                           warmup_steps=self.warmup_steps, warmup_ratio=self.warmup_ratio,
                           power=self.power, min_lr_ratio=self.min_lr_ratio)
        return [base * factor for base in self.base_lrs]
