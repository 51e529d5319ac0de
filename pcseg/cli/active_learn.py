"""HPAL active learning: train, select, label, repeat — resumable round by round.

    pcseg-active-learn --config configs/s3dis/hpal_0.07pct.yaml [--work-dir DIR] [--resume] \
        [active.rounds=5 active.strategy=margin active.warm_start=true … other dotted overrides]

The protocol is the config's ``active:`` section (rounds, total_budget, initial_fraction, strategy,
warm_start, selection: grids, weights, radius, max_cosine, candidate_factor); the rounds, their
folders and what is reused on --resume: :mod:`pcseg.methods.hpal.rounds`. The work directory is
--work-dir, else the config's ``work_dir``, else ``work_dirs/<config name>``. Single process only.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

from pcseg.engine.build import setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config, work_dir_of
from pcseg.engine.distributed import shutdown
from pcseg.methods.hpal.rounds import protocol, run_rounds


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config with an active: section (method HPAL or other)")
    parser.add_argument("--work-dir", help="output directory (default: the config's work_dir or work_dirs/<name>)")
    parser.add_argument("--resume", action="store_true", help="reuse finished rounds, continue the interrupted one")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. active.rounds=3 train.epochs=3")
    return parser.parse_intermixed_args(argv)  # overrides may come before and after the options


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    """Run (or continue) every round; returns each round's metrics record."""
    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        protocol(cfg)  # a config unfit for active learning fails before the process group starts
        runtime = setup_runtime(cfg)
        try:
            return run_rounds(cfg, runtime, work_dir_of(args.config, cfg, args.work_dir), resume=args.resume)
        finally:
            shutdown(runtime.dist)


if __name__ == "__main__":
    main()
