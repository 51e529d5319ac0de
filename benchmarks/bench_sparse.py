"""A fair CPU harness for pcseg's sparse core against spconv and MinkowskiEngine; one JSON line per case.

    python benchmarks/bench_sparse.py [--voxels 150000] [--repeats 7] [--threads 1] [--unet-dtypes fp32 bf16]
    PYTHONPATH=. /work/peers/.venv/bin/python benchmarks/bench_sparse.py …   # with the peers (benchmarks/peers.md)

The driver (no ``--engine``) writes the inputs once to ``<work dir>/inputs.npz``: a synthetic room
voxelised at 2 cm and cropped to ``--voxels`` sites around its centre, features, the conv weights
in pcseg's layout and the upstream gradients. It then starts each engine in **its own process**
(``--engine {pcseg,spconv,me} --phase check|time``), each run as its users run it:

* pcseg: a ``SparseTensor``'s coordinate context caches the kernel map; later calls on a tensor of
  the same context reuse it.
* spconv: ``SubMConv3d(..., indice_key=...)`` stores its index pairs in the *output* tensor's
  ``indice_dict``; the next call on that tensor (``y.replace_feature(f)``) reuses them.
* MinkowskiEngine: the coordinate manager caches the kernel map; a ``SparseTensor`` made with the
  same ``coordinate_map_key`` / ``coordinate_manager`` reuses it.

Every worker gets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` set to
``--threads`` (ME's GEMMs go to OpenBLAS, whose threads torch does not set) and calls
``torch.set_num_threads``. spconv runs only at ``--threads 1``: its CPU scatter (2.3.8) races at
more than one thread and returns wrong output rows and input gradients (benchmarks/peers.md), so
at more threads its lines say ``skipped`` with that reason.

**Agreement before timing:** in the check phase every engine computes the 3³ submanifold conv
(32→32 and 64→64) output and both gradients (features and weights, converted back to pcseg's
layout) for the same weights; the driver prints the largest absolute difference to pcseg's and
stops (exit 1) if any exceeds ``--atol`` (relative to the largest reference value, floor 1). Only
then the time phase runs.

Cases (min and median of ``--repeats`` after one warm-up; ``peak_rss_growth_mb``: the process's
VmHWM after the case minus its VmRSS before it, the peak counter reset through ``clear_refs``):
``kmap_build`` (pcseg: coordinate context + kernel map incl. the CSR reducer; spconv: its pair
generation ``ops.get_indice_pairs`` only, not a forward; ME: ``SparseTensor`` construction + kernel
map), ``subm3_fwd_{32,64}`` and ``subm3_fwdbwd_{32,64}`` with the map cached, and (``--unet-dtypes``)
``res16unet34c_fwd_fp32`` (pcseg and ME), ``res16unet34c_fwd_bf16`` (pcseg, bf16 autocast) from fresh
coordinates each call, with the RSS after every call, warm-up first (growth from call to call shows
accumulation). A ``summary`` line per case gives the peers' min time over pcseg's (> 1: pcseg
faster). The U-Net's weights differ between the engines (its parity is
``benchmarks/me_checkpoint_parity.py``'s job); its timing does not depend on them.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcseg.data.synthetic import generate_room  # noqa: E402
from pcseg.models.convert import me_kernel_to_pcseg  # noqa: E402
from pcseg.sparse import pack_keys, voxelize  # noqa: E402

ENGINES = ("pcseg", "spconv", "me")
CHANNELS = (32, 64)
KERNEL = (3, 3, 3)
SPCONV_THREADS = ("spconv 2.3.8's CPU scatter races at more than one thread (wrong output rows and input "
                  "gradients, benchmarks/peers.md): timed at --threads 1 only")

# (out, grad_feats, grad_weight) of one conv case: (N, C), (N, C), (K, C, C) in pcseg's layout
ConvResult = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class EngineMissing(RuntimeError):
    """The engine's package is not importable in this interpreter."""


