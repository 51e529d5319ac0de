"""torch.compile(fullgraph=True) of the eager network and a training step: no graph breaks, eager's numbers.

The compiled graph builds the traced form of the kernel maps (neighbour tables); data-dependent
sizes (unique voxels) need ``capture_dynamic_output_shape_ops``, the graph assertions
``capture_scalar_outputs``. Slow: Inductor compiles forward and backward (minutes on 2 cores). Both
the default traced form of the convolutions ("pairs") and "kernel" (the compiled CPU kernel as an op,
its backward registered with it) are checked.
"""
import time

import pytest
import torch

from deploy_helpers import make_clouds
from pcseg.deploy import PointsToLogits
from pcseg.models import MinkUNet
from pcseg.sparse.kernels import traced_conv


@pytest.mark.slow
@pytest.mark.parametrize("conv", ["pairs", "kernel"])
def test_compiled_training_step_equals_eager(conv, request, capsys):
    if conv == "kernel":
        request.getfixturevalue("cpu_kernels")
    cloud = make_clouds(3)[2]                                              # the single object
    labels = (cloud.points[:, 2] > cloud.points[:, 2].median()).long()

    def build() -> PointsToLogits:
        torch.manual_seed(0)
        return PointsToLogits(MinkUNet(3, 2, 3, (8,) * 8, (1,) * 8, stem_kernel=3, init_dim=8), 0.05).train()

    def step(forward) -> torch.Tensor:
        loss = torch.nn.functional.cross_entropy(forward(cloud.points, cloud.feats), labels)
        loss.backward()                                     # through the compiled backward graph
        return loss

    eager, compiled = build(), build()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True, capture_scalar_outputs=True), \
            traced_conv(conv):
        start = time.perf_counter()
        loss_c = step(torch.compile(compiled, fullgraph=True))
        seconds = time.perf_counter() - start
    loss_e = step(eager)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    for (name, pe), (_, pc) in zip(eager.named_parameters(), compiled.named_parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")
    with capsys.disabled():
        print(f"\ntorch.compile(fullgraph=True) of a training step, traced form {conv!r}: first call (compile) "
              f"{seconds:.0f} s")
