"""Exported programs run by executors that are not pcseg reproduce the eager logits.

Executors: ``torch.export.load`` in a subprocess that never imports pcseg, ONNX Runtime (written by
neither torch nor pcseg: an oracle for the sparse core too), an AOTInductor package, and the C++
example of examples/aoti_cpp. Oracle: the eager :class:`PointsToLogits` on the same points.
The CI cases use a small U-Net (every MinkUNet stage, narrow widths) exported in the three traced forms
of the convolutions ("pairs": .pt2 and ONNX Runtime at 1 and 2 threads; "table": .pt2, AOTInductor
and the C++ example; "kernel", pcseg's compiled CPU kernel as an op: .pt2 with only the kernel library
loaded, AOTInductor and the C++ example with ``--ops``); MinkUNet18A, Res16UNet34C and the D=2 MinkUNet14A run every executor on
"pairs" (and .pt2 / AOTInductor on "kernel"), and the small U-Net's "table" form in ONNX Runtime, with ``pytest -m slow`` (AOTInductor
compiles take minutes on 2 cores).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_helpers import Cloud, assert_logits_match, calibrated, eager_logits, full_sweep
from pcseg.deploy import ONNX_OPS, onnx_op_types, pcseg_ops, save_aoti, save_onnx, save_pt2
from pcseg.models import MinkUNet, build_model
from pcseg.sparse.nn import SparseConv, SparseConvTranspose
from pcseg.sparse import CoordinateOverflowError
from pcseg.sparse.kernels import cpu

REPO = Path(__file__).resolve().parents[2]

# Loads a .pt2 with torch alone (and the library of pcseg's kernels if the program calls them: argv[2],
# else "") and runs it on every <name>.npz; fails if pcseg got imported.
PT2_RUNNER = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    if sys.argv[2]:
        torch.ops.load_library(sys.argv[2])
    program = torch.export.load(sys.argv[1]).module()
    for path in sys.argv[3:]:
        data = np.load(path)
        with torch.no_grad():
            out = program(torch.from_numpy(data["points"]), torch.from_numpy(data["feats"]))
        np.save(path.replace(".npz", "_logits.npy"), out.numpy())
    assert not [m for m in sys.modules if m.split(".")[0] == "pcseg"], "pcseg was imported"
""")


def tiny_unet(dim: int) -> MinkUNet:
    """Every stage of the MinkUNet layout (4 down, 4 up, skips), 16 channels: quick to export and compile."""
    torch.manual_seed(dim)
    return MinkUNet(3, 6, D=dim, planes=(16,) * 8, layers=(1,) * 8, stem_kernel=3, init_dim=16)


def registry_net(name: str, dim: int = 3):
    torch.manual_seed(0)
    return build_model({"name": name, "in_channels": 3, "num_classes": 20, "D": dim})


