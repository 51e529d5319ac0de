"""The first GPU run's checks and timings after the test suite: one JSON line per case (``benchmarks/gpu_check.sh``).

    python benchmarks/gpu_check.py --device cuda [--voxels 150000] [--unet-voxels 150000] [--repeats 7]

On the room of ``benchmarks/bench_sparse.py`` (cropped to ``--voxels``):

* ``fused_vs_torch``: the Triton kernels (``pcseg.sparse.kernels``) against the torch path for the
  3³ submanifold conv 32→32 and 64→64, fp32 and bf16: output, feature and weight gradients, max
  abs difference relative to max(1, max|torch|); ``ok`` within 1e-4 (fp32) / 3e-2 (bf16).
* ``determinism``: each path run twice on the same input, ``identical`` when all bits agree.
* ``subm3_{fwd,fwdbwd}_{32,64}`` per path and dtype, ``res16unet34c_{fwd,fwdbwd}`` per path of
  ``--unet-paths`` (fp32):
  min / median seconds of ``--repeats`` after one warm-up, synchronised, with the peak memory.

Exit status 1 if any agreement or the fused path's determinism fails (after every line is written).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from bench_sparse import make_scene  # noqa: E402

from pcseg.models import build_model  # noqa: E402
from pcseg.sparse import SparseConv, SparseTensor  # noqa: E402
from pcseg.sparse.kernels import conv_backend, triton_runs_on  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}
PATHS = ("torch", "fused")  # the conv backends compared


def emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> dict[str, Any]:
    """min / median seconds over ``repeats`` synchronised runs after one warm-up, and the peak memory."""
    fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"min_s": round(min(times), 5), "median_s": round(statistics.median(times), 5), "repeats": repeats,
            "peak_mem_mb": None if peak is None else round(peak, 1)}


def conv_case(coords: torch.Tensor, channels: int, dtype: torch.dtype, device: torch.device):
    """(forward, forward_backward) of a 3³ submanifold conv on ``coords``, map cached; fixed seeds."""
    g = torch.Generator().manual_seed(channels)
    feats = torch.randn(len(coords), channels, generator=g).to(device, dtype)
    grad = (torch.randn(len(coords), channels, generator=g) / len(coords) ** 0.5).to(device, dtype)
    conv = SparseConv(channels, channels, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / (27 * channels) ** 0.5)
    conv = conv.to(device, dtype)
    x = SparseTensor(feats, coords)
    conv(x)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return conv(x).F

    def forward_backward() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        conv.weight.grad = None
        f = feats.clone().requires_grad_(True)
        out = conv(SparseTensor(f, coords, context=x.context)).F
        (out * grad).sum().backward()
        return out.detach(), f.grad, conv.weight.grad
    return forward, forward_backward


def run(device: torch.device, voxels: int, unet_voxels: int, repeats: int, unet_paths: list[str]) -> bool:
    ok = True
    room = make_scene(max(4 * max(voxels, unet_voxels), 20_000), 0.02, max(voxels, unet_voxels)).to(device)
    coords, unet_coords = room[:voxels], room[:unet_voxels]  # key order: each a slab of the room
    emit(case="scene", device=str(device), voxels=len(coords), torch=torch.__version__,
         gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
         triton=triton_runs_on(device))
    for name, dtype in DTYPES.items():
        for channels in (32, 64):
            results = {}
            for path in PATHS:
                with conv_backend(path):
                    _, forward_backward = conv_case(coords, channels, dtype, device)
                    first, second = forward_backward(), forward_backward()
                identical = all(torch.equal(a, b) for a, b in zip(first, second))
                emit(case="determinism", path=path, dtype=name, channels=channels, identical=identical)
                ok = ok and (identical or path != "fused")
                results[path] = first
            diffs = {}
            for label, ref, other in zip(("out", "grad_feats", "grad_weight"), results["torch"], results["fused"]):
                scale = max(1.0, ref.float().abs().max().item())
                diffs[label] = float(f"{(other.float() - ref.float()).abs().max().item() / scale:.3g}")
            agree = all(d <= TOLERANCE[name] for d in diffs.values())
            emit(case="fused_vs_torch", dtype=name, channels=channels, rel_max_abs_diff=diffs,
                 tolerance=TOLERANCE[name], ok=agree)
            ok = ok and agree
    for name, dtype in DTYPES.items():
        for channels in (32, 64):
            for path in PATHS:
                with conv_backend(path):
                    forward, forward_backward = conv_case(coords, channels, dtype, device)
                    meta = {"path": path, "dtype": name, "voxels": len(coords)}
                    emit(case=f"subm3_fwd_{channels}", **meta, **timed(forward, repeats, device))
                    emit(case=f"subm3_fwdbwd_{channels}", **meta, **timed(forward_backward, repeats, device))
    feats = torch.rand(len(unet_coords), 3, generator=torch.Generator().manual_seed(0)).to(device)
    model = build_model({"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3}).to(device)
    for path in unet_paths:
        meta = {"path": path, "dtype": "fp32", "voxels": len(unet_coords)}

        def fwd() -> object:
            model.eval()
            with torch.no_grad():
                return model(SparseTensor(feats, unet_coords)).F

        def fwd_bwd() -> None:
            model.train()
            model.zero_grad(set_to_none=True)
            model(SparseTensor(feats, unet_coords)).F.square().mean().backward()
        with conv_backend(path):
            emit(case="res16unet34c_fwd", **meta, **timed(fwd, repeats, device))
            emit(case="res16unet34c_fwdbwd", **meta, **timed(fwd_bwd, repeats, device))
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--voxels", type=int, default=150_000)
    parser.add_argument("--unet-voxels", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--unet-paths", nargs="+", choices=sorted(PATHS), default=list(PATHS),
                        help="conv paths the U-Net is timed on (the CPU smoke run skips the interpreted fused one)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if not triton_runs_on(device):
        raise SystemExit(f"gpu_check.py: Triton cannot run on {device} (needs CUDA, or TRITON_INTERPRET=1)")
    if not run(device, args.voxels, args.unet_voxels, args.repeats, args.unet_paths):
        raise SystemExit("gpu_check.py: a fused-vs-torch agreement or the fused path's determinism failed")


if __name__ == "__main__":
    main()
