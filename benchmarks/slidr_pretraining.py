"""SLidR pre-training experiment: does image-to-LiDAR distillation help a 3D network with few labels?

    python benchmarks/slidr_pretraining.py [--out work_dirs/slidr_exp] [--seeds 0 1 2] [--frames 40] …

The teacher must carry knowledge the 3D network cannot get from LiDAR alone: a small D=2 network
(MinkUNet14A on every pixel) trained on synthetic street images with their own 2D labels. Steps
(each skipped when its output exists, a stopped run resumed from its last checkpoint):

1. synthetic SemanticKITTI sequences 00 (train) and 08 (val) with camera images under ``OUT/kitti``;
   with ``--pool-sequences``, also an unlabelled pre-training pool of other streets under
   ``OUT/kitti_pool`` (their labels are written but never read: SLidR reads none);
2. the teacher: street images with 2D labels under ``OUT/images``, trained by ``tools/train.py`` on
   ``configs/image2d/supervised.yaml`` into ``OUT/teacher``;
3. per seed a 1 % ``ratio`` budget under ``OUT/budgets``;
4. per seed: SLidR pre-training (``tools/pretrain_slidr.py``, teacher ``SparseImageModel``, whose
   maps of the few training frames are kept in memory: ``teacher_cache``), then
   fine-tuning on 1 % labels (classifier at ``--head-lr``, the rest at ``--lr``, as SLidR's
   downstream runs) and a linear probe (frozen backbone, all labels; the backbone's BatchNorm
   statistics re-estimated on the training sweeps, so that a random backbone's features are not
   scaled away by its initial statistics), each from the SLidR backbone (``model.init_from``) and
   from random init, into ``OUT/runs/<run>/seed<seed>``; with ``--lp-ft`` the fine-tuning starts
   from a linear probe on the 1 % budget (``OUT/runs/probe_1pct_<init>``);
5. the point-level val mIoU after the last epoch → ``OUT/results.json`` and a markdown table
   (mean ± sample std over seeds, and the paired SLidR − random difference) on stdout.

Configs are written to ``OUT/configs``; ``--jobs`` seeds run at a time (their runs one after the
other), each run with ``--threads`` threads.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from _experiment import final_miou, mean_std_cell, run_parallel, run_resumable, save_summary

REPO = Path(__file__).resolve().parents[1]
DOWNSTREAM = ("finetune_1pct", "linear_probe")
INITS = ("random", "slidr")
MODEL_3D = {"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3}
MODEL_2D = {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 19, "D": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/slidr_exp"))
    parser.add_argument("--frames", type=int, default=40, help="frames per sequence (00 train, 08 val)")
    parser.add_argument("--azimuth-steps", type=int, default=1024, help="LiDAR columns per sweep")
    parser.add_argument("--image-scale", type=float, default=0.25, help="camera image size / 1241 x 376")
    parser.add_argument("--voxel-size", type=float, default=0.1)
    parser.add_argument("--teacher-images", type=int, default=64, help="labelled street images for the teacher")
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pretrain-lr", type=float, default=0.1)
    parser.add_argument("--pool-sequences", nargs="*", default=[],
                        help="pre-train on these extra streets (e.g. 01 02 03 04) instead of sequence 00")
    parser.add_argument("--lr", type=float, default=0.05, help="fine-tuning learning rate of the backbone")
    parser.add_argument("--head-lr", type=float, default=None,
                        help="learning rate of the classifier in fine-tuning and probing (SLidR: 2.0); None = --lr")
    parser.add_argument("--epochs", type=int, default=20, help="fine-tuning and linear-probe epochs")
    parser.add_argument("--lp-ft", action="store_true",
                        help="fine-tune from a linear probe trained on the same 1 %% budget (LP-FT)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="OMP threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at the same time, each in its own processes")
    return parser.parse_args(argv)


def step(tool: str, tool_args: list[str], work_dir: Path, threads: int) -> None:
    """:func:`run_resumable` with a progress line."""
    seconds, resume = run_resumable(tool, tool_args, work_dir, threads)
    print(f"{tool} → {work_dir} in {seconds:.0f} s{' (resumed)' if resume else ''}", flush=True)


def make_data(args: argparse.Namespace) -> tuple[Path, Path]:
    """Steps 1-2: the LiDAR + camera data (and pool) and the teacher's image folder; returns their roots."""
    from pcseg.data.synthetic import make_semantickitti, write_image_folder
    from pcseg.data.synthetic.outdoor import image_size

    kitti, images = args.out / "kitti", args.out / "images"
    if not (kitti / "sequences" / "08" / "times.txt").is_file():
        make_semantickitti(kitti, args.frames, seed=0, sequences=("00", "08"), azimuth_steps=args.azimuth_steps,
                           image_scale=args.image_scale)
    pool = args.out / "kitti_pool"
    if args.pool_sequences and not (pool / "sequences" / args.pool_sequences[-1] / "times.txt").is_file():
        make_semantickitti(pool, args.frames, seed=0, sequences=tuple(args.pool_sequences),
                           azimuth_steps=args.azimuth_steps, image_scale=args.image_scale)
    if not (images / "val").is_dir():
        write_image_folder(images, args.teacher_images, seed=1, width=image_size(args.image_scale)[0])
    return kitti, images


