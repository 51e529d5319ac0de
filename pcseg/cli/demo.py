"""`make demo`: synthetic ScanNet-format rooms → sparse labels → train → evaluate → picture.

    pcseg-demo [--scenes 10] [--points 60000] [key=value config overrides]

1. writes synthetic rooms in the raw ScanNet v2 layout under data/demo/scannet (once);
2. draws a 0.1 % label budget from them (once; a file, reproducible from its seed);
3. trains configs/demo/scannet_sparse.yaml with the engine's trainer (resumes if interrupted);
4. evaluates the best checkpoint on the validation rooms at full point resolution and prints the
   per-class table and mIoU;
5. writes work_dirs/demo/predictions.png (prediction | ground truth | errors) and coloured PLYs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

from pcseg.data.budget import make_budget
from pcseg.data.formats import ScanNetReader
from pcseg.data.synthetic import make_scannet
from pcseg.engine.build import build_trainer, evaluate_checkpoint, setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config
from pcseg.engine.metrics import format_table
from pcseg.engine.visualize import render_scenes
from pcseg.methods import build_method

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo" / "scannet_sparse.yaml"  # in a source checkout


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=10, help="synthetic rooms (a quarter are validation)")
    parser.add_argument("--points", type=int, default=40_000, help="points per room")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.epochs=5")
    return parser.parse_args(argv)


def ensure_data(root: Path, scenes: int, points: int) -> None:
    if (root / "scannetv2_val.txt").exists():
        print(f"[demo] using the synthetic rooms in {root}")
        return
    t = time.time()
    make_scannet(root, scenes, seed=0, num_points=points)
    print(f"[demo] wrote {scenes} synthetic ScanNet-format rooms to {root} ({time.time() - t:.1f} s)")


def ensure_budget(root: Path, budget_dir: Path) -> None:
    if (budget_dir / "manifest.json").exists():
        print(f"[demo] using the label budget {budget_dir}")
        return
    budget = make_budget(ScanNetReader(str(root), "train"), "ratio", 0.001, seed=0, out_dir=budget_dir)
    total = budget.manifest["counts"]["total"]
    print(f"[demo] label budget {budget_dir}: {total['selected']} of {total['points']} points labelled "
          f"({100 * total['selected'] / total['points']:.2f} %)")


def main(argv: Optional[Sequence[str]] = None) -> float:
    args = parse_args(argv)
    with tool_errors(CONFIG):
        cfg = load_config(CONFIG, args.overrides)
        root = Path(cfg.data.kwargs["root"])
        ensure_data(root, args.scenes, args.points)
        ensure_budget(root, Path(cfg.data.budget))
        work_dir = Path(cfg.work_dir)
        runtime = setup_runtime(cfg)
        method = build_method(cfg.method)
        t = time.time()
        build_trainer(cfg, method, runtime, work_dir).train(resume=(work_dir / "model_last.pth").exists())
        print(f"[demo] training took {time.time() - t:.0f} s")
        metrics, class_names = evaluate_checkpoint(cfg, method, runtime, work_dir / "model_best.pth",
                                                   save_dir=work_dir / "predictions")
        print(f"[demo] {work_dir / 'model_best.pth'} on the validation rooms, every point:")
        print(format_table(metrics, class_names))
        val_scene = (root / "scannetv2_val.txt").read_text().split()[0]
        png = render_scenes(cfg, work_dir / "predictions", [val_scene], work_dir)[0]
        picture = work_dir / "predictions.png"
        png.replace(picture)
        print(f"[demo] validation mIoU {100 * metrics.miou:.1f} % — picture: {picture}")
        return metrics.miou


if __name__ == "__main__":
    main()
