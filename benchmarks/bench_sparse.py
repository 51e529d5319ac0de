"""Sparse-core benchmarks on a synthetic indoor room at 2 cm, one JSON line per case.

    python benchmarks/bench_sparse.py [--voxels 150000] [--repeats 5] [--threads 2] [--skip-unet]

Cases: kernel-map build, 3x3x3 submanifold conv 32->32 and 64->64 forward and forward+backward with
peak memory, Res16UNet34C forward (fp32, bf16 autocast) and forward+backward. When importable in the
same interpreter, the peers run the same cases on the same voxels: ``spconv`` and
``MinkowskiEngine``. See benchmarks/peers.md for building them beside pcseg. spconv 2.3.8's CPU
scatter races with more than one thread (wrong rows, benchmarks/peers.md): compare at --threads 1.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcseg.data.synthetic import generate_room  # noqa: E402
from pcseg.models import build_model  # noqa: E402
from pcseg.sparse import SparseConv, SparseTensor, pack_keys, voxelize  # noqa: E402


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict:
    """Median/min seconds of ``fn`` over ``repeats`` runs after ``warmup``, plus peak RSS."""
    for _ in range(warmup):
        fn()
    base = peak_rss_mb()
    reset_peak_rss()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "peak_rss_mb": round(peak_rss_mb(), 1), "rss_at_start_mb": round(base, 1)}


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def make_scene(num_points: int, voxel_size: float, voxels: int) -> torch.Tensor:
    """(M, 4) int32 batch-first voxel coords of a synthetic room (walls, floor, furniture surfaces).

    The room is sampled densely enough that its surfaces are closed at ``voxel_size`` (about 9 active
    neighbours in a 3x3x3 window, as a ScanNet mesh at 2 cm), then cropped to the ``voxels`` sites
    nearest the room's centre in x/y, so the scene keeps that density at the requested size.
    """
    room = generate_room(0, num_points=num_points)
    vox = voxelize(torch.from_numpy(room.coord), voxel_size)
    coords = vox.coords - vox.coords.min(0).values
    centre = coords[:, :2].float().median(0).values
    dist = (coords[:, :2].float() - centre).abs().max(1).values
    coords = coords[torch.argsort(dist, stable=True)[:voxels]]
    coords = coords[torch.argsort(pack_keys(torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)))]
    return torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], 1)


def bench_pcseg(coords: torch.Tensor, channels: int, repeats: int) -> None:
    n = len(coords)
    feats = torch.randn(n, channels)
    conv = SparseConv(channels, channels, 3)
    if channels == 32:
        def build():
            x = SparseTensor(feats, coords)
            return x.context.kernel_map((1, 1, 1), (3, 3, 3), (1, 1, 1), (1, 1, 1))
        kmap = build()
        emit(case="kmap_build_subm3", impl="pcseg", voxels=n, pairs_per_site=round(kmap.in_idx.numel() / n + 1, 2),
             **timed(build, repeats))
    x = SparseTensor(feats, coords)
    with torch.no_grad():
        conv(x)
        emit(case=f"subm3_fwd_{channels}", impl="pcseg", voxels=n, **timed(lambda: conv(x), repeats))

    def fwd_bwd():
        f = feats.clone().requires_grad_(True)
        conv(SparseTensor(f, coords, context=x.context)).F.sum().backward()
    emit(case=f"subm3_fwdbwd_{channels}", impl="pcseg", voxels=n, **timed(fwd_bwd, repeats))


def bench_spconv(coords: torch.Tensor, channels: int, repeats: int) -> None:
    try:
        import spconv.pytorch as spconv
        import spconv.pytorch.ops as spconv_ops
    except ImportError:
        return
    # spconv 2.3.8's backward asks for a CUDA stream before taking its CPU path (benchmarks/peers.md)
    spconv_ops.get_current_stream = lambda: 0
    n = len(coords)
    feats = torch.randn(n, channels)
    shape = (coords[:, 1:].max(0).values + 1).tolist()
    conv = spconv.SubMConv3d(channels, channels, 3, bias=False, indice_key="subm")

    def fresh():
        return spconv.SparseConvTensor(feats, coords, shape, 1)

    with torch.no_grad():
        if channels == 32:
            emit(case="kmap_build_subm3", impl="spconv_first_call", voxels=n, **timed(lambda: conv(fresh()), repeats))
        x = fresh()
        conv(x)  # builds and caches the index pairs in x.indice_dict
        emit(case=f"subm3_fwd_{channels}", impl="spconv", voxels=n, **timed(lambda: conv(x), repeats))

    def fwd_bwd():
        f = feats.clone().requires_grad_(True)
        y = conv(spconv.SparseConvTensor(f, coords, shape, 1, indice_dict=x.indice_dict))
        y.features.sum().backward()
    emit(case=f"subm3_fwdbwd_{channels}", impl="spconv", voxels=n, **timed(fwd_bwd, repeats))


def minkowski():
    for name in ("Sequence", "Mapping", "MutableMapping", "Iterable"):   # ME 0.5.4 on Python >= 3.10
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    try:
        import MinkowskiEngine as ME
    except ImportError:
        return None
    return ME


def bench_minkowski(coords: torch.Tensor, channels: int, repeats: int) -> None:
    ME = minkowski()
    if ME is None:
        return
    n = len(coords)
    feats = torch.randn(n, channels)
    conv = ME.MinkowskiConvolution(channels, channels, kernel_size=3, dimension=3)
    if channels == 32:
        def build():
            x = ME.SparseTensor(feats, coordinates=coords)
            return x.coordinate_manager.kernel_map(x.coordinate_map_key, x.coordinate_map_key, kernel_size=3)
        emit(case="kmap_build_subm3", impl="minkowski", voxels=n, **timed(build, repeats))
    x = ME.SparseTensor(feats, coordinates=coords)
    with torch.no_grad():
        conv(x)
        emit(case=f"subm3_fwd_{channels}", impl="minkowski", voxels=n, **timed(lambda: conv(x), repeats))

    def fwd_bwd():
        f = feats.clone().requires_grad_(True)
        y = conv(ME.SparseTensor(f, coordinate_map_key=x.coordinate_map_key, coordinate_manager=x.coordinate_manager))
        y.F.sum().backward()
    emit(case=f"subm3_fwdbwd_{channels}", impl="minkowski", voxels=n, **timed(fwd_bwd, repeats))


def bench_unet(coords: torch.Tensor, repeats: int) -> None:
    n = len(coords)
    feats = torch.randn(n, 3)
    model = build_model({"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3})
    model.eval()
    with torch.no_grad():
        emit(case="res16unet34c_fwd_fp32", impl="pcseg", voxels=n,
             **timed(lambda: model(SparseTensor(feats, coords)), repeats))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emit(case="res16unet34c_fwd_bf16", impl="pcseg", voxels=n,
                 **timed(lambda: model(SparseTensor(feats, coords)), repeats))
    model.train()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(SparseTensor(feats, coords)).F.square().mean().backward()
    emit(case="res16unet34c_fwdbwd_fp32", impl="pcseg", voxels=n, **timed(fwd_bwd, max(1, repeats // 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=500_000, help="points sampled on the synthetic room (~9 active neighbours per site at 2 cm)")
    parser.add_argument("--voxels", type=int, default=150_000, help="voxels kept (cropped around the centre)")
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-unet", action="store_true")
    parser.add_argument("--only", choices=("pcseg", "spconv", "minkowski"), default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    coords = make_scene(args.points, args.voxel_size, args.voxels)
    emit(case="scene", voxels=len(coords), torch=torch.__version__, threads=args.threads,
         device="cpu", python=sys.version.split()[0], numpy=np.__version__)
    for channels in (32, 64):
        if args.only in (None, "pcseg"):
            bench_pcseg(coords, channels, args.repeats)
        if args.only in (None, "spconv"):
            bench_spconv(coords, channels, args.repeats)
        if args.only in (None, "minkowski"):
            bench_minkowski(coords, channels, args.repeats)
    if not args.skip_unet and args.only in (None, "pcseg"):
        bench_unet(coords, args.repeats)


if __name__ == "__main__":
    main()
