"""Atomic checkpoint files and RNG-state capture.

A checkpoint is written beside ``<path>``, flushed to disk, then renamed over it with
``os.replace`` (atomic on POSIX, :func:`pcseg.utils.atomic.atomic_path`), so a crash at any moment
leaves either the old or the new file, never a torn one. Checkpoints hold only tensors and plain Python values, so they load with
``torch.load(weights_only=True)``: the numpy RNG state is stored as a tensor. A missing, truncated
or foreign file raises :class:`~pcseg.utils.errors.InputError` naming it.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.atomic import atomic_path
from ..utils.errors import InputError

__all__ = ["save_checkpoint", "load_checkpoint", "get_rng_state", "set_rng_state"]


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> None:
    """Write ``obj`` to ``path`` atomically (temporary file → fsync → ``os.replace``)."""
    with atomic_path(path, durable=True) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safe ``weights_only`` unpickling).

    Raises InputError when ``path`` is missing, truncated, not a torch file or holds no dict.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: expected a checkpoint file, no such file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:  # torn zip archive, foreign pickle
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"{path}: expected a checkpoint written by torch.save, cannot read it "
                         f"({first_line})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a checkpoint holding a dict, got {type(obj).__name__}")
    return obj


def get_rng_state(device: torch.device) -> dict[str, Any]:
    """States of the python, numpy and torch generators (and ``device``'s when it is CUDA)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore generators captured by :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
