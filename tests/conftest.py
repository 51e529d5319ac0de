"""Test-session settings shared by every test module."""
import os

import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter. Triton reads this when it is first
# imported, and some test dependencies import it, so it is set before any test module loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist each worker gets one intra-op thread, so N workers use N cores without
# oversubscription (OpenMP barriers with more threads than cores slow sparse ops by several times).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
