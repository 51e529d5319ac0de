"""HPAL active learning: train, select, label, repeat — resumable round by round.

    python tools/active_learn.py --config configs/s3dis/hpal_0.07pct.yaml --rounds 5 --total-budget 0.0007 \
        [--strategy hpal|margin|random] [--work-dir DIR] [--resume] [dotted overrides …]

``--total-budget`` is the fraction of all raw training points labelled after the last round.
Round 0 labels ``--initial-fraction`` (1/5) of it uniformly at random; every later round trains on
the previous budget's model's choice (:mod:`pcseg.methods.hpal.selection`) until the whole budget
is labelled in round ``rounds - 1``. Each round k writes, under ``<work dir>/round_k/``:

    budget/        the cumulative label budget of the round (an ``active`` budget, pcseg.data.budget)
    model_last.pth, log.jsonl, …   the training run (the engine's trainer; from scratch each round, or
                   with ``--warm-start`` from round k-1's ``model_last.pth`` through ``model.init_from``)
    metrics.json   the validation metrics of the final model plus the budget's size

A round is done when its ``budget/manifest.json`` and ``metrics.json`` exist; with ``--resume`` those
are reused, an interrupted training continues from its ``model_last.pth``, and a half-written budget
(``budget.tmp``) is redrawn. Raising ``--rounds`` later with ``--resume`` adds rounds (round 0 stays).
The prediction pass over the training scenes uses the validation transforms (they must keep every
point: indices are into the raw points). Single process only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from pcseg.data.budget import MANIFEST, Budget, load_budget, write_active_budget
from pcseg.engine.build import (Runtime, build_dataset, build_model_from_config, build_trainer, config_section,
                                evaluate_checkpoint, load_weights,
                                setup_runtime)
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import (Config, ConfigError, ConfigKeyError, SplitConfig, config_from_dict, config_to_dict,
                                 load_config)
from pcseg.engine.distributed import shutdown
from pcseg.methods import build_method
from pcseg.methods.hpal import STRATEGIES, annotatable, cumulative_targets, model_selection, random_selection
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

METRICS = "metrics.json"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (method HPAL or any other)")
    parser.add_argument("--rounds", type=int, required=True, help="training rounds (paper: 5)")
    parser.add_argument("--total-budget", type=float, required=True,
                        help="fraction of the raw training points labelled after the last round, e.g. 0.0007")
    parser.add_argument("--initial-fraction", type=float, default=0.2, help="share of the budget drawn in round 0")
    parser.add_argument("--strategy", choices=STRATEGIES, default="hpal", help="selection after round 0")
    parser.add_argument("--work-dir", help="output directory (default: the config's work_dir or work_dirs/<name>)")
    parser.add_argument("--resume", action="store_true", help="reuse finished rounds, continue the interrupted one")
    parser.add_argument("--warm-start", action="store_true",
                        help="train rounds after the first from the previous round's last model, not from scratch")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=3 data.kwargs.root=…")
    return parser.parse_args(argv)


def round_config(cfg: Config, budget: Path, init_from: Optional[Path] = None) -> Config:
    """``cfg`` with ``data.budget`` set to ``budget`` and, if given, ``model.init_from`` to ``init_from``."""
    raw = config_to_dict(cfg)
    raw["data"]["budget"] = str(budget)
    if init_from is not None:
        raw["model"]["init_from"] = str(init_from)
    return config_from_dict(raw, f"round config (data.budget={budget}, model.init_from={init_from})")


def prediction_dataset(cfg: Config) -> Any:
    """The training scenes without budget, under the validation transforms (every point, in order)."""
    split = SplitConfig(cfg.data.train.split, cfg.data.val.transforms, cfg.data.train.kwargs)
    dataset = build_dataset(cfg, split, train=False)
    dataset = getattr(dataset, "base", dataset)  # pcseg.data.views.TwoViewDataset wraps the plain dataset
    if not hasattr(dataset, "reader"):
        raise ConfigKeyError(f"data.name: dataset {cfg.data.name!r} ({type(dataset).__name__}) has no raw-scene reader "
                          f"(.reader); active learning needs one")
    return dataset


def check_budget(budget: Budget, path: Path, expected: int, settings: dict[str, Any]) -> None:
    """Raise InputError unless an existing round budget has ``expected`` points and these settings."""
    got = budget.manifest["counts"]["total"]["selected"]
    meta = budget.manifest.get("meta", {})
    differs = {k: (v, meta.get(k)) for k, v in settings.items() if meta.get(k) != v}
    if got != expected or differs:
        detail = f"expected {expected} labelled points, got {got}" if got != expected else \
            ", ".join(f"{k}: expected {v!r}, got {g!r}" for k, (v, g) in differs.items())
        raise InputError(f"{path / MANIFEST}: written by another schedule ({detail}); use another --work-dir")


def labelled_points(budget: Optional[Budget]) -> dict[str, np.ndarray]:
    """Scene → (K,) int64 sorted indices of ``budget``'s points; empty without a budget."""
    return {} if budget is None else {s: budget.indices(s) for s in budget.scenes}


