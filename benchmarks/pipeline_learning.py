"""Does the engine learn? Full labels vs 0.1 % labels on synthetic ScanNet-format rooms, plus loader speed.

    python benchmarks/pipeline_learning.py [--scenes 16] [--points 40000] [--epochs 60] [--threads 2]

Writes synthetic rooms in the raw ScanNet layout (a quarter are validation), draws a 0.1 % ratio
budget, and trains configs/demo/scannet_sparse.yaml (Res16UNet14A, 5 cm) twice with the same
schedule: once on every label, once on the budget. Prints one JSON line per measurement: the
loader's scenes/s (no model), each run's iterations/s and its point-level validation mIoU.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcseg.cli.demo import CONFIG, ensure_budget, ensure_data  # noqa: E402
from pcseg.engine.build import build_dataset, build_trainer, setup_runtime  # noqa: E402
from pcseg.engine.config import load_config  # noqa: E402
from pcseg.engine.loader import make_loader  # noqa: E402
from pcseg.data.collate import collate_sparse  # noqa: E402
from pcseg.methods import build_method  # noqa: E402


def loader_speed(cfg, workers: int) -> float:
    """Training-split scenes per second through transforms, voxelization and collation (no model)."""
    dataset = build_dataset(cfg, cfg.data.train, train=True)
    loader = make_loader(dataset, batch_size=cfg.data.batch_size, collate_fn=collate_sparse, train=True,
                         seed=cfg.seed, num_workers=workers)
    t = time.perf_counter()
    scenes = sum(len(batch["names"]) for batch in loader)
    return scenes / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="work_dirs/pipeline_learning")
    parser.add_argument("--scenes", type=int, default=16)
    parser.add_argument("--points", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", nargs="+", default=["full", "ratio_0.001"], choices=["full", "ratio_0.001"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    root, budget = out / "data", out / "budgets" / "ratio_0.001_seed0"
    ensure_data(root, args.scenes, args.points)
    ensure_budget(root, budget)
    common = [f"data.kwargs.root={root}", f"train.epochs={args.epochs}", f"eval.period={args.epochs}",
              "train.amp=bf16", "data.num_workers=1"]
    for workers in (0, 2):
        cfg = load_config(CONFIG, common + ["data.budget=null"])
        print(json.dumps({"case": "loader", "num_workers": workers,
                          "scenes_per_s": round(loader_speed(cfg, workers), 2)}), flush=True)
    for run in args.runs:
        overrides = common + [f"work_dir={out / run}", "data.budget=null" if run == "full" else f"data.budget={budget}"]
        cfg = load_config(CONFIG, overrides)
        runtime = setup_runtime(cfg)
        trainer = build_trainer(cfg, build_method(cfg.method), runtime, cfg.work_dir)
        t = time.perf_counter()
        metrics = trainer.train(resume=(Path(cfg.work_dir) / "model_last.pth").exists())
        seconds = time.perf_counter() - t
        steps = args.epochs * trainer.iters_per_epoch
        names = trainer.validation.evaluator.class_names
        iou = metrics.as_dict(names)["iou"]
        print(json.dumps({"case": "train", "labels": run, "epochs": args.epochs, "iterations": steps,
                          "it_per_s": round(steps / seconds, 3), "val_miou": round(metrics.miou, 4),
                          "per_class_iou": {k: None if v is None else round(float(v), 3) for k, v in iou.items()}}),
              flush=True)


if __name__ == "__main__":
    main()
