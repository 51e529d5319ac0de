"""Train a segmentation model from a YAML config.

    pcseg-train --config configs/s3dis/supervised.yaml [--resume [--allow-changed KEYS]] [--work-dir DIR] \
        train.epochs=3 …
    torchrun --nproc_per_node=2 tools/train.py --config … (gloo on cpu, nccl on cuda; or python tools/train.py …)

The work directory is --work-dir, else the config's ``work_dir``, else ``work_dirs/<config name>``.
It receives config.yaml, train.log, log.jsonl, tb/, model_last.pth and model_best.pth.

--resume continues with the config the run was started with: a config (file or overrides) that
differs from ``<work dir>/config.yaml`` is refused with the changed keys listed, and nothing is
written, unless --allow-changed names them (dotted keys or sections, comma-separated, e.g.
``--allow-changed train.lr,train.log_period``); the accepted changes are logged and take effect.
Mistakes in the config, data or checkpoints end with one ``error: …`` line (exit status 2).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from pcseg.engine.build import build_trainer, config_section, setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import check_resume_config, load_config, save_config, work_dir_of
from pcseg.engine.distributed import shutdown
from pcseg.methods import build_method


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--resume", action="store_true", help="continue from <work dir>/model_last.pth")
    parser.add_argument("--allow-changed", default="", metavar="KEYS",
                        help="with --resume: comma-separated config keys that may differ from <work dir>/config.yaml")
    parser.add_argument("--work-dir", help="output directory (overrides the config's work_dir)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 data.budget=work/budget")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        work_dir = work_dir_of(args.config, cfg, args.work_dir)
        saved = work_dir / "config.yaml"
        changed = {}
        if args.resume and saved.is_file():
            changed = check_resume_config(saved, cfg, [k.strip() for k in args.allow_changed.split(",") if k.strip()])
        runtime = setup_runtime(cfg)
        try:
            with config_section("method"):
                method = build_method(cfg.method)
            trainer = build_trainer(cfg, method, runtime, work_dir)
            for key, (old, new) in changed.items():
                trainer.logger.warning("resume: %s changed from %r to %r (--allow-changed)", key, old, new)
            if runtime.dist.is_main:
                save_config(cfg, saved)
            trainer.train(resume=args.resume)
        finally:
            shutdown(runtime.dist)


if __name__ == "__main__":
    main()
