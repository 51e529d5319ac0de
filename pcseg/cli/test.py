"""Evaluate a checkpoint on the validation split of a config; prints the per-class table and mIoU.

    python tools/test.py --config configs/s3dis/supervised.yaml --checkpoint work_dirs/s3dis/supervised/model_best.pth \
        [--save-predictions DIR] [key=value …]

--save-predictions writes DIR/<scene name>.npy: (N,) int32 predicted class per raw point.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from pcseg.engine.build import config_section, evaluate_checkpoint, setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config
from pcseg.engine.distributed import shutdown
from pcseg.engine.metrics import SegmentationMetrics, format_table
from pcseg.methods import build_method


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--checkpoint", required=True, help="model_best.pth / model_last.pth written by tools/train.py")
    parser.add_argument("--save-predictions", metavar="DIR", help="write per-scene point predictions (.npy int32)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.kwargs.root=data/s3dis")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> SegmentationMetrics:
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        runtime = setup_runtime(cfg)
        try:
            with config_section("method"):
                method = build_method(cfg.method)
            metrics, class_names = evaluate_checkpoint(cfg, method, runtime, args.checkpoint,
                                                       save_dir=args.save_predictions)
            if runtime.dist.is_main:
                print(format_table(metrics, class_names))
            return metrics
        finally:
            shutdown(runtime.dist)


if __name__ == "__main__":
    main()