def write_configs(args: argparse.Namespace, kitti: Path, teacher: Path) -> dict[str, Path]:
    """Pre-training, fine-tuning and linear-probe configs under ``OUT/configs``."""
    data = {"name": "SemanticKITTI", "kwargs": {"root": str(kitti), "voxel_size": args.voxel_size},
            "train": {"split": "train", "transforms": [{"name": "RandomRotateZ"}, {"name": "RandomFlip"},
                                                       {"name": "RandomScale", "scale": [0.95, 1.05]}]},
            "val": {"split": "val"}, "batch_size": 2}
    optim = {"optimizer": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 1e-4, "scheduler": "cosine",
             "log_period": 5}
    frames = args.frames * (len(args.pool_sequences) if args.pool_sequences else 1)  # distinct training images
    configs = {
        "pretrain": {"data": {**data, "name": "LidarCamera", "kwargs": {
            **data["kwargs"], "dataset": "SemanticKITTI", "superpixel_cache": str(args.out / "superpixels"),
            **({"root": str(args.out / "kitti_pool")} if args.pool_sequences else {})}},
            "model": MODEL_3D, "eval": {"period": 0},
            "train": {**optim, "epochs": args.pretrain_epochs, "lr": args.pretrain_lr},
            "method": {"name": "SLidR", "temperature": 0.07, "projection_dim": 64, "teacher_cache": frames,
                       "teacher": {"name": "SparseImageModel", "model": MODEL_2D, "checkpoint": str(teacher)}}},
        "finetune_1pct": {"data": data, "model": MODEL_3D, "eval": {"period": args.epochs},
                          "method": {"name": "Supervised", "head_lr": args.head_lr},
                          "train": {**optim, "epochs": args.epochs, "lr": args.lr}},
        "linear_probe": {"data": data, "model": MODEL_3D, "eval": {"period": args.epochs},
                         "method": {"name": "Supervised", "freeze_backbone": True, "frozen_bn": False,
                                    "head_lr": args.head_lr},
                         "train": {**optim, "epochs": args.epochs, "lr": args.lr}},
    }
    paths = {}
    for name, cfg in configs.items():
        paths[name] = args.out / "configs" / f"{name}.yaml"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return paths


def make_budget_for(kitti: Path, out: Path, seed: int) -> Path:
    from pcseg.data import SemanticKITTIReader
    from pcseg.data.budget import MANIFEST, make_budget

    path = out / "budgets" / f"ratio_0.01_seed{seed}"
    if not (path / MANIFEST).is_file():
        make_budget(SemanticKITTIReader(kitti, "train"), "ratio", 0.01, seed, path)
    return path


