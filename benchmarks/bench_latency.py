"""Batch-1 end-to-end latency, raw points in → per-point logits out, per executor; one JSON line per case.

    python benchmarks/bench_latency.py [--threads 1 2] [--repeats 5] [--traced-conv pairs|table|kernel] [--profile] \
        [--executors eager compiled exported aoti onnxruntime me_eager]
    python benchmarks/bench_latency.py --tiny --executors eager exported onnxruntime   # seconds: a smoke run
    PYTHONPATH=. /work/peers/.venv/bin/python benchmarks/bench_latency.py --executors eager me_eager  # with ME

Cases: MinkUNet18A at 5 cm on a synthetic 64-beam LiDAR sweep (~120k points, remission as the one
feature, 19 classes) and Res16UNet34C at 2 cm on a synthetic room (120k points, colours, 20 classes);
``--tiny``: a U-Net of 16-channel stages (32-channel stem, the width MinkowskiEngine's twin has) on a
3k-point room and a 20k-point sweep at 10 cm. Weights are random (BatchNorm statistics set on the
input), which does not change the timing.

Executors, all on the same :class:`pcseg.deploy.PointsToLogits`: ``eager``; ``compiled``
(``torch.compile``, dynamic output shapes captured); ``exported`` (``torch.export`` program's
``module()``); ``aoti`` (AOTInductor package); ``onnxruntime`` (CPU provider, ``intra_op_num_threads``
= the thread count). Each is prepared once per case (``prepare_s``: export / compile time at the
first thread count, only the load at the others for ``exported`` and ``onnxruntime``; ``compiled`` and
``aoti`` compile per thread count, Inductor fixing its OpenMP threads then), checked against
eager (``max_abs_diff``) and timed: one warm-up, then min and median of ``--repeats`` calls in ms.
Eager lines also give ``voxelize_ms`` (the voxelization alone) to show where the time goes, and with
``--profile`` eager and exported lines add ``top_ops``: the ATen ops and compiled-kernel ranges of most
self time in one profiled call, with their share of that call's wall time (``profiled_ms``).

``me_eager``: MinkowskiEngine's eager forward of the same network with the same weights (its
MinkUNet / Res16UNet, ``benchmarks/me_checkpoint_parity.MEUNet``, loaded with pcseg's weights in
ME's layout), run as ME's point-level inference runs: per call ``floor(points / voxel_size)``
shifted to a zero minimum (pcseg's grid, so both nets see the same voxels and stride-2 alignment),
an ``ME.TensorField`` with ``UNWEIGHTED_AVERAGE`` quantization (ME's own unique + mean, pcseg's
``reduce="mean"``), ``.sparse()`` (a new coordinate manager, so ME builds its coordinate and kernel
maps in the call), the network, and ``.slice(field).F`` back to the points. Its logits must agree
with pcseg's eager logits to ``ME_RTOL`` × max(1, max |logit|) before it is timed; beyond that the
line carries ``max_abs_diff`` and an ``error``, no times. ME's GEMMs run on OpenBLAS, whose pool
``torch.set_num_threads`` does not reach: it is set to the thread count too (``openblas_threads``).
Where MinkowskiEngine is not importable (pcseg's own venv) the line says ``skipped`` with the reason
(benchmarks/peers.md builds the peers' venv).

No spconv executor: the repo has no spconv version of these U-Nets (``benchmarks/bench_sparse.py``
compares spconv on single convolutions). A twin needs its own port (``SubMConv3d`` /
``SparseConv3d`` k2 s2 / ``SparseInverseConv3d`` with shared ``indice_key``, concatenation through
``replace_feature``), a converter for spconv's strided and inverse kernel layouts and a parity test
of its own; and spconv 2.3.8's CPU scatter races at more than one thread (benchmarks/peers.md).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcseg.data.synthetic import generate_room, generate_street, lidar_sweep  # noqa: E402
from pcseg.deploy import PointsToLogits, export_program, save_aoti, save_onnx  # noqa: E402
from pcseg.models import MinkUNet, build_model  # noqa: E402
from pcseg.models.convert import me_kernel_to_pcseg, me_key_to_pcseg  # noqa: E402
from pcseg.sparse import voxelize  # noqa: E402
from pcseg.sparse.kernels import TRACED_CONVS, traced_conv  # noqa: E402

EXECUTORS = ("eager", "compiled", "exported", "aoti", "onnxruntime", "me_eager")
TRACED_EXECUTORS = ("compiled", "exported", "aoti", "onnxruntime")
"""Executors that run the traced form of the convolutions (``--traced-conv``)."""
ME_RTOL = 1e-4  # me_eager vs eager, relative to max(1, max |logit|): ~1e-6 measured, a wrong kernel layout ~1


class Skipped(Exception):
    """An executor whose library is not installed here: its line says ``skipped`` with the reason."""


def emit(**record: Any) -> None:
    print(json.dumps(record), flush=True)


def sweep_input(azimuth_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    sweep = lidar_sweep(generate_street(0, length=60.0), 20.0, np.random.default_rng(0), azimuth_steps)
    return torch.from_numpy(sweep.points), torch.from_numpy(sweep.remission[:, None].copy())


def room_input(num_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    scene = generate_room(0, num_points=num_points)
    return torch.from_numpy(scene.coord), torch.from_numpy(scene.color.astype(np.float32) / 127.5 - 1)


def cases(tiny: bool) -> list[tuple[str, Callable[[], nn.Module], float, tuple[torch.Tensor, torch.Tensor]]]:
    """(name, network builder, voxel size, (points, feats)) per case."""
    if tiny:
        def small(c_in: int) -> Callable[[], nn.Module]:
            return lambda: MinkUNet(c_in, 4, 3, (16,) * 8, (1,) * 8, stem_kernel=3)
        return [("tiny_sweep", small(1), 0.1, sweep_input(320)), ("tiny_room", small(3), 0.1, room_input(3000))]
    return [
        ("sweep64_minkunet18a_5cm", lambda: build_model({"name": "MinkUNet18A", "in_channels": 1, "num_classes": 19}),
         0.05, sweep_input(2048)),
        ("room_res16unet34c_2cm", lambda: build_model({"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20}),
         0.02, room_input(120_000)),
    ]


PROFILED = ("eager", "exported")
"""Executors that run ATen ops one by one from Python, which ``torch.profiler`` can attribute."""


def top_ops(fn: Callable[[], Any], count: int = 8) -> tuple[float, list[list]]:
    """One call of ``fn`` under ``torch.profiler``: its wall time (ms) and the ``count`` ATen ops and
    compiled-kernel ranges (``pcseg::…``) of most self CPU time, each ``[name, self ms, share of the
    call's wall time]``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = (time.perf_counter() - start) * 1e3
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "pcseg::"))]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return round(wall, 1), [[e.key, round(e.self_cpu_time_total / 1e3, 1), round(e.self_cpu_time_total / 1e3 / wall, 3)]
                            for e in events[:count]]


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()                                                                  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def me_state_dict(model: MinkUNet, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """``model``'s weights under MinkowskiEngine's names and layouts: the inverse of
    :func:`pcseg.models.convert.convert_minkowski_state_dict`. like: the ME network's state dict
    (names and shapes). Kernels go from pcseg's (K, C_in, C_out) offset order (last axis fastest) to
    ME's (first axis fastest): ``me_kernel_to_pcseg`` with the kernel size reversed."""
    own = model.state_dict()
    state = {}
    for key, target in like.items():
        name = me_key_to_pcseg(key)
        value = own[name]
        if name == "head.module.weight":
            value = value.t()
        elif value.dim() == 3:  # a sparse convolution kernel
            value = me_kernel_to_pcseg(value, model.get_submodule(name.removesuffix(".weight")).kernel_size[::-1])
        state[key] = value.reshape(target.shape)
    return state


def set_openblas_threads(threads: int) -> int | None:
    """Size the OpenBLAS pool MinkowskiEngine's GEMMs run on (``torch.set_num_threads`` does not reach
    it); returns the count now in effect, None where no OpenBLAS library can be loaded."""
    try:
        openblas = ctypes.CDLL("libopenblas.so.0")  # the copy ME's backend already loaded
    except OSError:
        return None
    openblas.openblas_set_num_threads(threads)
    return openblas.openblas_get_num_threads()


def me_pipeline(module: PointsToLogits) -> Callable[[Tensor, Tensor], Tensor]:
    """MinkowskiEngine's points → logits for ``module``'s network and weights (module docstring);
    raises :class:`Skipped` where MinkowskiEngine is not importable."""
    try:
        from benchmarks.me_checkpoint_parity import ME, MEUNet  # applies ME 0.5.4's collections shim
    except ImportError as err:
        raise Skipped(f"MinkowskiEngine not importable ({err}); see benchmarks/peers.md") from None
    model = module.model
    stages = (*model.enc, *model.dec)
    net = MEUNet(model.in_channels, model.num_classes, tuple(len(s) for s in stages),
                 tuple(s[-1].conv2.out_channels for s in stages), model.stem[0].kernel_size[0])
    net.load_state_dict(me_state_dict(model, net.state_dict()))
    net.eval()
    voxel_size = torch.tensor(module.voxel_size)

    def run(points: Tensor, feats: Tensor) -> Tensor:
        grid = torch.floor(points / voxel_size.to(points.dtype))
        field = ME.TensorField(feats, ME.utils.batched_coordinates([grid - grid.amin(0)], dtype=points.dtype),
                               quantization_mode=ME.SparseTensorQuantizationMode.UNWEIGHTED_AVERAGE)
        return net(field.sparse()).slice(field).F
    return run


def check_me(diff: float, ref: Tensor) -> None:
    """Refuse to time ``me_eager`` whose logits differ from eager's ``ref`` beyond ``ME_RTOL``."""
    tolerance = ME_RTOL * max(1.0, float(ref.abs().max()))
    if not diff <= tolerance:
        raise RuntimeError(f"MinkowskiEngine's logits disagree with pcseg eager: max_abs_diff {diff:.3g} > "
                           f"{tolerance:.3g}; not timed")


def prepare(executor: str, module: PointsToLogits, work: Path, threads: int, built: dict[str, Any],
            traced: str) -> Callable:
    """A callable (points, feats) -> logits for the executor at ``threads``; ``traced``: the traced
    form of the convolutions (:func:`pcseg.sparse.kernels.traced_conv`).

    built: this case's artefacts so far. The exported program and the ONNX file are made once per
    case and reused at every thread count (``prepare_s`` of a later count is then only the load;
    ONNX Runtime's thread count is a session option). Inductor fixes the OpenMP thread count of its
    kernels when it compiles, so ``compiled`` and ``aoti`` are compiled per thread count.
    """
    if executor == "eager":
        return module
    if executor == "me_eager":
        return me_pipeline(module)
    if executor == "compiled":
        torch._dynamo.reset()  # a fresh compile at this thread count
        torch._dynamo.config.capture_dynamic_output_shape_ops = True
        torch._dynamo.config.capture_scalar_outputs = True
        compiled = torch.compile(module, fullgraph=True, dynamic=True)

        def run(points: Tensor, feats: Tensor) -> Tensor:
            with traced_conv(traced):
                return compiled(points, feats)
        return run
    if "program" not in built:
        built["program"] = export_program(module, conv=traced)
    program = built["program"]
    if executor == "exported":
        return program.module()
    if executor == "aoti":
        return torch._inductor.aoti_load_package(str(save_aoti(program, work / f"model_aoti_{threads}t.pt2")))
    import onnxruntime as ort

    if "onnx" not in built:
        built["onnx"] = save_onnx(program, work / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(built["onnx"]), options, providers=["CPUExecutionProvider"])
    return lambda p, f: torch.from_numpy(session.run(None, {"points": p.numpy(), "feats": f.numpy()})[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS))
    parser.add_argument("--tiny", action="store_true", help="small networks and clouds: a smoke run")
    parser.add_argument("--cases", nargs="+", help="run only these cases (names as in the output lines)")
    parser.add_argument("--traced-conv", choices=TRACED_CONVS, default="pairs",
                        help="traced form of the convolutions of compiled, exported, aoti and onnxruntime")
    parser.add_argument("--profile", action="store_true",
                        help=f"add top_ops (where the time goes) for {', '.join(PROFILED)}, after the timing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        chosen = cases(args.tiny)
        unknown = set(args.cases or ()) - {c[0] for c in chosen}
        if unknown:
            parser.error(f"--cases: unknown {', '.join(sorted(unknown))}; known: {', '.join(c[0] for c in chosen)}")
        for case, build, voxel_size, (points, feats) in chosen:
            if args.cases and case not in args.cases:
                continue
            torch.manual_seed(0)
            module = PointsToLogits(build(), voxel_size)
            for m in module.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.momentum = None
            with torch.no_grad():
                module.train()(points, feats)
                module.eval()
                ref = module(points, feats)
            voxels = len(voxelize(points, voxel_size).coords)
            built: dict[str, Any] = {}
            work = Path(tmp) / case
            work.mkdir()
            for executor in args.executors:
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    record = dict(case=case, executor=executor, threads=threads, points=len(points), voxels=voxels,
                                  voxel_size=voxel_size, repeats=args.repeats)
                    if executor in TRACED_EXECUTORS:
                        record["traced_conv"] = args.traced_conv
                    try:
                        start = time.perf_counter()
                        run = prepare(executor, module, work, threads, built, args.traced_conv)
                        if executor == "me_eager":  # prepare imported ME, which loaded OpenBLAS
                            record["openblas_threads"] = set_openblas_threads(threads)
                        with torch.no_grad():
                            out = run(points, feats)
                            record["prepare_s"] = round(time.perf_counter() - start, 2)
                            record["max_abs_diff"] = float((out - ref).abs().max())
                            if executor == "me_eager":
                                check_me(record["max_abs_diff"], ref)
                            record["min_ms"], record["median_ms"] = timed(lambda: run(points, feats), args.repeats)
                            if executor == "eager":
                                record["voxelize_ms"] = timed(lambda: voxelize(points, voxel_size, feats),
                                                              args.repeats)[0]
                            if args.profile and executor in PROFILED:
                                record["profiled_ms"], record["top_ops"] = top_ops(lambda: run(points, feats))
                    except Skipped as why:
                        record["skipped"] = str(why)
                    except Exception as err:  # an executor that fails is a result, not the end of the run
                        record["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                    emit(**record)


if __name__ == "__main__":
    main()
