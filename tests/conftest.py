"""Test-session settings shared by every test module."""
import os

import torch

# Under pytest-xdist each worker gets one intra-op thread, so N workers use N cores without
# oversubscription (OpenMP barriers with more threads than cores slow sparse ops by several times).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
