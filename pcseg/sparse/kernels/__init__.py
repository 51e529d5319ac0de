"""Optional fused kernels for the sparse convolution (Triton), behind the pure-torch path.

``PCSEG_FUSED_CONV=1`` (or :func:`set_fused_conv`) makes :func:`~pcseg.sparse.sparse_conv` compute
its forward pass and input gradient with :func:`~.implicit_gemm.implicit_gemm_conv` and its weight
gradient with :func:`~.implicit_gemm.implicit_gemm_weight_grad` when Triton can run on the
features' device: a CUDA device, or any device under ``TRITON_INTERPRET=1`` (how the
tests check the kernel against the torch path on CPU). Off by default: the kernel has been checked
against the torch path in the interpreter; weigh it on your GPU with ``benchmarks/bench_sparse.py``.
Without Triton installed (``pip install pcseg[triton]``) everything runs on the torch path.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch

__all__ = ["fused_conv_enabled", "set_fused_conv", "triton_runs_on"]

_override: Optional[bool] = None


def set_fused_conv(enabled: Optional[bool]) -> None:
    """Turn the fused convolution on or off for this process; None: follow ``PCSEG_FUSED_CONV``."""
    global _override
    _override = enabled


def triton_runs_on(device: torch.device) -> bool:
    """Whether Triton is installed and can run kernels on ``device``."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def fused_conv_enabled(device: torch.device) -> bool:
    """Whether :func:`~pcseg.sparse.sparse_conv` uses the fused kernel for tensors on ``device``."""
    wanted = _override if _override is not None else os.environ.get("PCSEG_FUSED_CONV") == "1"
    return wanted and triton_runs_on(device)
