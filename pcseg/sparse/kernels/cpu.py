"""The compiled CPU kernels (``cpu/sparse_cpu.cpp``), built on first use with the system's C++ compiler.

Three dispatcher ops on a neighbour table ``(N_out, K) int32`` (-1: no input), ``torch.ops.pcseg.*``:

* :func:`conv_forward` — ``out[o] = Σ_k feats[table[o, k]] @ weight[k]``, output-stationary: each
  block of 64 output rows is one task and sums its offsets and channels in a fixed order, so the bits
  do not depend on the thread count; no pair buffer, no scatter. Differentiable (its backward runs
  the two kernels below) and traceable (a fake kernel gives its shape), so ``torch.export`` and
  AOTInductor can carry it as one op per convolution (the traced form ``"kernel"``).
* :func:`conv_weight_grad` — ``grad[k] = Σ_o feats[table[o, k]]ᵀ grad_out[o]``, one task per offset
  (it reads the table transposed, ``(K, N_out)``, one offset's rows contiguous).
* :func:`lookup_table` — the table itself, by one merge join of sorted keys per offset.

The library is compiled once per machine, torch version and CPU capability with
``torch.utils.cpp_extension.load`` (about a minute; ``make venv`` does it ahead) into
``$PCSEG_EXTENSIONS_DIR`` (default ``~/.cache/pcseg/extensions``) and loaded from there afterwards
with ``torch.ops.load_library``. It is a plain shared library without Python (:func:`library_path`):
a C++ program running an AOTInductor package that calls the ops loads it first. Without a working
compiler :func:`available` is False, the reason is in :func:`unavailable_reason`, and the sparse core
uses its pure-torch path.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

__all__ = ["available", "unavailable_reason", "load", "library_path", "conv_forward", "conv_weight_grad",
           "lookup_table"]

_SOURCE = Path(__file__).with_name("cpu") / "sparse_cpu.cpp"
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_library: Optional[Path] = None
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


def _load_built(library: Path) -> bool:
    """Load an already built library (no compiler run, no build check); False if there is none yet."""
    if not library.exists():
        return False
    try:
        torch.ops.load_library(str(library))
        return True
    except OSError:  # half written by a concurrent build: build (and wait for it) below
        return False


def _register_python_kernels() -> None:
    """Fake kernels (shapes for tracing) and the autograd formula of the ops, once they exist."""
    @torch.library.register_fake("pcseg::conv_forward")
    def _(feats: Tensor, table: Tensor, weight: Tensor) -> Tensor:
        return feats.new_empty((table.shape[0], weight.shape[2]))

    @torch.library.register_fake("pcseg::conv_weight_grad")
    def _(feats: Tensor, grad_out: Tensor, columns: Tensor) -> Tensor:
        return feats.new_empty((columns.shape[0], feats.shape[1], grad_out.shape[1]))

    @torch.library.register_fake("pcseg::lookup_table")
    def _(in_keys: Tensor, in_order: Tensor, out_keys: Tensor, out_order: Tensor, offset_keys: Tensor) -> Tensor:
        return in_keys.new_empty((out_keys.shape[0], offset_keys.shape[0]), dtype=torch.int32)

    def setup_context(ctx, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
        feats, table, weight = inputs
        ctx.save_for_backward(feats, table, weight)

    def backward(ctx, grad_out: Tensor) -> tuple[Optional[Tensor], None, Optional[Tensor]]:
        from ..kmap import invert_table  # the kernel map imports this module
        feats, table, weight = ctx.saved_tensors
        grad_feats = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_feats = torch.ops.pcseg.conv_forward(grad_out, invert_table(table, feats.shape[0]),
                                                      weight.transpose(1, 2))
        if ctx.needs_input_grad[2]:
            grad_weight = torch.ops.pcseg.conv_weight_grad(feats, grad_out, table.t())
        return grad_feats, None, grad_weight

    torch.library.register_autograd("pcseg::conv_forward", backward, setup_context=setup_context)


def load() -> Optional[Path]:
    """The compiled library's path, building it on the first call on this machine; None if it cannot be built.

    The build is named by a hash of the source, the flags, torch's and Python's versions, so a change
    of any of them builds anew; a finished build is loaded directly afterwards.
    """
    global _library, _error
    if _library is not None or _error is not None:
        return _library
    with _lock:
        if _library is None and _error is None:
            flags = ["-O3", "-fopenmp", *_arch_flags()]  # at::parallel_for runs on torch's OpenMP threads
            versions = f"{torch.__version__} {sys.version_info[:2]} {' '.join(flags)}".encode()
            name = f"pcseg_sparse_cpu_{hashlib.sha1(_SOURCE.read_bytes() + versions).hexdigest()[:12]}"
            directory = _build_directory(name)
            library = directory / f"{name}.so"  # cpp_extension's naming of a library without Python
            if not _load_built(library):
                try:
                    from torch.utils import cpp_extension
                    _log.info("pcseg: building the CPU sparse kernels (once per machine, about a minute)")
                    directory.mkdir(parents=True, exist_ok=True)
                    cpp_extension.load(name, [str(_SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
                                       build_directory=str(directory), is_python_module=False, verbose=False)
                except Exception as exc:  # no compiler, no headers, a failed build: the torch path remains
                    lines = str(exc).strip().splitlines()
                    _error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
                    return None
            _register_python_kernels()
            _library = library
    return _library


def available() -> bool:
    """Whether the compiled kernels can be used (builds them on the first call)."""
    return load() is not None


def unavailable_reason() -> Optional[str]:
    """Why :func:`load` returned None (the build error's last line), or None."""
    load()
    return _error


def library_path() -> Path:
    """The compiled library (a shared object without Python), built if needed; RuntimeError if it cannot be.

    A process that runs a program exported with the traced form ``"kernel"`` loads it first:
    ``torch.ops.load_library(path)`` in Python, ``dlopen`` in C++ (``examples/aoti_cpp --ops``).
    """
    if load() is None:
        raise RuntimeError(f"the compiled CPU kernels could not be built here ({_error})")
    return _library


def conv_forward(feats: Tensor, table: Tensor, weight: Tensor) -> Tensor:
    """``pcseg::conv_forward`` (a ``pcseg::conv_forward`` range in ``torch.profiler`` traces).

    feats (N_in, C_in) float32, table (N_out, K) int32, weight (K, C_in, C_out) float32 → (N_out, C_out).
    Each op raises RuntimeError (:func:`library_path`) where the kernels cannot be built."""
    library_path()
    return torch.ops.pcseg.conv_forward(feats, table, weight)


def conv_weight_grad(feats: Tensor, grad_out: Tensor, columns: Tensor) -> Tensor:
    """feats (N_in, C_in), grad_out (N_out, C_out) float32, columns (K, N_out) int32 (the table
    transposed) → (K, C_in, C_out)."""
    library_path()
    return torch.ops.pcseg.conv_weight_grad(feats, grad_out, columns)


def lookup_table(in_keys: Tensor, in_order: Tensor, out_keys: Tensor, out_order: Tensor,
                 offset_keys: Tensor) -> Tensor:
    """(N_out, K) int32 rows of ``out_key + offset_key`` among the inputs, -1 where absent.

    in_keys, out_keys: (N,) sorted int64 keys; in_order, out_order: (N,) int64 rows of each sorted key;
    offset_keys: (K,) int64.
    """
    library_path()
    return torch.ops.pcseg.lookup_table(in_keys, in_order, out_keys, out_order, offset_keys)
