"""Test-session settings shared by every test module."""
import os

import pytest
import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter. Triton reads this when it is first
# imported, and some test dependencies import it, so it is set before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist each worker gets one intra-op thread, so N workers use N cores without
# oversubscription (OpenMP barriers with more threads than cores slow sparse ops by several times).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def devices_under_test() -> list[str]:
    """Devices the ``device`` fixture runs on: ``PCSEG_TEST_DEVICES`` (comma-separated, e.g. ``cpu,cuda``),
    else cpu plus cuda when a GPU is visible."""
    listed = os.environ.get("PCSEG_TEST_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=devices_under_test())
def device(request) -> torch.device:
    """A torch device to run the test on, once per entry of :func:`devices_under_test` (cuda skipped without a GPU)."""
    dev = torch.device(request.param)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("PCSEG_TEST_DEVICES names cuda but no GPU is visible")
    return dev


@pytest.fixture
def cpu_kernels():
    """Skips unless the compiled CPU kernels build here (a C++ compiler and torch's headers)."""
    from pcseg.sparse.kernels import cpu
    if not cpu.available():
        pytest.skip(f"the compiled CPU kernels do not build here: {cpu.unavailable_reason()}")
