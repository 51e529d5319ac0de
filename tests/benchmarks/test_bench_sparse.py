"""benchmarks/bench_sparse.py: weight layouts, the agreement check, and the whole harness in tiny mode.

The peers (spconv, MinkowskiEngine) are absent here, so the end-to-end run must report them as
skipped and still time pcseg in its own worker process.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_sparse  # noqa: E402

from pcseg.sparse import SparseConv, SparseTensor  # noqa: E402


def test_spconv_layout_is_the_dense_conv3d_of_the_same_weights():
    w = torch.randn(27, 2, 3)
    s = bench_sparse.pcseg_to_spconv(w)
    assert s.shape == (3, 3, 3, 3, 2)                                   # (C_out, kx, ky, kz, C_in)
    # by hand: spconv's weight at (o, a, b, c, i) is pcseg's offset 9a + 3b + c, row i, column o
    assert s[2, 0, 1, 2, 1] == w[9 * 0 + 3 * 1 + 2, 1, 2]
    assert torch.equal(bench_sparse.spconv_to_pcseg(s), w)
    # spconv computes conv3d(dense, s.permute(0, 4, 1, 2, 3)) (benchmarks/peers.md): compare with pcseg's conv
    coords = torch.tensor([[0, x, y, z] for x in range(3) for y in range(4) for z in range(2)], dtype=torch.int32)
    feats = torch.randn(len(coords), 2)
    conv = SparseConv(2, 3, 3)
    with torch.no_grad():
        conv.weight.copy_(w)
        ours = conv(SparseTensor(feats, coords)).F
    dense = torch.zeros(1, 2, 3, 4, 2)
    dense[0, :, coords[:, 1], coords[:, 2], coords[:, 3]] = feats.t()
    ref = F.conv3d(dense, s.permute(0, 4, 1, 2, 3), padding=1)[0, :, coords[:, 1], coords[:, 2], coords[:, 3]].t()
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_minkowski_layout_puts_the_first_axis_fastest():
    w = torch.randn(27, 1, 1)
    me = bench_sparse.pcseg_to_me(w)
    for a, b, c in [(0, 1, 2), (2, 0, 1), (1, 1, 1)]:       # ME offset a + 3b + 9c, pcseg 9a + 3b + c
        assert me[a + 3 * b + 9 * c] == w[9 * a + 3 * b + c]
    assert torch.equal(bench_sparse.pcseg_to_me(me), w)


def test_compare_flags_a_difference_beyond_the_tolerance():
    ref = {"out": np.array([[1.0, -3.0]]), "grad": np.array([0.5])}
    close = bench_sparse.compare(ref, {"out": np.array([[1.0, -3.0002]]), "grad": np.array([0.5])}, atol=1e-4)
    assert close == {"max_abs_diff": {"out": 0.0002, "grad": 0.0}, "ok": True}   # 2e-4 <= 1e-4 * 3
    far = bench_sparse.compare(ref, {"out": np.array([[1.0, -3.0]]), "grad": np.array([0.5002])}, atol=1e-4)
    assert far["ok"] is False and far["max_abs_diff"]["grad"] == 0.0002          # 2e-4 > 1e-4 * max(1, 0.5)
    with pytest.raises(ValueError, match="grad: expected shape"):
        bench_sparse.compare(ref, {"out": ref["out"], "grad": np.zeros(2)}, atol=1e-4)


def test_tiny_run_times_pcseg_and_reports_absent_peers(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_sparse.py"), "--voxels", "2000",
                          "--points", "20000", "--repeats", "2", "--unet-dtypes", "fp32", "--work-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert records[0]["case"] == "scene" and records[0]["voxels"] == 2000
    skipped = {r["engine"]: r["skipped"] for r in records if "skipped" in r}
    for engine in ("spconv", "me"):
        if engine in skipped:
            assert "not importable" in skipped[engine]
    timed = {r["case"]: r for r in records if r.get("engine") == "pcseg" and "min_s" in r}
    assert sorted(timed) == ["kmap_build", "res16unet34c_fwd_fp32", "subm3_fwd_32", "subm3_fwd_64",
                             "subm3_fwdbwd_32", "subm3_fwdbwd_64"]
    for r in timed.values():
        # the kernel updates VmHWM lazily, so a case that allocates nothing new can read ~0.1 MB below 0
        assert r["repeats"] == 2 and 0 < r["min_s"] <= r["median_s"] and r["peak_rss_growth_mb"] > -1.0
    assert len(timed["res16unet34c_fwd_fp32"]["rss_after_each_call_mb"]) == 3     # warm-up + 2 repeats
    # the check phase saved pcseg's reference: output and both gradients of each conv, as computed here
    check = np.load(tmp_path / "check_pcseg.npz")
    inputs = np.load(tmp_path / "inputs.npz")
    conv = SparseConv(32, 32, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(inputs["weight_32"]))
    f = torch.from_numpy(inputs["feats_32"]).requires_grad_(True)
    y = conv(SparseTensor(f, torch.from_numpy(inputs["coords"]))).F
    (y * torch.from_numpy(inputs["grad_32"])).sum().backward()
    np.testing.assert_allclose(check["out_32"], y.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(check["grad_feats_32"], f.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(check["grad_weight_32"], conv.weight.grad.numpy(), atol=1e-5)
