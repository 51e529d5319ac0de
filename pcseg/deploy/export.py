"""Export :class:`~pcseg.deploy.PointsToLogits` as a ``torch.export`` program, an AOTInductor package
or an ONNX graph, each with a dynamic number of points.

Every format has the same signature: ``points`` (N, D) float32 and ``feats`` (N, C_in) float32 in,
``logits`` (N, classes) float32 out, N dynamic (at least 1), the voxel size fixed at export.

- ``.pt2`` (:func:`save_pt2`): ``torch.export.load(path).module()(points, feats)`` in any process
  with the same torch, without pcseg. The range checks of the sparse core are runtime assertions
  inside the program.
- AOTInductor package (:func:`save_aoti`): compiled C++ for this machine's CPU (or CUDA),
  loaded from Python with ``torch._inductor.aoti_load_package`` or from C++ libtorch with
  ``torch::inductor::AOTIModelPackageLoader`` (``examples/aoti_cpp/``). Compiling takes minutes.
- ONNX (:func:`save_onnx`): the dynamo exporter, for ONNX Runtime and other ONNX executors. The
  kernel-map look-up is a sort-merge (ONNX has no ``searchsorted``); :func:`onnx_op_types` lists
  the operators a graph uses. ONNX has no assertions, so out-of-range coordinates are not caught.

A program exported with ``conv="kernel"`` calls pcseg's compiled CPU kernels once per convolution
(``pcseg::conv_forward``) and per kernel map (``pcseg::lookup_table``) instead of per-offset torch
ops and a sort-merge look-up: load the kernel library
(:func:`pcseg.sparse.kernels.cpu.library_path`) before running it — ``torch.ops.load_library`` before
``torch.export.load``, ``aoti_run --ops`` in C++ — and export ONNX from another form.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor
from torch.export import Dim, ExportedProgram

from pcseg.sparse.kernels import traced_conv

from .pipeline import PointsToLogits

__all__ = ["ONNX_OPS", "example_inputs", "export_program", "save_pt2", "save_aoti", "save_onnx", "pcseg_ops",
           "onnx_op_types"]

#: The ONNX operators a MinkUNet-family graph uses (opset 18, standard domain): key packing (BitShift,
#: BitwiseOr/And), unique and the sort-merge look-up (TopK as the sort, CumSum, NonZero,
#: ScatterElements/ScatterND, Gather/GatherND), and the convolutions as gathers and matrix products.
#: (Unoptimised graph, see :func:`save_onnx`; ONNX Runtime fuses and folds it when loading.)
ONNX_OPS = (
    "Add", "BatchNormalization", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "Cast", "CastLike",
    "Concat", "Constant", "ConstantOfShape", "Identity",
    "CumSum", "Div", "Equal", "Expand", "Floor", "Gather", "GatherND", "Gemm", "GreaterOrEqual", "Less",
    "MatMul", "Max", "Mod", "Mul", "NonZero", "Not", "Or", "Range", "ReduceMin", "Relu", "Reshape",
    "ScatterElements", "ScatterND", "Shape", "Slice", "Squeeze", "Sub", "TopK", "Transpose", "Unsqueeze", "Where",
)


def example_inputs(module: PointsToLogits, num_points: int = 2048, extent: float = 64.0,
                   seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random example inputs for tracing: (num_points, D) float32 points uniform in a cube of
    ``extent`` voxels per side and (num_points, C_in) float32 features in [-1, 1].

    Tracing only needs shapes and dtypes; the program then runs on any number of points.
    """
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor(module.voxel_size, dtype=torch.float32)
    points = torch.rand((num_points, module.dim), generator=g) * extent * size
    feats = torch.rand((num_points, module.in_channels), generator=g) * 2 - 1
    return points, feats


def export_program(module: PointsToLogits, points: Tensor | None = None,
                   feats: Tensor | None = None, conv: str = "pairs") -> ExportedProgram:
    """``torch.export`` the whole pipeline (voxelize, kernel maps, network, slice back to the points).

    module: switched to eval mode (BatchNorm uses its running statistics). points, feats: example
    inputs, (N, D) and (N, C_in) float32 (:func:`example_inputs` when omitted). The number of points
    is a dynamic dimension ``num_points >= 1``; every later size (voxels per stride) is data-dependent.
    conv: the traced form of the convolutions (:func:`pcseg.sparse.kernels.traced_conv`):
    ``"pairs"`` multiplies only present neighbours; ``"table"`` multiplies a zero row for each
    missing one but compiles about 3× faster with AOTInductor; ``"kernel"`` is one call of pcseg's
    compiled CPU kernels per convolution and per kernel map (float32 CPU; the runtime must load the
    kernel library).
    """
    module.eval()
    if points is None or feats is None:
        points, feats = example_inputs(module)
    num_points = Dim("num_points", min=1)
    with torch.no_grad(), traced_conv(conv):
        return torch.export.export(module, (points, feats),
                                   dynamic_shapes={"points": {0: num_points}, "feats": {0: num_points}})


def save_pt2(program: ExportedProgram, path: str | Path) -> Path:
    """Write the program as a ``.pt2`` archive (``torch.export.save``); returns the path."""
    path = Path(path)
    torch.export.save(program, path)
    return path


def save_aoti(program: ExportedProgram, path: str | Path) -> Path:
    """Compile the program with AOTInductor into a ``.pt2`` package for the program's device.

    Load it with ``torch._inductor.aoti_load_package(path)`` or, without Python, with libtorch's
    ``torch::inductor::AOTIModelPackageLoader`` (see ``examples/aoti_cpp``). Needs a C++ compiler.
    """
    path = Path(path)
    torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


def save_onnx(program: ExportedProgram, path: str | Path) -> Path:
    """Convert the program with the dynamo ONNX exporter (opset 18+) and write ``path``.

    Inputs ``points``, ``feats``, output ``logits``, the number of points dynamic. Needs the
    ``onnx`` and ``onnxscript`` packages (``pip install pcseg[deploy]``).
    """
    path = Path(path)
    custom = pcseg_ops(program)
    if custom:
        raise ValueError(f"save_onnx: the program calls pcseg's compiled kernels ({', '.join(custom)}), which "
                         f"ONNX cannot express; export it with conv='pairs' (pcseg-export --traced-conv pairs)")
    # The exporter decomposes the program in place, which leaves its symbolic shapes unusable for a
    # later AOTInductor compile: convert an independent copy (a serialisation round trip).
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    # optimize=False: onnxscript's rewriter takes minutes on these graphs; ONNX Runtime optimises
    # the graph itself when it loads it.
    onnx_program = torch.onnx.export(torch.export.load(buffer), output_names=["logits"], dynamo=True,
                                     optimize=False, verbose=False)
    onnx_program.save(str(path))
    return path


def pcseg_ops(program: ExportedProgram) -> list[str]:
    """The pcseg ops the program calls, sorted (``["pcseg.conv_forward.default", "pcseg.lookup_table.default"]``
    for ``conv="kernel"``, none for the other forms); a process running it loads
    :func:`pcseg.sparse.kernels.cpu.library_path` first."""
    return sorted({str(n.target) for n in program.graph.nodes
                   if n.op == "call_function" and str(n.target).startswith("pcseg.")})


def onnx_op_types(path: str | Path) -> list[str]:
    """Sorted ONNX operator types used by the graph in ``path`` (needs ``onnx``)."""
    import onnx

    return sorted({node.op_type for node in onnx.load(str(path)).graph.node})
