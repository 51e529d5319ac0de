"""HPAL active-learning experiment: HPAL vs plain margin vs random selection at the same final budget.

    python benchmarks/hpal_active_learning.py [--out work_dirs/hpal_exp] [--seeds 0 1 2] [--rounds 5] \
        [--total-budget 0.002] [--epochs 20] [--jobs 2] [dotted overrides for every run …]

Steps (each skipped when its output exists, so an interrupted run continues where it stopped):
1. synthetic S3DIS-format rooms (``pcseg.data.synthetic.make_s3dis``) under ``OUT/data``: the last
   quarter of the rooms (at least one) in ``Area_5`` (validation), the others in ``Area_1``;
2. ``tools/active_learn.py --resume`` on ``--config`` (default ``configs/s3dis/hpal_0.07pct.yaml``,
   the HPAL mean-teacher training) for every (strategy, seed), ``--jobs`` processes at a time with
   one thread each, into ``OUT/runs/<strategy>/seed<seed>``: the same round-0 random budget
   for every strategy of a seed, then ``hpal`` / ``margin`` / ``random`` selection per round, each
   round trained from scratch or, with ``--warm-start``, from the previous round's model;
3. each round's point-level val mIoU (``round_k/metrics.json``) → ``OUT/results.json`` and a
   markdown table of mean ± sample std over the seeds per strategy and round on stdout.

The smoke version: ``--scenes 2 --points 8000 --epochs 1 --rounds 2 --seeds 0 --total-budget 0.02``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from _experiment import mean_std_cell, run_parallel, run_tool, save_summary

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = ("hpal", "margin", "random")


@dataclass(frozen=True)
class Run:
    strategy: str
    seed: int
    work_dir: Path

    def metrics(self, k: int) -> dict | None:
        """Round ``k``'s metrics record, None if the round has not finished."""
        path = self.work_dir / f"round_{k}" / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/hpal_exp"))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "s3dis" / "hpal_0.07pct.yaml")
    parser.add_argument("--scenes", type=int, default=16, help="rooms written; the last quarter is the val split")
    parser.add_argument("--points", type=int, default=50_000, help="points per room")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--total-budget", type=float, default=0.002, help="labelled fraction after the last round")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="round-0 draw and training seeds")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per round")
    parser.add_argument("--model", default="MinkUNet14A")
    parser.add_argument("--voxel-size", type=float, default=0.05)
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (one thread each)")
    parser.add_argument("--warm-start", action="store_true",
                        help="rounds after the first continue from the previous round's model (tools/active_learn.py)")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.lr=0.02")
    return parser.parse_args(argv)


def make_data(out: Path, scenes: int, points: int) -> Path:
    from pcseg.data.synthetic import make_s3dis

    root = out / "data"
    if not (root / "Area_5").is_dir():
        val = max(1, math.ceil(scenes / 4))
        make_s3dis(root, scenes, seed=0, num_points=points, areas=(1,) * (scenes - val) + (5,) * val)
    return root


def overrides(args: argparse.Namespace, root: Path, seed: int) -> list[str]:
    return [f"data.kwargs.root={root}", f"data.kwargs.voxel_size={args.voxel_size}", f"seed={seed}",
            f"model.name={args.model}", f"train.epochs={args.epochs}", "eval.period=0",
            "data.num_workers=0", *args.overrides]


def active_learn(args: argparse.Namespace, root: Path, run: Run) -> None:
    """Run (or continue) ``tools/active_learn.py`` for ``run`` with one thread."""
    seconds = run_tool("active_learn.py", ["--config", str(args.config), "--rounds", str(args.rounds),
                                           "--total-budget", str(args.total_budget), "--strategy", run.strategy,
                                           "--resume", *(["--warm-start"] if args.warm_start else []),
                                           *overrides(args, root, run.seed)], run.work_dir, append=True)
    last = run.metrics(args.rounds - 1)
    print(f"{run.strategy:7s} seed {run.seed}: final mIoU {100 * last['miou']:.2f} in {seconds:.0f} s", flush=True)


def table(args: argparse.Namespace, runs: list[Run]) -> tuple[str, dict]:
    """Markdown table: per strategy and round, mean ± sample std of the val mIoU (%) over seeds."""
    results: dict = {}
    for run in runs:
        results.setdefault(run.strategy, {})[run.seed] = [run.metrics(k) for k in range(args.rounds)]
    labelled = [results[args.strategies[0]][args.seeds[0]][k]["labelled_points"] for k in range(args.rounds)]
    lines = ["| strategy | " + " | ".join(f"round {k} ({n} pts)" for k, n in enumerate(labelled)) + " |",
             "|---" * (args.rounds + 1) + "|"]
    for strategy in args.strategies:
        cells = []
        for k in range(args.rounds):
            values = [100 * results[strategy][seed][k]["miou"] for seed in args.seeds]
            cells.append(mean_std_cell(values))
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines), results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    root = make_data(args.out, args.scenes, args.points)
    runs = [Run(s, seed, args.out / "runs" / s / f"seed{seed}") for s in args.strategies for seed in args.seeds]
    todo = [r for r in runs if r.metrics(args.rounds - 1) is None]
    start = time.perf_counter()
    run_parallel(lambda r: active_learn(args, root, r), todo, args.jobs)
    text, results = table(args, runs)
    summary = save_summary(args.out, args, start, results, text)
    print(f"\npoint-level val mIoU (%) per round, mean ± std over seeds {args.seeds}:\n{text}")
    print(f"\n{len(todo)} active-learning runs in {summary['wall_seconds'] / 60:.1f} min with {args.jobs} processes")


if __name__ == "__main__":
    main()