def run_pt2_subprocess(path: Path, clouds: list[Cloud], workdir: Path, ops: str = "") -> list[np.ndarray]:
    """Logits of the .pt2 at ``path`` on each cloud in a process without pcseg; ``ops``: a library to load first."""
    files = []
    for c in clouds:
        files.append(workdir / f"{c.name}.npz")
        np.savez(files[-1], points=c.points.numpy(), feats=c.feats.numpy())
    # -I: isolated mode, so nothing from the checkout's directory or PYTHONPATH is importable by accident
    proc = subprocess.run([sys.executable, "-I", "-c", PT2_RUNNER, str(path), ops, *map(str, files)],
                          capture_output=True, text=True, cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [np.load(str(f).replace(".npz", "_logits.npy")) for f in files]


def run_onnx(path: Path, clouds: list[Cloud], threads: int = 1) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["points", "feats"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    return [session.run(None, {"points": c.points.numpy(), "feats": c.feats.numpy()})[0] for c in clouds]


def check_all_executors(module, program, workdir: Path, clouds: list[Cloud],
                        executors: tuple[str, ...] = ("pt2", "onnxruntime", "aoti")) -> dict[str, float]:
    """The executors against eager on every cloud; returns the largest difference per executor."""
    refs = [eager_logits(module, c) for c in clouds]
    assert all(len(c.points) != 2048 for c in clouds)                   # not the export example's size
    ops = str(cpu.library_path()) if pcseg_ops(program) else ""
    results = {"pt2": run_pt2_subprocess(save_pt2(program, workdir / "model.pt2"), clouds, workdir, ops)}
    if "onnxruntime" in executors:
        pytest.importorskip("onnxscript")
        onnx_path = save_onnx(program, workdir / "model.onnx")
        assert set(onnx_op_types(onnx_path)) <= set(ONNX_OPS)
        results["onnxruntime"] = run_onnx(onnx_path, clouds)
        results["onnxruntime at 2 threads"] = run_onnx(onnx_path, clouds, threads=2)  # races would show here
    if "aoti" in executors:
        runner = torch._inductor.aoti_load_package(str(save_aoti(program, workdir / "model_aoti.pt2")))
        with torch.no_grad():
            results["aoti"] = [runner(c.points, c.feats) for c in clouds]
    worst = {}
    for who, outs in results.items():
        worst[who] = max(assert_logits_match(o, r, f"{who} on {c.name}") for o, r, c in zip(outs, refs, clouds))
    return worst


@pytest.fixture(scope="module")
def tiny3d(export_cache, clouds3d):
    return export_cache("tiny3d", lambda: calibrated(tiny_unet(3), 0.1, clouds3d[0]))


@pytest.fixture(scope="module")
def tiny3d_table(export_cache, tiny3d):
    """The same network exported with the "table" form of the convolutions (AOTInductor compiles it
    about 3x faster than the "pairs" form, whose AOTInductor run is in the slow tests)."""
    return export_cache("tiny3d_table", lambda: tiny3d[0], conv="table")


@pytest.fixture
def tiny3d_kernel(export_cache, tiny3d, cpu_kernels):
    """The same network exported with the "kernel" form: one pcseg::conv_forward op per convolution."""
    return export_cache("tiny3d_kernel", lambda: tiny3d[0], conv="kernel")


def test_tiny_unet_3d_all_executors(tiny3d, tiny3d_table, clouds3d):
    module, program, workdir = tiny3d
    check_all_executors(module, program, workdir, clouds3d, executors=("pt2", "onnxruntime"))
    module, program, workdir = tiny3d_table
    large = full_sweep()
    voxels = len(torch.unique(torch.floor(large.points / 0.1), dim=0))
    assert voxels > 32766, voxels                                       # the former AOTInductor bound
    check_all_executors(module, program, workdir, clouds3d + [large],
                        executors=("pt2", "aoti"))                      # ONNX of the table form: slow tests


def test_tiny_unet_3d_kernel_form(tiny3d_kernel, clouds3d, tmp_path):
    """The kernel form: .pt2 (with the kernel library loaded, pcseg not imported) and AOTInductor, on
    clouds and a full sweep; one op per convolution and nothing per offset, the maps by the compiled
    merge join (no sort-merge look-up); ONNX refuses it by name."""
    module, program, workdir = tiny3d_kernel
    convs = sum(isinstance(m, (SparseConv, SparseConvTranspose)) for m in module.modules())
    calls = [n for n in program.graph.nodes if n.op == "call_function"]
    assert pcseg_ops(program) == ["pcseg.conv_forward.default", "pcseg.lookup_table.default"]
    assert sum(str(n.target) == "pcseg.conv_forward.default" for n in calls) == convs > 20
    assert not [n for n in calls if n.target in (torch.ops.aten.index_add.default, torch.ops.aten.mm.default)]
    eager_maps = []                                  # the kernel maps an eager forward builds, one look-up each
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu, "lookup_table", lambda *a: eager_maps.append(1) or torch.ops.pcseg.lookup_table(*a))
        eager_logits(module, clouds3d[0])
    assert sum(str(n.target) == "pcseg.lookup_table.default" for n in calls) == len(eager_maps) > 5
    check_all_executors(module, program, workdir, clouds3d + [full_sweep()], executors=("pt2", "aoti"))
    with pytest.raises(ValueError, match=r"calls pcseg's compiled kernels \(pcseg.conv_forward.default, pcseg.lookup_table.default\), which ONNX"):
        save_onnx(program, tmp_path / "kernel.onnx")


def test_tiny_unet_2d_pt2(export_cache, clouds2d):
    """D=2 in CI through the .pt2 program; ONNX Runtime and AOTInductor in the slow D=2 case below."""
    module, program, workdir = export_cache("tiny2d", lambda: calibrated(tiny_unet(2), 0.1, clouds2d[0]))
    check_all_executors(module, program, workdir, clouds2d, executors=("pt2",))


def test_program_runs_on_one_point_and_asserts_ranges(tiny3d):
    """The dynamic size holds down to N = 1; the traced range and NaN checks raise inside the program."""
    module, program, _ = tiny3d
    run = program.module()
    one = (torch.tensor([[0.3, 0.2, 0.1]]), torch.zeros(1, 3))
    with torch.no_grad():
        assert_logits_match(run(*one), eager_logits(module, Cloud("one", *one)), "pt2 on one point")
        far = (torch.tensor([[0.0, 0.0, 0.0], [1e5, 0.0, 0.0]]), torch.zeros(2, 3))    # 10^6 voxels: no key
        with pytest.raises(CoordinateOverflowError, match="axis 0 spans"):
            module(*far)
        with pytest.raises(RuntimeError, match="CoordinateOverflowError"):
            run(*far)
        nan = (torch.tensor([[0.0, float("nan"), 0.0]]), torch.zeros(1, 3))
        with pytest.raises(RuntimeError, match="NaN or inf"):
            run(*nan)


def _cxx_toolchain_missing() -> str:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    return f"no {' or '.join(missing)} on PATH to build examples/aoti_cpp" if missing else ""


@pytest.fixture(scope="module")
def aoti_run(tmp_path_factory) -> Path:
    """examples/aoti_cpp built with CMake against this torch (skips without cmake / c++)."""
    if _cxx_toolchain_missing():
        pytest.skip(_cxx_toolchain_missing())
    build = tmp_path_factory.mktemp("aoti_cpp_build")
    prefix = torch.utils.cmake_prefix_path
    for cmd in (["cmake", "-S", str(REPO / "examples" / "aoti_cpp"), "-B", str(build), f"-DCMAKE_PREFIX_PATH={prefix}"],
                ["cmake", "--build", str(build)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return build / "aoti_run"


@pytest.mark.parametrize("form", ["table", "kernel"])
def test_cpp_example_runs_the_aoti_package(form, aoti_run, request, clouds3d, tmp_path):
    """The C++ runner on a KITTI-style .bin: a table-form package as it is, a kernel-form package
    with ``--ops`` (pcseg's kernel library) and a one-line error without it."""
    module, program, workdir = request.getfixturevalue(f"tiny3d_{form}")
    package = workdir / "model_aoti.pt2"
    if not package.exists():
        save_aoti(program, package)
    ops = ["--ops", str(cpu.library_path())] if form == "kernel" else []
    cloud = clouds3d[1]
    points_bin, logits_bin = tmp_path / "sweep.bin", tmp_path / "logits.bin"
    torch.cat([cloud.points, cloud.feats], 1).numpy().astype(np.float32).tofile(points_bin)
    proc = subprocess.run([str(aoti_run), *ops, str(package), str(points_bin), "3", "3", str(logits_bin)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref = eager_logits(module, cloud)
    logits = np.fromfile(logits_bin, dtype=np.float32).reshape(ref.shape)
    assert_logits_match(logits, ref, f"C++ AOTI runner, {form} form")
    lines = proc.stdout.split("\n")
    assert lines[0] == f"points {ref.shape[0]} classes {ref.shape[1]}"
    counts = np.bincount(ref.argmax(1).numpy(), minlength=ref.shape[1])
    assert [int(l.split()[2]) for l in lines[1:1 + ref.shape[1]]] == counts.tolist()
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 10)
    proc = subprocess.run([str(aoti_run), *ops, str(package), str(bad), "3", "3"], capture_output=True, text=True)
    assert proc.returncode == 1 and "is not a positive multiple of 6 float32 values" in proc.stderr
    if form == "kernel":
        proc = subprocess.run([str(aoti_run), str(package), str(points_bin), "3", "3"], capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert proc.stderr.startswith(f"error: {package}: Could not find schema for pcseg::")
        proc = subprocess.run([str(aoti_run), "--ops", str(tmp_path / "missing.so"), str(package), str(points_bin),
                               "3", "3"], capture_output=True, text=True)
        assert proc.returncode == 1 and proc.stderr.startswith(f"error: --ops {tmp_path / 'missing.so'}: ")


@pytest.mark.slow
@pytest.mark.parametrize("name,voxel_size", [("MinkUNet18A", 0.05), ("Res16UNet34C", 0.05)])
def test_registry_networks_3d_all_executors(name, voxel_size, export_cache, clouds3d):
    module, program, workdir = export_cache(name, lambda: calibrated(registry_net(name), voxel_size, clouds3d[0]))
    check_all_executors(module, program, workdir, clouds3d)


@pytest.mark.slow
@pytest.mark.parametrize("name,voxel_size", [("MinkUNet18A", 0.05), ("Res16UNet34C", 0.05)])
def test_registry_networks_3d_kernel_form(name, voxel_size, export_cache, clouds3d, cpu_kernels):
    """The registry networks in the kernel form: .pt2 (library only) and AOTInductor."""
    module = export_cache(name, lambda: calibrated(registry_net(name), voxel_size, clouds3d[0]))[0]
    _, program, workdir = export_cache(f"{name}_kernel", lambda: module, conv="kernel")
    check_all_executors(module, program, workdir, clouds3d, executors=("pt2", "aoti"))


@pytest.mark.slow
def test_minkunet14a_2d_all_executors(export_cache, clouds2d):
    module, program, workdir = export_cache("MinkUNet14A_2d",
                                            lambda: calibrated(registry_net("MinkUNet14A", 2), 0.05, clouds2d[0]))
    check_all_executors(module, program, workdir, clouds2d)


@pytest.mark.slow
def test_tiny_unet_3d_table_form_in_onnx_runtime(tiny3d_table, clouds3d):
    module, program, workdir = tiny3d_table
    check_all_executors(module, program, workdir, clouds3d, executors=("pt2", "onnxruntime"))