# ---------------------------------------------------------------------------------------------- input
def make_scene(num_points: int, voxel_size: float, voxels: int) -> torch.Tensor:
    """(M, 4) int32 batch-first voxel coords of a synthetic room (walls, floor, furniture surfaces).

    The room is sampled densely enough that its surfaces are closed at ``voxel_size`` (about 9 active
    neighbours in a 3x3x3 window, as a ScanNet mesh at 2 cm), then cropped to the ``voxels`` sites
    nearest the room's centre in x/y, so the scene keeps that density at the requested size. Rows
    are in key order, coordinates >= 0.
    """
    room = generate_room(0, num_points=num_points)
    vox = voxelize(torch.from_numpy(room.coord), voxel_size)
    coords = vox.coords - vox.coords.min(0).values
    centre = coords[:, :2].float().median(0).values
    dist = (coords[:, :2].float() - centre).abs().max(1).values
    coords = coords[torch.argsort(dist, stable=True)[:voxels]]
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], 1)
    return coords[torch.argsort(pack_keys(coords))]


def write_inputs(path: Path, coords: torch.Tensor, seed: int = 0) -> None:
    """Save coords and, per channel count C, features (N, C), a weight (27, C, C) in pcseg's layout
    and an upstream gradient (N, C) (scaled so both gradients are O(1)); U-Net features (N, 3)."""
    g = torch.Generator().manual_seed(seed)
    n, k = len(coords), int(np.prod(KERNEL))
    arrays = {"coords": coords.numpy(), "unet_feats": torch.rand(n, 3, generator=g).numpy()}
    for c in CHANNELS:
        arrays[f"feats_{c}"] = torch.randn(n, c, generator=g).numpy()
        arrays[f"weight_{c}"] = (torch.randn(k, c, c, generator=g) / (k * c) ** 0.5).numpy()
        arrays[f"grad_{c}"] = (torch.randn(n, c, generator=g) / n ** 0.5).numpy()
    np.savez(path, **arrays)


# ------------------------------------------------------------------------------------ weight layouts
def pcseg_to_spconv(weight: torch.Tensor) -> torch.Tensor:
    """(27, C_in, C_out) pcseg (offsets last axis fastest) → spconv's KRSC (C_out, k, k, k, C_in).

    Both are cross-correlations: pcseg's dense equivalent is ``weight.permute(2, 1, 0)`` reshaped to
    ``(C_out, C_in, k, k, k)``; spconv's is its ``permute(0, 4, 1, 2, 3)`` (benchmarks/peers.md).
    """
    c_in, c_out = weight.shape[1:]
    return weight.permute(2, 1, 0).reshape(c_out, c_in, *KERNEL).permute(0, 2, 3, 4, 1).contiguous()


