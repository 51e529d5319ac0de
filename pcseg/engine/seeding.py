"""Seeds and deterministic mode; every value is an argument, nothing is read from hidden globals."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["seed_all", "set_deterministic", "worker_init_fn", "loader_seed"]


def seed_all(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Switch torch to deterministic kernels (raising on ops that have none) or back.

    On CUDA, cuBLAS also needs ``CUBLAS_WORKSPACE_CONFIG``; it is set here when absent, which only
    takes effect if CUDA has not been initialised yet.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled


def loader_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of the data-loader generator of one (epoch, rank): base seeds of the workers derive from it."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0] >> 1)


def worker_init_fn(worker_id: int) -> None:
    """Seed a data-loader worker's python and numpy generators from its torch seed.

    torch gives each worker ``base_seed + worker_id``, where ``base_seed`` comes from the loader's
    generator (seeded per epoch with :func:`loader_seed`), so workers are reproducible too.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
