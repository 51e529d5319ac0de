"""Pre-train a 3D backbone with SLidR, then export it for fine-tuning.

    pcseg-pretrain-slidr --config configs/semantickitti/slidr_pretrain.yaml [--resume] [--work-dir DIR] …
    torchrun --nproc_per_node=2 tools/pretrain_slidr.py --config …
    pcseg-train --config configs/semantickitti/slidr_finetune_1pct.yaml model.init_from=DIR/backbone.pth

The config's method must be ``SLidR``. The stages (pre-training, export of ``<work dir>/backbone.pth``)
and what --resume reuses: :mod:`pcseg.methods.slidr.pipeline`. The work directory is --work-dir,
else the config's ``work_dir``, else ``work_dirs/<config name>``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from pcseg.engine.build import setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config, work_dir_of
from pcseg.engine.distributed import shutdown
from pcseg.methods.slidr.pipeline import pretrain


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config with method SLidR")
    parser.add_argument("--resume", action="store_true", help="continue (or reuse) the stages in the work directory")
    parser.add_argument("--work-dir", help="output directory (overrides the config's work_dir)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after the options


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Pre-train, export and return the path of ``backbone.pth``."""
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        runtime = setup_runtime(cfg)
        try:
            out = pretrain(cfg, runtime, work_dir_of(args.config, cfg, args.work_dir), resume=args.resume)
        finally:
            shutdown(runtime.dist)
        if runtime.dist.is_main:
            print(f"backbone written to {out}")
        return out


if __name__ == "__main__":
    main()
