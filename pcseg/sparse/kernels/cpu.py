"""The compiled CPU kernels (``cpu/sparse_cpu.cpp``), built on first use with the system's C++ compiler.

Three ops on a neighbour table ``(N_out, K) int32`` (-1: no input):

* :func:`conv_forward` — ``out[o] = Σ_k feats[table[o, k]] @ weight[k]``, output-stationary: each
  block of 64 output rows is one task and sums its offsets and channels in a fixed order, so the bits
  do not depend on the thread count; no pair buffer, no scatter.
* :func:`conv_weight_grad` — ``grad[k] = Σ_o feats[table[o, k]]ᵀ grad_out[o]``, one task per offset
  (it reads the table transposed, ``(K, N_out)``, one offset's rows contiguous).
* :func:`lookup_table` — the table itself, by one merge join of sorted keys per offset.

The extension is compiled once per machine, torch version and CPU capability with
``torch.utils.cpp_extension.load`` (about a minute; ``make venv`` does it ahead) into
``$PCSEG_EXTENSIONS_DIR`` (default ``~/.cache/pcseg/extensions``) and imported from there afterwards.
Without a working compiler :func:`available` is False, the reason
is in :func:`unavailable_reason`, and the sparse core uses its pure-torch path.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch
from torch import Tensor
from torch.profiler import record_function

__all__ = ["available", "unavailable_reason", "load", "conv_forward", "conv_weight_grad", "lookup_table"]

_SOURCE = Path(__file__).with_name("cpu") / "sparse_cpu.cpp"
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_module: Optional[ModuleType] = None
_error: Optional[str] = None


def _arch_flags() -> list[str]:
    """Vector ISA flags for the CPU torch runs on (never ``-march=native``: a cache may be shared)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma"]
    return []


def _build_directory(name: str) -> Path:
    """Where the extension ``name`` is built: ``$PCSEG_EXTENSIONS_DIR`` or ``~/.cache/pcseg/extensions``."""
    root = os.environ.get("PCSEG_EXTENSIONS_DIR") or Path.home() / ".cache" / "pcseg" / "extensions"
    return Path(root) / name


def _import_built(name: str, directory: Path) -> Optional[ModuleType]:
    """Import an already built ``<directory>/<name>.so`` (no compiler run, no build check), else None."""
    library = directory / f"{name}{'.pyd' if sys.platform == 'win32' else '.so'}"  # cpp_extension's naming
    if not library.exists():
        return None
    try:
        spec = importlib.util.spec_from_file_location(name, library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except ImportError:  # half written by a concurrent build: build (and wait for it) below
        return None


def load() -> Optional[ModuleType]:
    """The compiled module, building it on the first call on this machine; None if it cannot be built.

    The build is named by a hash of the source, the flags, torch's and Python's versions, so a change
    of any of them builds anew; a finished build is imported directly afterwards.
    """
    global _module, _error
    if _module is not None or _error is not None:
        return _module
    with _lock:
        if _module is None and _error is None:
            flags = ["-O3", "-fopenmp", *_arch_flags()]  # at::parallel_for runs on torch's OpenMP threads
            versions = f"{torch.__version__} {sys.version_info[:2]} {' '.join(flags)}".encode()
            name = f"pcseg_sparse_cpu_{hashlib.sha1(_SOURCE.read_bytes() + versions).hexdigest()[:12]}"
            directory = _build_directory(name)
            _module = _import_built(name, directory)
            if _module is None:
                try:
                    from torch.utils import cpp_extension
                    _log.info("pcseg: building the CPU sparse kernels (once per machine, about a minute)")
                    directory.mkdir(parents=True, exist_ok=True)
                    _module = cpp_extension.load(name, [str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                                                 build_directory=str(directory), verbose=False)
                except Exception as exc:  # no compiler, no headers, a failed build: the torch path remains
                    lines = str(exc).strip().splitlines()
                    _error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return _module


def available() -> bool:
    """Whether the compiled kernels can be used (builds them on the first call)."""
    return load() is not None


def unavailable_reason() -> Optional[str]:
    """Why :func:`load` returned None (the build error's last line), or None."""
    load()
    return _error


def conv_forward(feats: Tensor, table: Tensor, weight: Tensor) -> Tensor:
    """(Each kernel call is a ``pcseg::<name>`` range in ``torch.profiler`` traces.)

    feats (N_in, C_in) float32, table (N_out, K) int32, weight (K, C_in, C_out) float32 → (N_out, C_out)."""
    with record_function("pcseg::conv_forward"):
        return load().conv_forward(feats.contiguous(), table.contiguous(), weight.contiguous())


def conv_weight_grad(feats: Tensor, grad_out: Tensor, columns: Tensor) -> Tensor:
    """feats (N_in, C_in), grad_out (N_out, C_out) float32, columns (K, N_out) int32 (the table
    transposed) → (K, C_in, C_out)."""
    with record_function("pcseg::conv_weight_grad"):
        return load().conv_weight_grad(feats.contiguous(), grad_out.contiguous(), columns.contiguous())


def lookup_table(in_keys: Tensor, in_order: Tensor, out_keys: Tensor, out_order: Tensor,
                 offset_keys: Tensor) -> Tensor:
    """(N_out, K) int32 rows of ``out_key + offset_key`` among the inputs, -1 where absent.

    in_keys, out_keys: (N,) sorted int64 keys; in_order, out_order: (N,) int64 rows of each sorted key;
    offset_keys: (K,) int64.
    """
    with record_function("pcseg::lookup_table"):
        return load().lookup_table(in_keys.contiguous(), in_order.contiguous(), out_keys.contiguous(),
                                   out_order.contiguous(), offset_keys.contiguous())
