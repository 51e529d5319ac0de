"""Render a checkpoint's predictions: prediction | ground truth | errors (PNG) plus coloured PLY files.

    python tools/visualize.py --config configs/scannet/sparse_0.1pct.yaml \
        --checkpoint work_dirs/scannet/sparse_0.1pct/model_best.pth [--scenes scene0011_00 …] [--out DIR]

Evaluates the checkpoint on the config's validation split (point level), then writes
``DIR/<scene>.png``, ``DIR/<scene>_pred.ply`` and ``DIR/<scene>_gt.ply`` for the chosen scenes
(default: the first validation scene), coloured with the dataset's palette (ScanNet, S3DIS and
SemanticKITTI have their own; other data a generic one), the PNG with a legend of the classes
present. Open3D renders offscreen; without it, matplotlib does.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from pcseg.engine.build import build_dataset, config_section, evaluate_checkpoint, setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config
from pcseg.engine.distributed import shutdown
from pcseg.engine.metrics import format_table
from pcseg.engine.visualize import render_scenes
from pcseg.methods import build_method


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--scenes", nargs="*", help="validation scene names (default: the first one)")
    parser.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/vis)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.kwargs.root=data/scannet")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        out = Path(args.out) if args.out else Path(args.checkpoint).parent / "vis"
        runtime = setup_runtime(cfg)
        try:
            with config_section("method"):
                method = build_method(cfg.method)
            metrics, class_names = evaluate_checkpoint(cfg, method, runtime, args.checkpoint,
                                                       save_dir=out / "predictions")
            print(format_table(metrics, class_names))
            scenes = args.scenes or [build_dataset(cfg, cfg.data.val, train=False).scene_name(0)]
            written = render_scenes(cfg, out / "predictions", scenes, out)
            for path in written:
                print(f"wrote {path}")
            return written
        finally:
            shutdown(runtime.dist)


if __name__ == "__main__":
    main()
