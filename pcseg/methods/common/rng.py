"""Per-iteration, per-sample random generators of the methods, derived from the run seed.

``build_trainer`` hands each method the run seed ``cfg.seed`` (the same in every process;
:meth:`pcseg.engine.hooks.MethodHooks.set_seed`, stored as ``method.seed``). A method that draws
random numbers for sample ``k`` of its batch in iteration ``step`` (CPCM's region masks, HPAL's
student noise) takes them from ``step_generator(method.seed, step, position)``, where ``position``
is the sample's place in the joined batch of all processes
(:meth:`pcseg.engine.hooks.TrainState.joined_positions`): the draws depend only on (seed, step,
position), so a resumed run draws what an uninterrupted one would, and two processes draw what one
process draws for the joined batch.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["step_generator"]


def step_generator(seed: int, step: int, *keys: int) -> torch.Generator:
    """The CPU generator of global iteration ``step`` under ``seed`` (and ``keys``, e.g. a sample's position).

    Seeded by ``SeedSequence([seed, step, *keys])``; without keys as in earlier runs.
    """
    entropy = [seed, step, *keys]
    return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1))
