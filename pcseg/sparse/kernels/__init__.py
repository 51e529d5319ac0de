"""The kernels behind the sparse convolution, and the explicit choice between them.

Backends (``with conv_backend(name): …``, chosen when a forward pass runs and kept for its backward
pass, which may run on another thread; never read from the environment):

* ``"auto"`` (the default): on a CPU, the compiled kernels (:mod:`.cpu`) for the kernel-map build
  and for float32 convolutions when they can be built here, the pure-torch path otherwise (another
  dtype, another device, no compiler); on CUDA the pure-torch path.
* ``"torch"``: the pure-torch path everywhere (``searchsorted`` maps, gather-GEMM-scatter pairs).
* ``"cpu"``: the compiled CPU kernels, an error where they cannot run (not a CPU tensor, not
  float32, no working compiler).
* ``"fused"``: the Triton kernels (:mod:`.implicit_gemm`). Triton must be able to run on the
  features' device: a CUDA device, or any device under ``TRITON_INTERPRET=1`` (how the tests check
  the kernel on CPU); asking for ``"fused"`` where it cannot is an error, not a silent fallback.
  Install Triton with ``pip install pcseg[triton]``; weigh it with ``benchmarks/gpu_check.sh``.

While ``torch.export`` / ``torch.compile`` traces, convolutions run in the traced form
(``with traced_conv(name): …``, default ``"pairs"``; :mod:`pcseg.sparse.functional`):

* ``"pairs"``: each offset's present pairs from the neighbour table (one ``nonzero`` per offset,
  data-dependent sizes), gathered, multiplied and scatter-added: only real neighbours are multiplied.
* ``"table"``: every offset gathered through the fixed (N_out, K) table, a zero row for each
  missing neighbour: several times the multiplications of ``"pairs"`` at typical occupancy, but
  no data-dependent sizes past the kernel maps, so Inductor (``torch.compile``, AOTInductor)
  compiles it about 3× faster (129 vs 392 s for a 16-channel U-Net here).
* ``"kernel"``: one call of the compiled CPU kernels per convolution (``pcseg::conv_forward``,
  float32 CPU tensors only) and per kernel map (``pcseg::lookup_table``): no per-offset ops in the
  graph and eager's speed, but the program names ops of pcseg's kernel library
  (:func:`.cpu.library_path`), which the process that runs it must load first, and ONNX cannot
  express them.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

import torch

from . import cpu

__all__ = ["CONV_BACKENDS", "TRACED_CONVS", "conv_backend", "conv_kernel", "compiled_kmaps", "traced_conv",
           "traced_conv_name", "triton_runs_on"]

#: The sparse-convolution backends (see the module docstring).
CONV_BACKENDS = ("auto", "torch", "cpu", "fused")

#: The traced forms of a convolution (see the module docstring).
TRACED_CONVS = ("pairs", "table", "kernel")

_backend: ContextVar[str] = ContextVar("pcseg_conv_backend", default="auto")
_traced = "pairs"  # a module global, not a ContextVar: torch.compile reads it while tracing (and guards on it)


@contextmanager
def conv_backend(name: str) -> Iterator[None]:
    """Run the sparse convolutions and map builds started inside the block on backend ``name``."""
    if name not in CONV_BACKENDS:
        raise ValueError(f"conv_backend: expected one of {', '.join(CONV_BACKENDS)}, got {name!r}")
    token = _backend.set(name)
    try:
        yield
    finally:
        _backend.reset(token)


@contextmanager
def traced_conv(name: str) -> Iterator[None]:
    """Trace the sparse convolutions started inside the block in form ``name`` (one of :data:`TRACED_CONVS`)."""
    if name not in TRACED_CONVS:
        raise ValueError(f"traced_conv: expected one of {', '.join(TRACED_CONVS)}, got {name!r}")
    global _traced
    previous, _traced = _traced, name
    try:
        yield
    finally:
        _traced = previous


def traced_conv_name() -> str:
    """The traced form a convolution traced now takes (one of :data:`TRACED_CONVS`)."""
    return _traced


def triton_runs_on(device: torch.device) -> bool:
    """Whether Triton is installed and can run kernels on ``device``."""
    if importlib.util.find_spec("triton") is None:
        return False
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _compiled_cpu_runs(device: torch.device, dtype: torch.dtype | None, backend: str) -> bool:
    """Whether the compiled CPU kernels serve this call; raises for ``"cpu"`` where they cannot."""
    fits = device.type == "cpu" and dtype in (None, torch.float32)
    if backend == "cpu":
        if not fits:
            raise RuntimeError(f"conv_backend('cpu'): the compiled kernels take float32 CPU tensors, got "
                               f"{dtype} on {device}; use conv_backend('auto') or 'torch'")
        if not cpu.available():
            raise RuntimeError(f"conv_backend('cpu'): the compiled CPU kernels could not be built "
                               f"({cpu.unavailable_reason()}); use conv_backend('torch')")
        return True
    return backend == "auto" and fits and cpu.available()


def conv_kernel(device: torch.device, dtype: torch.dtype) -> str:
    """The kernel a sparse convolution started now runs: ``"torch"``, ``"cpu"`` or ``"fused"``.

    Raises RuntimeError when the chosen backend cannot run on ``device`` / ``dtype``.
    """
    backend = _backend.get()
    if backend == "fused":
        if not triton_runs_on(device):
            raise RuntimeError(f"conv_backend('fused'): Triton cannot run on {device} (install pcseg[triton]; "
                               "on a CPU only its interpreter runs, with TRITON_INTERPRET=1); use conv_backend('torch')")
        return "fused"
    return "cpu" if _compiled_cpu_runs(device, dtype, backend) else "torch"


def compiled_kmaps(device: torch.device) -> bool:
    """Whether a kernel map built now on ``device`` uses the compiled merge join (else ``searchsorted``)."""
    backend = _backend.get()
    return backend in ("auto", "cpu") and _compiled_cpu_runs(device, None, backend)