def downstream(args: argparse.Namespace, configs: dict[str, Path], seed: int, backbone: Path, budget: Path) -> None:
    """Step 4's downstream runs of one seed from each init, into ``OUT/runs/<run>_<init>/seed<seed>``.

    With ``--lp-ft`` the fine-tuning starts from a linear probe trained on the same 1 % budget
    (``probe_1pct``: frozen backbone, head only), i.e. linear probing then fine-tuning.
    """
    for init in INITS:
        init_from = backbone if init == "slidr" else None
        probe = args.out / "runs" / f"probe_1pct_{init}" / f"seed{seed}"
        runs = [("linear_probe", "linear_probe", None, init_from)]
        if args.lp_ft:
            runs += [("probe_1pct", "linear_probe", budget, init_from),
                     ("finetune_1pct", "finetune_1pct", budget, probe / "model_last.pth")]
        else:
            runs += [("finetune_1pct", "finetune_1pct", budget, init_from)]
        for run, config, run_budget, start in runs:
            work_dir = args.out / "runs" / f"{run}_{init}" / f"seed{seed}"
            if final_miou(work_dir) is not None:
                continue
            overrides = [f"seed={seed}"] + ([f"data.budget={run_budget}"] if run_budget else []) \
                + ([f"model.init_from={start}"] if start else [])
            step("train.py", ["--config", str(configs[config]), *overrides], work_dir, args.threads)


def table(args: argparse.Namespace) -> tuple[str, dict]:
    """Markdown table of the final val mIoU in %: mean ± sample std (per-seed values) of each init,
    and the paired SLidR − random difference. With ``--lp-ft`` the 1 % probe is a column too."""
    runs = (*DOWNSTREAM, "probe_1pct") if args.lp_ft else DOWNSTREAM
    results = {f"{run}/{init}": {seed: final_miou(args.out / "runs" / f"{run}_{init}" / f"seed{seed}")
                                 for seed in args.seeds} for run in runs for init in INITS}
    percent = {key: np.array([100 * v for v in by_seed.values()]) for key, by_seed in results.items()}
    lines = ["| init | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for init in INITS:
        lines.append(f"| {init} | " + " | ".join(mean_std_cell(percent[f"{run}/{init}"], per_seed=True)
                                                 for run in runs) + " |")
    paired = [mean_std_cell(percent[f"{run}/slidr"] - percent[f"{run}/random"], per_seed=True) for run in runs]
    lines.append("| slidr − random, paired | " + " | ".join(paired) + " |")
    return "\n".join(lines), results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    kitti, images = make_data(args)
    teacher_dir = args.out / "teacher"
    if final_miou(teacher_dir) is None:
        overrides = [f"data.kwargs.root={images}", f"train.epochs={args.teacher_epochs}",
                     f"eval.period={args.teacher_epochs}", "train.warmup_iters=0"]
        step("train.py", ["--config", str(REPO / "configs" / "image2d" / "supervised.yaml"), *overrides],
             teacher_dir, args.threads)
    print(f"teacher (2D, own labels) val mIoU: {100 * final_miou(teacher_dir):.1f} %")
    configs = write_configs(args, kitti, teacher_dir / "model_last.pth")

    def one_seed(seed: int) -> None:
        pre_dir = args.out / "runs" / "pretrain" / f"seed{seed}"
        if not (pre_dir / "backbone.pth").is_file():
            step("pretrain_slidr.py", ["--config", str(configs["pretrain"]), f"seed={seed}"], pre_dir, args.threads)
        downstream(args, configs, seed, pre_dir / "backbone.pth", make_budget_for(kitti, args.out, seed))

    run_parallel(one_seed, args.seeds, args.jobs)
    text, results = table(args)
    save_summary(args.out, args, start, results, text, teacher_miou=final_miou(teacher_dir))
    print(f"\nfinal point-level val mIoU (%), mean ± std over seeds {args.seeds} (per-seed values):\n{text}")


if __name__ == "__main__":
    main()
