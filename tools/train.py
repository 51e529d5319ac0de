"""Train a segmentation model from a YAML config.

    python tools/train.py --config configs/s3dis/supervised.yaml [--resume] [--work-dir DIR] train.epochs=3 …
    torchrun --nproc_per_node=2 tools/train.py --config … (gloo on cpu, nccl on cuda)

The work directory is --work-dir, else the config's ``work_dir``, else ``work_dirs/<config name>``.
It receives config.yaml, train.log, log.jsonl, tb/, model_last.pth and model_best.pth.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import yaml

from pcseg.engine.build import build_trainer, setup_runtime
from pcseg.engine.config import config_to_dict, exit_on_config_error, load_config
from pcseg.engine.distributed import shutdown
from pcseg.methods import build_method


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--resume", action="store_true", help="continue from <work dir>/model_last.pth")
    parser.add_argument("--work-dir", help="output directory (overrides the config's work_dir)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 data.budget=work/budget")
    return parser.parse_args(argv)


def default_work_dir(config: str) -> Path:
    """``work_dirs/<path under configs/ without .yaml>``, or ``work_dirs/<file stem>`` elsewhere."""
    path = Path(config).with_suffix("")
    parts = path.parts
    return Path("work_dirs", *parts[parts.index("configs") + 1:]) if "configs" in parts else Path("work_dirs", path.name)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    with exit_on_config_error(args.config):
        cfg = load_config(args.config, args.overrides)
    work_dir = Path(args.work_dir or cfg.work_dir or default_work_dir(args.config))
    runtime = setup_runtime(cfg)
    try:
        with exit_on_config_error(args.config):
            trainer = build_trainer(cfg, build_method(cfg.method), runtime, work_dir)
        if runtime.dist.is_main:
            with open(work_dir / "config.yaml", "w", encoding="utf-8") as fh:
                yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
        trainer.train(resume=args.resume)
    finally:
        shutdown(runtime.dist)


if __name__ == "__main__":
    main()