def spconv_to_pcseg(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pcseg_to_spconv`: (C_out, k, k, k, C_in) → (27, C_in, C_out)."""
    c_out, c_in = weight.shape[0], weight.shape[-1]
    return weight.permute(0, 4, 1, 2, 3).reshape(c_out, c_in, -1).permute(2, 1, 0).contiguous()


def pcseg_to_me(weight: torch.Tensor) -> torch.Tensor:
    """(27, C_in, C_out) pcseg → MinkowskiEngine (offsets first axis fastest); its own inverse.

    Converting between the two orders reverses the axis order of the offset grid, which for a cubic
    kernel is the same permutation both ways (``pcseg.models.convert.me_kernel_to_pcseg``).
    """
    return me_kernel_to_pcseg(weight, KERNEL)


# ----------------------------------------------------------------------------------------- measuring
def emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status: no {field} line")


def reset_peak_rss() -> None:
    """Reset this process's VmHWM to its current RSS (Linux ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def timed(fn: Callable[[], object], repeats: int) -> dict[str, Any]:
    """min / median seconds of ``fn`` over ``repeats`` runs after one warm-up, and the peak RSS growth."""
    fn()
    reset_peak_rss()
    base = _status_kb("VmRSS")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"min_s": round(min(times), 4), "median_s": round(statistics.median(times), 4), "repeats": repeats,
            "peak_rss_growth_mb": round((_status_kb("VmHWM") - base) / 1024, 1)}


# ------------------------------------------------------------------------------------------- engines
class Pcseg:
    """pcseg.sparse as its users call it."""

    def __init__(self, coords: torch.Tensor) -> None:
        from pcseg.sparse import SparseConv, SparseTensor
        self.SparseTensor, self.SparseConv, self.coords = SparseTensor, SparseConv, coords

    def build_map(self) -> None:
        """Coordinate context + kernel map in the form the backend's convolution reads: the neighbour
        table (compiled CPU kernels) or the pairs and their CSR reducer (torch path)."""
        from pcseg.sparse.kernels import conv_kernel
        x = self.SparseTensor(torch.empty(len(self.coords), 1), self.coords)
        kmap = x.context.kernel_map(x.stride, KERNEL, (1, 1, 1), (1, 1, 1))
        if conv_kernel(x.F.device, torch.float32) == "torch":
            kmap.reducer(torch.float32)
        else:
            kmap.neighbor_table()

    def conv(self, feats: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor
             ) -> tuple[Callable[[], torch.Tensor], Callable[[], ConvResult]]:
        conv = self.SparseConv(weight.shape[1], weight.shape[2], 3)
        with torch.no_grad():
            conv.weight.copy_(weight)
        x = self.SparseTensor(feats, self.coords)
        conv(x)  # builds and caches the map in x's context

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return conv(x).F

        def forward_backward() -> ConvResult:
            conv.weight.grad = None
            f = feats.clone().requires_grad_(True)
            out = conv(self.SparseTensor(f, self.coords, context=x.context)).F
            (out * grad).sum().backward()
            return out.detach(), f.grad, conv.weight.grad
        return forward, forward_backward

    def unet(self, feats: torch.Tensor) -> dict[str, Callable[[], object]]:
        """Res16UNet34C forwards by case name, each from fresh coordinates (maps rebuilt every call)."""
        from pcseg.models import build_model
        model = build_model({"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3}).eval()

        def fwd() -> object:
            with torch.no_grad():
                return model(self.SparseTensor(feats, self.coords)).F

        def fwd_bf16() -> object:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(self.SparseTensor(feats, self.coords)).F
        return {"res16unet34c_fwd_fp32": fwd, "res16unet34c_fwd_bf16": fwd_bf16}


class Spconv:
    """spconv 2.3.8 on CPU, index pairs cached on the output tensor's ``indice_dict``."""

    def __init__(self, coords: torch.Tensor) -> None:
        try:
            import spconv.pytorch as spconv
            import spconv.pytorch.ops as spconv_ops
        except ImportError as exc:
            raise EngineMissing(f"spconv is not importable ({exc}); see benchmarks/peers.md") from exc
        # 2.3.8's backward asks for a CUDA stream before taking its CPU path (benchmarks/peers.md)
        spconv_ops.get_current_stream = lambda: 0
        self.spconv, self.ops, self.coords = spconv, spconv_ops, coords
        self.shape = (coords[:, 1:].max(0).values + 1).tolist()
        self.map_conv, self.map_input = self._conv(1), self.tensor(torch.empty(len(coords), 1))

    def tensor(self, feats: torch.Tensor):
        return self.spconv.SparseConvTensor(feats, self.coords, self.shape, batch_size=1)

    def build_map(self) -> None:
        conv, x = self.map_conv, self.map_input
        self.ops.get_indice_pairs(x.indices, x.batch_size, x.spatial_shape, conv.algo, conv.kernel_size,
                                  conv.stride, conv.padding, conv.dilation, conv.output_padding, conv.subm,
                                  conv.transposed)  # what SubMConv3d.forward calls for new pairs

    def _conv(self, channels: int, out_channels: int | None = None):
        return self.spconv.SubMConv3d(channels, out_channels or channels, 3, bias=False, indice_key="subm")

    def conv(self, feats: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor
             ) -> tuple[Callable[[], torch.Tensor], Callable[[], ConvResult]]:
        conv = self._conv(weight.shape[1], weight.shape[2])
        with torch.no_grad():
            conv.weight.copy_(pcseg_to_spconv(weight))
        with torch.no_grad():
            y = conv(self.tensor(feats))  # builds the pairs, stored in y.indice_dict["subm"]
        if not torch.equal(y.indices, self.coords):
            raise RuntimeError("spconv: submanifold output rows are not in input order")

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return conv(y.replace_feature(feats)).features

        def forward_backward() -> ConvResult:
            conv.weight.grad = None
            f = feats.clone().requires_grad_(True)
            out = conv(y.replace_feature(f)).features
            (out * grad).sum().backward()
            return out.detach(), f.grad, spconv_to_pcseg(conv.weight.grad)
        return forward, forward_backward

    def unet(self, feats: torch.Tensor) -> dict[str, Callable[[], object]]:
        return {}


class Minkowski:
    """MinkowskiEngine 0.5.4 (CPU, OpenBLAS), kernel maps cached in the coordinate manager."""

    def __init__(self, coords: torch.Tensor) -> None:
        collections.Sequence = collections.abc.Sequence  # ME 0.5.4 imports it from collections
        warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY")
        try:
            import MinkowskiEngine as ME
        except ImportError as exc:
            raise EngineMissing(f"MinkowskiEngine is not importable ({exc}); see benchmarks/peers.md") from exc
        self.ME, self.coords = ME, coords

    def build_map(self) -> None:
        x = self.ME.SparseTensor(torch.empty(len(self.coords), 1), coordinates=self.coords)
        x.coordinate_manager.kernel_map(x.coordinate_map_key, x.coordinate_map_key, kernel_size=3)

    def conv(self, feats: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor
             ) -> tuple[Callable[[], torch.Tensor], Callable[[], ConvResult]]:
        ME = self.ME
        conv = ME.MinkowskiConvolution(weight.shape[1], weight.shape[2], kernel_size=3, dimension=3)
        with torch.no_grad():
            conv.kernel.copy_(pcseg_to_me(weight))
        x = ME.SparseTensor(feats, coordinates=self.coords)
        with torch.no_grad():
            y = conv(x)  # builds the kernel map, cached in x.coordinate_manager
        if not torch.equal(y.C, self.coords):
            raise RuntimeError("MinkowskiEngine: submanifold output rows are not in input order")

        def again(f: torch.Tensor):
            return ME.SparseTensor(f, coordinate_map_key=x.coordinate_map_key, coordinate_manager=x.coordinate_manager)

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return conv(again(feats)).F

        def forward_backward() -> ConvResult:
            conv.kernel.grad = None
            f = feats.clone().requires_grad_(True)
            out = conv(again(f)).F
            (out * grad).sum().backward()
            return out.detach(), f.grad, pcseg_to_me(conv.kernel.grad)
        return forward, forward_backward

    def unet(self, feats: torch.Tensor) -> dict[str, Callable[[], object]]:
        from benchmarks.me_checkpoint_parity import ARCHITECTURES, MEUNet
        from pcseg.models.minkunet import LAYERS, PLANES
        layers, planes, stem = ARCHITECTURES["Res16UNet34C"]
        model = MEUNet(3, 20, LAYERS[layers], PLANES[planes], stem).eval()

        def fwd() -> object:
            with torch.no_grad():
                return model(self.ME.SparseTensor(feats, coordinates=self.coords)).F
        return {"res16unet34c_fwd_fp32": fwd}


ENGINE_CLASSES = {"pcseg": Pcseg, "spconv": Spconv, "me": Minkowski}


# -------------------------------------------------------------------------------------------- worker
def run_worker(engine: str, phase: str, work_dir: Path, threads: int, repeats: int,
               unet_dtypes: Iterable[str], pcseg_backend: str = "auto") -> None:
    """One engine in this process: ``check`` saves its conv results, ``time`` prints its case lines.

    pcseg_backend: pcseg's :func:`~pcseg.sparse.kernels.conv_backend` for the whole run.
    """
    if engine == "pcseg":
        from pcseg.sparse.kernels import conv_backend, conv_kernel
        with conv_backend(pcseg_backend):
            meta_kernel = conv_kernel(torch.device("cpu"), torch.float32)
            _run_engine_cases(engine, phase, work_dir, threads, repeats, unet_dtypes, {"kernel": meta_kernel})
    else:
        _run_engine_cases(engine, phase, work_dir, threads, repeats, unet_dtypes, {})


def _run_engine_cases(engine: str, phase: str, work_dir: Path, threads: int, repeats: int,
                      unet_dtypes: Iterable[str], extra: dict[str, Any]) -> None:
    """The body of :func:`run_worker`; ``extra`` goes into every line's metadata."""
    torch.set_num_threads(threads)
    data = np.load(work_dir / "inputs.npz")
    coords = torch.from_numpy(data["coords"])
    meta = {"engine": engine, "threads": threads, "voxels": len(coords), **extra}
    try:
        impl = ENGINE_CLASSES[engine](coords)
    except EngineMissing as exc:
        emit(case="engine", **meta, skipped=str(exc))
        return
    cases = {c: impl.conv(*(torch.from_numpy(data[f"{name}_{c}"]) for name in ("feats", "weight", "grad")))
             for c in CHANNELS}
    if phase == "check":
        results = {}
        for c, (_, forward_backward) in cases.items():
            for name, value in zip(("out", "grad_feats", "grad_weight"), forward_backward()):
                results[f"{name}_{c}"] = value.detach().numpy()
        np.savez(work_dir / f"check_{engine}.npz", **results)
        emit(case="engine", **meta, checked=sorted(results))
        return
    emit(case="kmap_build", **meta, **timed(impl.build_map, repeats))
    for c, (forward, forward_backward) in cases.items():
        emit(case=f"subm3_fwd_{c}", **meta, **timed(forward, repeats))
        emit(case=f"subm3_fwdbwd_{c}", **meta, **timed(forward_backward, repeats))
    del cases
    for case, fn in impl.unet(torch.from_numpy(data["unet_feats"])).items():
        if case.rsplit("_", 1)[1] not in unet_dtypes:
            continue
        rss_after = []

        def call() -> None:
            fn()
            rss_after.append(round(_status_kb("VmRSS") / 1024, 1))
        record = timed(call, repeats)
        emit(case=case, **meta, **record, rss_after_each_call_mb=rss_after)


# -------------------------------------------------------------------------------------------- driver
def compare(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], atol: float) -> dict[str, Any]:
    """Largest |other - reference| per array, and whether each is within ``atol * max(1, max|reference|)``."""
    diffs, ok = {}, True
    for name, ref in reference.items():
        if name not in other or other[name].shape != ref.shape:
            raise ValueError(f"agreement: {name}: expected shape {ref.shape}, got "
                             f"{other[name].shape if name in other else 'nothing'}")
        diff = float(np.abs(other[name].astype(np.float64) - ref).max()) if ref.size else 0.0
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 0.0)
        diffs[name] = float(f"{diff:.3g}")
        ok = ok and diff <= atol * scale
    return {"max_abs_diff": diffs, "ok": ok}


def run_engine(engine: str, phase: str, args: argparse.Namespace, work_dir: Path) -> list[dict[str, Any]]:
    """Start one worker process; its JSON lines (echoed to stdout in the time phase)."""
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--engine", engine, "--phase", phase,
           "--work-dir", str(work_dir), "--threads", threads, "--repeats", str(args.repeats),
           "--unet-dtypes", *args.unet_dtypes, "--pcseg-backend", args.pcseg_backend]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"bench_sparse.py: {engine} ({phase}) failed:\n{out.stderr[-4000:]}")
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if phase == "time":
        for record in records:
            emit(**record)
    return records


def summarise(records: Iterable[dict[str, Any]]) -> None:
    """One ``summary`` line per timed case: each peer's min time over pcseg's (> 1: pcseg faster)."""
    mins: dict[str, dict[str, float]] = {}
    for r in records:
        if "min_s" in r:
            mins.setdefault(r["case"], {})[r["engine"]] = r["min_s"]
    for case, by_engine in mins.items():
        if "pcseg" in by_engine and len(by_engine) > 1:
            ratios = {f"pcseg_vs_{e}": round(t / by_engine["pcseg"], 3) for e, t in by_engine.items() if e != "pcseg"}
            emit(case="summary", of=case, **ratios)


def drive(args: argparse.Namespace, work_dir: Path) -> None:
    coords = make_scene(args.points, args.voxel_size, args.voxels)
    write_inputs(work_dir / "inputs.npz", coords)
    emit(case="scene", voxels=len(coords), voxel_size=args.voxel_size, threads=args.threads, repeats=args.repeats,
         torch=torch.__version__, python=sys.version.split()[0], numpy=np.__version__, cpus=os.cpu_count())
    engines = [e for e in args.engines if not (e == "spconv" and args.threads != 1)]
    if "spconv" in args.engines and "spconv" not in engines:
        emit(case="engine", engine="spconv", threads=args.threads, skipped=SPCONV_THREADS)
    available = []
    for engine in engines:
        records = run_engine(engine, "check", args, work_dir)
        for record in records:
            if "skipped" in record:
                emit(**record)
        if not any("skipped" in r for r in records):
            available.append(engine)
    if "pcseg" not in available:
        raise SystemExit("bench_sparse.py: pcseg must run (it is every comparison's reference)")
    reference = dict(np.load(work_dir / "check_pcseg.npz"))
    failed = []
    for engine in available:
        if engine != "pcseg":
            result = compare(reference, dict(np.load(work_dir / f"check_{engine}.npz")), args.atol)
            emit(case="agreement", engine=engine, reference="pcseg", atol=args.atol, **result)
            if not result["ok"]:
                failed.append(engine)
    if failed:
        raise SystemExit(f"bench_sparse.py: {', '.join(failed)} disagree(s) with pcseg beyond --atol {args.atol}; "
                         "nothing timed")
    timed_records = [r for engine in available for r in run_engine(engine, "time", args, work_dir)]
    summarise(timed_records)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=500_000, help="points sampled on the synthetic room")
    parser.add_argument("--voxels", type=int, default=150_000, help="voxels kept (cropped around the centre)")
    parser.add_argument("--voxel-size", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--atol", type=float, default=1e-4, help="agreement tolerance (x max(1, max|ref|))")
    parser.add_argument("--unet-dtypes", nargs="*", choices=("fp32", "bf16"), default=["fp32", "bf16"],
                        help="Res16UNet34C forward cases (bf16: pcseg under autocast); none to skip the U-Net")
    parser.add_argument("--pcseg-backend", choices=("auto", "torch", "cpu"), default="auto",
                        help="pcseg's conv backend (auto: the compiled CPU kernels where they build)")
    parser.add_argument("--work-dir", type=Path, help="where inputs and check results go (default: a temp dir)")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)   # worker mode
    parser.add_argument("--phase", choices=("check", "time"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.voxels < 1:
        parser.error("--repeats, --threads and --voxels must be >= 1")
    if args.engine:
        run_worker(args.engine, args.phase, args.work_dir, args.threads, args.repeats, args.unet_dtypes,
                   args.pcseg_backend)
    elif args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        drive(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            drive(args, Path(tmp))


if __name__ == "__main__":
    main()