def available_points(dataset: Any, labelled: dict[str, np.ndarray],
                     require_label: bool = True) -> dict[str, np.ndarray]:
    """Scene → (N,) bool annotatable points: not in ``labelled`` and (``require_label``) with a ground-truth label."""
    return {s: annotatable(dataset.reader.load(s)["segment"], labelled.get(s, np.zeros(0, np.int64)),
                           dataset.ignore_index, require_label=require_label) for s in dataset.reader.scenes}


def scene_sizes(dataset: Any, budget: Optional[Budget]) -> dict[str, int]:
    """Scene → raw point count: from ``budget``'s manifest, else by loading every scene."""
    if budget is not None:
        return {s: c["points"] for s, c in budget.manifest["counts"]["per_scene"].items()}
    return {s: len(dataset.reader.load(s)["segment"]) for s in dataset.reader.scenes}


def load_model(cfg: Config, runtime: Runtime, num_classes: int, checkpoint: Path) -> nn.Module:
    """The config's model on the runtime's device with the ``"model"`` weights of ``checkpoint``."""
    return load_weights(build_model_from_config(cfg, num_classes, runtime.device), checkpoint, runtime.device)


def select_next(dataset: Any, previous: Optional[Budget], model: Optional[nn.Module], count: int, strategy: str,
                seed: int, device: torch.device, *, require_label: bool = True,
                predicted: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """``count`` new points outside ``previous`` chosen by ``strategy`` (with ``model`` unless ``"random"``).

    require_label False: any point may be chosen, not only those with a ground-truth label (a person's
    own scans). predicted: filled by model-based strategies with scene → (K_s,) int64 the model's class
    of each chosen point (left empty by ``"random"``). Returns scene → (K_s,) int64 sorted indices, ΣK_s = count.
    """
    labelled = labelled_points(previous)
    if strategy == "random":
        return random_selection(available_points(dataset, labelled, require_label), count, np.random.default_rng(seed))
    if model is None:
        raise ValueError(f"select_next: strategy {strategy!r} needs a model")
    return model_selection(model, dataset, labelled, scene_sizes(dataset, previous), count, strategy, device,
                           require_label=require_label, predicted=predicted)


def write_budget(out: Path, write: Callable[[Path], Any]) -> Budget:
    """Run ``write(directory)`` on ``out``.tmp and rename it to ``out`` once complete; the budget at ``out``."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, out)
    return load_budget(out)


def merged_indices(previous: Optional[Budget], picks: dict[str, np.ndarray],
                   scenes: Sequence[str]) -> dict[str, np.ndarray]:
    """Scene → (K,) int64 sorted ``previous`` ∪ ``picks`` indices, for every scene of ``scenes``."""
    labelled, empty = labelled_points(previous), np.zeros(0, np.int64)
    return {s: np.union1d(labelled.get(s, empty), picks.get(s, empty)) for s in scenes}


def train_round(cfg: Config, runtime: Runtime, round_dir: Path, budget: Budget,
                init_from: Optional[Path] = None) -> dict[str, Any]:
    """Train on ``budget`` into ``round_dir`` (continuing a started run); metrics of the last model.

    init_from: a checkpoint to start from (``model.init_from``) instead of a fresh initialisation.

    The trainer's evaluation of the last epoch is used when it ran (it always does with ``eval.period``);
    otherwise ``model_last.pth`` is evaluated here.
    """
    round_cfg = round_config(cfg, budget.root, init_from)
    with config_section("method"):
        method = build_method(cfg.method)
    trainer = build_trainer(round_cfg, method, runtime, round_dir)
    with open(round_dir / "config.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(config_to_dict(round_cfg), fh, sort_keys=False)
    metrics = trainer.train(resume=(round_dir / "model_last.pth").is_file())  # the last epoch's, if evaluated
    if metrics is None or trainer.validation is None:
        metrics, names = evaluate_checkpoint(round_cfg, method, runtime, round_dir / "model_last.pth")
    else:
        names = trainer.validation.evaluator.class_names
    total = budget.manifest["counts"]["total"]
    return {"labelled_points": total["selected"], "labelled_fraction": total["selected"] / total["points"],
            "init_from": None if init_from is None else str(init_from), **metrics.as_dict(names)}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")


def run(cfg: Config, runtime: Runtime, work_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """All rounds; returns each round's metrics record."""
    dataset = prediction_dataset(cfg)
    settings = {"strategy": args.strategy, "total_budget": args.total_budget,
                "initial_fraction": args.initial_fraction, "seed": cfg.seed}
    first = work_dir / "round_0" / "budget"
    available = None if (first / MANIFEST).is_file() else available_points(dataset, {})
    points = load_budget(first).manifest["counts"]["total"]["points"] if available is None else \
        sum(len(mask) for mask in available.values())
    targets = cumulative_targets(points, args.total_budget, args.rounds, args.initial_fraction)
    budget: Optional[Budget] = None
    records = []
    for k in range(args.rounds):
        round_dir = work_dir / f"round_{k}"
        if (round_dir / "budget" / MANIFEST).is_file():
            budget = load_budget(round_dir / "budget")
        else:
            round_dir.mkdir(parents=True, exist_ok=True)
            if budget is None:
                picks = random_selection(available, targets[0], np.random.default_rng(cfg.seed))
            else:
                model = None if args.strategy == "random" else \
                    load_model(cfg, runtime, dataset.num_classes, work_dir / f"round_{k - 1}" / "model_last.pth")
                picks = select_next(dataset, budget, model, targets[k] - targets[k - 1], args.strategy, cfg.seed + k,
                                    runtime.device)
            merged = merged_indices(budget, picks, dataset.reader.scenes)
            meta = {"method": "HPAL active learning", "round": k, **settings}
            budget = write_budget(round_dir / "budget",
                                  lambda out: write_active_budget(out, merged, meta, reader=dataset.reader))
        check_budget(budget, round_dir / "budget", targets[k], {**settings, "round": k})
        if not (round_dir / METRICS).is_file():
            init_from = work_dir / f"round_{k - 1}" / "model_last.pth" if args.warm_start and k > 0 else None
            write_json(round_dir / METRICS, {"round": k, **train_round(cfg, runtime, round_dir, budget, init_from)})
        records.append(json.loads((round_dir / METRICS).read_text(encoding="utf-8")))
        print(f"round {k}: {records[-1]['labelled_points']} labelled points, mIoU {100 * records[-1]['miou']:.2f}")
    return records


def main(argv: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    with tool_errors(args.config):
        if args.rounds < 1:
            raise InputError(f"--rounds: expected an int >= 1, got {args.rounds}")
        cfg = load_config(args.config, args.overrides)
        if cfg.data.budget is not None:
            raise ConfigError(f"{args.config}: data.budget is set ({cfg.data.budget}); active learning writes "
                              f"its own budget per round, remove it")
        work_dir = Path(args.work_dir or cfg.work_dir or Path("work_dirs") / Path(args.config).stem)
        if (work_dir / "round_0").exists() and not args.resume:
            raise InputError(f"{work_dir}: holds earlier rounds; pass --resume to continue them or "
                             f"choose another --work-dir")
        runtime = setup_runtime(cfg)
        try:
            if runtime.dist.world_size > 1:
                raise InputError("tools/active_learn.py: expected one process; launch it without torchrun")
            return run(cfg, runtime, work_dir, args)
        finally:
            shutdown(runtime.dist)

if __name__ == "__main__":
    main()
