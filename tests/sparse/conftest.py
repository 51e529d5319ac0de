"""Fixtures of the sparse-core tests: the fused Triton kernel (in Triton's interpreter without a GPU)
and the traced form of the kernel maps (``cpu_kernels`` is in tests/conftest.py)."""
import importlib.util
import os

import pytest
import torch

from pcseg.sparse import kmap as kmap_module
from pcseg.sparse.kernels import conv_backend, traced_conv


@pytest.fixture
def triton_kernels():
    """Skips unless Triton can run the kernels here: on the GPU, or in its CPU interpreter
    (``TRITON_INTERPRET=1``, set by tests/conftest.py before anything imports Triton)."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install pcseg[triton])")
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and TRITON_INTERPRET is not 1")


@pytest.fixture
def table_maps(monkeypatch):
    """Build kernel maps in their traced form (neighbour table, sort-merge look-up), run eagerly."""
    monkeypatch.setattr(kmap_module, "tracing", lambda: True)


@pytest.fixture(params=["torch", "cpu", "fused", "traced_pairs", "traced_table", "traced_kernel"])
def conv_path(request):
    """Run a test on the torch pair path, on the compiled CPU kernels, with the fused Triton kernel
    switched on, and on the traced form of the kernel maps (the path of torch.export /
    torch.compile) run eagerly, with each traced form of the convolution ("pairs", "table", "kernel")."""
    backend = {"torch": "torch", "cpu": "cpu", "fused": "fused"}.get(request.param, "torch")
    traced = request.param.removeprefix("traced_") if request.param.startswith("traced_") else "pairs"
    if request.param == "fused":
        request.getfixturevalue("triton_kernels")
    elif request.param in ("cpu", "traced_kernel"):
        request.getfixturevalue("cpu_kernels")
    if request.param.startswith("traced_"):
        request.getfixturevalue("table_maps")
    with conv_backend(backend), traced_conv(traced):
        yield request.param
