"""Backbones: registry, parameter counts, shapes in D=2/3/4, batching, head separation."""
import subprocess
import sys

import pytest
import torch

from pcseg.models import MODELS, build_model
from pcseg.sparse import SparseTensor

# Parameter counts of the reference implementations (MinkowskiEngine model zoo) with 3 input
# channels and 20 classes; ours differ only in the head (Linear vs 1x1 conv: same count).
REFERENCE_PARAMS_M = {"Res16UNet34C": 37.85, "MinkUNet34C": 37.85}


def scene(n=3000, dim=3, batch=1, extent=24, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, extent, (n, dim), generator=g)
    b = torch.randint(0, batch, (n, 1), generator=g)
    coords = torch.unique(torch.cat([b, c], 1), dim=0).int()
    return SparseTensor(torch.randn(coords.shape[0], 3, generator=g).to(device), coords.to(device))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_parameter_count_matches_reference(name):
    model = build_model({"name": name, "in_channels": 3, "num_classes": 20, "D": 3})
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - REFERENCE_PARAMS_M[name]) < 0.05, count


def test_registry_names_and_unknown_name_error():
    assert {"MinkUNet14A", "MinkUNet18A", "MinkUNet34A", "MinkUNet34C", "Res16UNet34C"} <= set(MODELS)
    with pytest.raises(KeyError, match="Res16UNet43C.*known: .*Res16UNet34C"):
        build_model({"name": "Res16UNet43C", "in_channels": 3, "num_classes": 20})
    with pytest.raises(TypeError, match="num_clases"):
        build_model({"name": "MinkUNet14A", "in_channels": 3, "num_clases": 20})


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_forward_any_dimension_keeps_sites(dim, device):
    x = scene(n=1500, dim=dim, extent=48 if dim < 4 else 20, device=device)
    model = build_model({"name": "MinkUNet14A", "in_channels": 3, "num_classes": 5, "D": dim}).to(device)
    out = model(x)
    assert out.F.shape == (len(x), 5) and torch.equal(out.C, x.C)
    feats = model.forward_features(x)
    assert feats.F.shape == (len(x), model.feature_channels)
    torch.testing.assert_close(model.forward_head(feats).F, out.F)
    out.F.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_batch_of_two_scenes_equals_each_alone_in_eval_mode(device):
    both = scene(n=4000, batch=2, seed=3, device=device)
    model = build_model({"name": "MinkUNet14A", "in_channels": 3, "num_classes": 4, "D": 3}).to(device).eval()
    with torch.no_grad():
        out = model(both)
        for b in range(2):
            rows = both.C[:, 0] == b
            coords = both.C[rows].clone()
            coords[:, 0] = 0
            alone = model(SparseTensor(both.F[rows], coords))
            torch.testing.assert_close(out.F[rows], alone.F, rtol=1e-4, atol=1e-5)


def test_sparse_core_and_models_import_alone():
    code = ("import sys, pcseg.sparse, pcseg.models; "
            "bad = [m for m in sys.modules if m.startswith(('pcseg.data', 'pcseg.engine', 'pcseg.methods', "
            "'pcseg.vis', 'open3d'))]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
