"""Optional fused kernels for the sparse convolution (Triton), behind the pure-torch path.

The convolution backend is an explicit choice made by the caller, never read from the environment:
``with conv_backend("fused"): …`` makes :func:`~pcseg.sparse.sparse_conv` inside the block compute
its forward pass and input gradient with :func:`~.implicit_gemm.implicit_gemm_conv` and its weight
gradient with :func:`~.implicit_gemm.implicit_gemm_weight_grad`; ``"torch"`` (the default) is the
pure-torch pair path. The choice is made when the forward pass runs and kept for its backward pass
(which may run on another thread). Triton must be able to run on the features' device: a CUDA device,
or any device under ``TRITON_INTERPRET=1`` (how the tests check the kernel against the torch path on
CPU); asking for ``"fused"`` where it cannot is an error, not a silent fallback. Install Triton with
``pip install pcseg[triton]``; weigh the kernel on your GPU with ``benchmarks/gpu_check.sh``.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

__all__ = ["CONV_BACKENDS", "conv_backend", "fused_conv_enabled", "triton_runs_on"]

#: The sparse-convolution backends: the pure-torch pair path and the fused Triton kernel.
CONV_BACKENDS = ("torch", "fused")

_backend: ContextVar[str] = ContextVar("pcseg_conv_backend", default="torch")


@contextmanager
def conv_backend(name: str) -> Iterator[None]:
    """Run the sparse convolutions started inside the block on backend ``name`` ("torch" or "fused")."""
    if name not in CONV_BACKENDS:
        raise ValueError(f"conv_backend: expected one of {', '.join(CONV_BACKENDS)}, got {name!r}")
    token = _backend.set(name)
    try:
        yield
    finally:
        _backend.reset(token)


def triton_runs_on(device: torch.device) -> bool:
    """Whether Triton is installed and can run kernels on ``device``."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def fused_conv_enabled(device: torch.device) -> bool:
    """Whether a sparse convolution started now on ``device`` uses the fused kernel.

    Raises RuntimeError when the fused backend was chosen and Triton cannot run on ``device``.
    """
    if _backend.get() != "fused":
        return False
    if not triton_runs_on(device):
        raise RuntimeError(f"conv_backend('fused'): Triton cannot run on {device} (install pcseg[triton]; "
                           "on a CPU only its interpreter runs, with TRITON_INTERPRET=1); use conv_backend('torch')")
    return True
