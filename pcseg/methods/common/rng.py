"""Per-iteration random generators of the methods, derived from the run seed.

``build_trainer`` hands each method its process's run seed, ``cfg.seed + rank``
(:meth:`pcseg.engine.hooks.MethodHooks.set_seed`, stored as ``method.seed``). A method that draws
random numbers in iteration ``step`` (CPCM's region masks, HPAL's student noise) takes them from
``step_generator(method.seed, step)``: the draws depend only on (seed, rank, step), so a resumed run
draws what an uninterrupted one would, and two processes draw different numbers.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["step_generator"]


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of global iteration ``step`` under ``seed``: seeded by ``SeedSequence([seed, step])``."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1, np.uint64)[0] >> 1))
