"""CPCM label-efficiency experiment: Supervised vs consistency-only vs CPCM at two label budgets.

    python benchmarks/cpcm_label_efficiency.py [--out work_dirs/cpcm_exp] [--seeds 0 1 2] [--epochs 20] [--jobs 2]

Steps (each skipped when its output exists; a stopped training run resumes from its last checkpoint):
1. synthetic ScanNet-format rooms (``pcseg.data.synthetic.make_scannet``) under ``OUT/data``;
2. one ``ratio`` budget per (amount, seed) under ``OUT/budgets/ratio_<amount>_seed<seed>``;
3. ``tools/train.py`` on ``configs/experiments/cpcm/{supervised,consistency,cpcm}.yaml`` for every
   (budget, seed, method), ``--jobs`` processes at a time with one thread each, into
   ``OUT/runs/<method>/ratio_<amount>/seed<seed>``;
4. the point-level val mIoU after the last epoch of each run → ``OUT/results.json`` and a
   markdown table (mean ± sample std over seeds) on stdout.

Per budget the CPCM settings follow the paper: grid 4 / weight 5 at ``--budgets``' first amount,
grid 8 / weight 10 at the second (override with ``--grids`` / ``--weights``).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path


from _experiment import final_miou, mean_std_cell, run_parallel, run_resumable, save_summary, wall_seconds

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "experiments" / "cpcm"
METHODS = ("supervised", "consistency", "cpcm")


@dataclass(frozen=True)
class Run:
    method: str
    amount: float
    seed: int
    overrides: tuple[str, ...]
    work_dir: Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/cpcm_exp"))
    parser.add_argument("--scenes", type=int, default=16, help="rooms written; the last quarter is the val split")
    parser.add_argument("--points", type=int, default=50_000, help="points per room")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.001, 0.0001], help="ratio budgets")
    parser.add_argument("--grids", type=int, nargs="+", default=[4, 8], help="CPCM grid per budget")
    parser.add_argument("--weights", type=float, nargs="+", default=[5.0, 10.0], help="CPCM weight per budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="budget draw and training seeds")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time (one thread each)")
    parser.add_argument("overrides", nargs="*", help="extra dotted overrides for every run, e.g. train.lr=0.02")
    args = parser.parse_args(argv)
    if not len(args.budgets) == len(args.grids) == len(args.weights):
        parser.error("--budgets, --grids and --weights need one value per budget")
    return args


def make_data(out: Path, scenes: int, points: int) -> Path:
    from pcseg.data.synthetic import make_scannet

    root = out / "data"
    if not (root / "scannetv2_val.txt").is_file():
        make_scannet(root, scenes, seed=0, num_points=points)
    return root


def make_budgets(root: Path, out: Path, amounts: list[float], seeds: list[int]) -> dict[tuple[float, int], Path]:
    from pcseg.data import ScanNetReader
    from pcseg.data.budget import MANIFEST, make_budget

    reader = ScanNetReader(root, "train")
    paths = {}
    for amount in amounts:
        for seed in seeds:
            path = out / "budgets" / f"ratio_{amount:g}_seed{seed}"
            if not (path / MANIFEST).is_file():
                make_budget(reader, "ratio", amount, seed, path)
            paths[amount, seed] = path
    return paths


def plan(args: argparse.Namespace, root: Path, budgets: dict[tuple[float, int], Path]) -> list[Run]:
    runs = []
    for amount, grid, weight in zip(args.budgets, args.grids, args.weights):
        for seed in args.seeds:
            for method in args.methods:
                overrides = [f"data.kwargs.root={root}", f"data.budget={budgets[amount, seed]}", f"seed={seed}",
                             f"train.epochs={args.epochs}", f"eval.period={args.epochs}"]
                if method != "supervised":
                    overrides += [f"method.grid={grid}", f"method.weight={weight}"]  # masks: from seed
                work_dir = args.out / "runs" / method / f"ratio_{amount:g}" / f"seed{seed}"
                runs.append(Run(method, amount, seed, tuple(overrides + args.overrides), work_dir))
    return runs


def train(run: Run) -> None:
    """``tools/train.py`` for ``run`` with one thread (a stopped run continues from its checkpoint)."""
    seconds, resumed = run_resumable("train.py", ["--config", str(CONFIGS / f"{run.method}.yaml"), *run.overrides],
                                     run.work_dir)
    print(f"{run.method:12s} ratio {run.amount:g} seed {run.seed}: mIoU {100 * final_miou(run.work_dir):.2f} "
          f"in {seconds:.0f} s{' (resumed)' if resumed else ''}", flush=True)


def table(args: argparse.Namespace, runs: list[Run]) -> tuple[str, dict]:
    """Markdown table of mean ± sample std (and per-seed values) of the final val mIoU, in %."""
    results: dict = {}
    for run in runs:
        results.setdefault(run.method, {}).setdefault(f"{run.amount:g}", {})[run.seed] = {
            "miou": final_miou(run.work_dir), "seconds": wall_seconds(run.work_dir)}
    head = "| method | " + " | ".join(f"ratio {a:g} ({100 * a:g} %)" for a in args.budgets) + " |"
    lines = [head, "|---" * (len(args.budgets) + 1) + "|"]
    for method in args.methods:
        cells = []
        for amount in args.budgets:
            per_seed = [100 * v["miou"] for v in results[method][f"{amount:g}"].values()]
            cells.append(mean_std_cell(per_seed, per_seed=True))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines), results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    root = make_data(args.out, args.scenes, args.points)
    runs = plan(args, root, make_budgets(root, args.out, args.budgets, args.seeds))
    todo = [r for r in runs if final_miou(r.work_dir) is None]
    # the most expensive runs first, so the two workers finish together
    todo.sort(key=lambda r: METHODS.index(r.method), reverse=True)
    start = time.perf_counter()
    run_parallel(train, todo, args.jobs)
    text, results = table(args, runs)
    summary = save_summary(args.out, args, start, results, text)
    print(f"\nfinal point-level val mIoU (%), mean ± std over seeds {args.seeds} (per-seed values):\n{text}")
    print(f"\n{len(todo)} runs trained in {summary['wall_seconds'] / 60:.1f} min with {args.jobs} processes")


if __name__ == "__main__":
    main()
