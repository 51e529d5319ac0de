"""Fixtures of the sparse-core tests: the fused Triton kernel, in Triton's interpreter without a GPU."""
import importlib.util

import pytest
import torch

from pcseg.sparse.kernels import set_fused_conv


@pytest.fixture
def triton_kernels(monkeypatch):
    """Triton ready to run the kernels here: on the GPU, else in the interpreter on CPU tensors.

    TRITON_INTERPRET is read when Triton and the kernel module are first imported, which happens
    lazily, on the first fused call, after this fixture.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed (pip install pcseg[triton])")
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture(params=["torch", "fused"])
def conv_path(request):
    """Run a test on the torch path and again with the fused kernel switched on."""
    if request.param == "fused":
        request.getfixturevalue("triton_kernels")
        set_fused_conv(True)
    yield request.param
    set_fused_conv(None)
