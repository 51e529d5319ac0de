"""Export a trained backbone as one program: raw points (N, D) + features (N, C) in, logits (N, classes) out.

    pcseg-export --config configs/semantickitti/supervised.yaml \\
        --checkpoint work_dirs/semantickitti/supervised/model_best.pth --format {pt2,aoti,onnx} \\
        [--out PATH] [--voxel-size 0.05] [--traced-conv {pairs,table,kernel}] [key=value …]

(``python tools/export.py …`` from a checkout is the same.)

pt2: torch.export archive (``torch.export.load(PATH).module()(points, feats)``, no pcseg needed);
aoti: AOTInductor package for this machine (C++: examples/aoti_cpp; takes minutes to compile);
onnx: ONNX graph for ONNX Runtime (needs ``pip install pcseg[deploy]``).
--traced-conv kernel (pt2, aoti): one call of pcseg's compiled CPU kernel per convolution; the
process that runs the program must load the kernel library first (the tool prints its path).
The voxel size is fixed in the program: ``data.kwargs.voxel_size`` of the config, else the dataset's
default, else --voxel-size. Features are what the config's val transforms give (e.g. normalised colours).
"""
from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from pcseg.data.registry import DATASETS
from pcseg.deploy import PointsToLogits, export_program, save_aoti, save_onnx, save_pt2
from pcseg.engine.build import config_section, load_weights
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import Config, ConfigKeyError, load_config, thaw
from pcseg.models import build_model
from pcseg.sparse.kernels import TRACED_CONVS
from pcseg.sparse.kernels import cpu as cpu_kernels

SAVERS = {"pt2": (save_pt2, ".pt2"), "aoti": (save_aoti, "_aoti.pt2"), "onnx": (save_onnx, ".onnx")}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (``sys.argv[1:]`` when ``argv`` is None)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config the checkpoint was trained with")
    parser.add_argument("--checkpoint", required=True, help="model_best.pth / model_last.pth written by tools/train.py")
    parser.add_argument("--format", required=True, choices=sorted(SAVERS), help="what to write")
    parser.add_argument("--out", help="output file (default: next to the checkpoint, <stem>.pt2 / _aoti.pt2 / .onnx)")
    parser.add_argument("--voxel-size", type=float, help="voxel edge when the config and dataset give none")
    parser.add_argument("--traced-conv", choices=TRACED_CONVS, default="pairs",
                        help="convolutions over present pairs (default, runs everywhere), through the full "
                             "neighbour table (aoti compiles ~3x faster than pairs) or as pcseg's compiled CPU "
                             "kernel (pt2 / aoti, fastest; the runtime loads pcseg's kernel library)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.num_classes=19")
    args = parser.parse_args(argv)
    if args.format == "onnx" and args.traced_conv == "kernel":
        parser.error("--traced-conv kernel calls pcseg's compiled kernels, which ONNX cannot express; "
                     "use --traced-conv pairs for onnx")
    return args


def config_voxel_size(cfg: Config, given: Optional[float]) -> float | list[float]:
    """--voxel-size, else ``data.kwargs.voxel_size``, else the default of the dataset's builder."""
    if given is not None:
        return given
    if "voxel_size" in cfg.data.kwargs:
        return thaw(cfg.data.kwargs)["voxel_size"]
    builder = DATASETS[cfg.data.name]
    param = inspect.signature(builder).parameters.get("voxel_size")
    if param is None or param.default is inspect.Parameter.empty:
        raise ConfigKeyError(f"data.kwargs.voxel_size: dataset {cfg.data.name} has no default voxel size; "
                             f"pass --voxel-size")
    return param.default


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Build the config's model, load the checkpoint, export it in ``--format``; returns the written path."""
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        spec = thaw(cfg.model)
        spec.pop("init_from", None)
        with config_section("model"):
            model = build_model(spec)
        load_weights(model, args.checkpoint, torch.device("cpu"))
        module = PointsToLogits(model, config_voxel_size(cfg, args.voxel_size))
        save, suffix = SAVERS[args.format]
        out = Path(args.out) if args.out else Path(args.checkpoint).with_name(Path(args.checkpoint).stem + suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        program = export_program(module, conv=args.traced_conv)
        save(program, out)
        print(f"wrote {out} ({args.format}): points (N, {module.dim}) float32 + feats (N, {module.in_channels}) "
              f"float32 -> logits (N, {cfg.model['num_classes']}), N >= 1, voxel size {list(module.voxel_size)}, "
              f"{time.perf_counter() - start:.0f} s")
        if args.traced_conv == "kernel":
            print(f"it calls pcseg's compiled CPU kernels: load {cpu_kernels.library_path()} before running it "
                  f"(torch.ops.load_library in Python, aoti_run --ops in C++)")
        return out


if __name__ == "__main__":
    main()
