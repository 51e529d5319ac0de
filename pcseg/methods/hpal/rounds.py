"""HPAL's active-learning protocol as resumable stages: per round, select → label → train.

The protocol is the config's ``active:`` section (:class:`~pcseg.engine.config.ActiveConfig`):
``rounds``, ``total_budget`` (fraction of all raw training points labelled after the last round),
``initial_fraction`` (round 0's share, drawn uniformly at random), ``strategy`` (``hpal`` /
``margin`` / ``random`` for the later rounds), ``warm_start`` and ``selection``
(:class:`~pcseg.methods.hpal.selection.SelectionSettings`: grids, weights, radius, max_cosine,
candidate_factor). Round k (:func:`run_rounds`) writes, under ``<work dir>/round_k/``:

    select.stage.json   stage ``select``: the round's selection settings (:class:`pcseg.engine.stages.Stage`)
    budget/             the cumulative label budget (an ``active`` budget, pcseg.data.budget): the
                        previous round's plus the new points, labelled by the dataset's ground truth
    train.stage.json    stage ``train``: the round's training config
    model_last.pth, log.jsonl, config.yaml, …   the training run (the engine's trainer; from scratch,
                        or with ``warm_start`` from round k-1's ``model_last.pth`` via ``model.init_from``)
    metrics.json        the validation metrics of the final model plus the budget's size

Finished stages are reused when their settings match and refused with the differences listed when
they don't; an interrupted training continues from its ``model_last.pth``, an interrupted selection is
redrawn (the same seed draws the same points). Raising ``rounds`` later adds rounds (round 0 keeps
its settings: it labels ``initial_fraction`` of the budget whatever the number of rounds). The
prediction pass over the training scenes uses the validation transforms (they must keep every point:
indices are into the raw points). Single process only.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from pcseg.data.budget import MANIFEST, Budget, load_budget, write_active_budget
from pcseg.engine.build import (Runtime, build_dataset, build_model_from_config, build_trainer, config_section,
                                evaluate_checkpoint, load_weights)
from pcseg.engine.config import (ActiveConfig, Config, ConfigKeyError, SplitConfig, config_from_dict, config_to_dict,
                                 save_config, thaw)
from pcseg.engine.stages import Stage
from pcseg.methods.registry import build_method
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

from .selection import STRATEGIES, SelectionSettings, annotatable, cumulative_targets, model_selection, random_selection

__all__ = ["METRICS", "protocol", "selection_settings", "round_config", "prediction_dataset", "available_points",
           "load_model", "select_next", "write_budget", "merged_indices", "train_round", "run_rounds"]

METRICS = "metrics.json"


def selection_settings(cfg: Config) -> SelectionSettings:
    """``cfg.active.selection`` checked into :class:`SelectionSettings` (HPAL's defaults without ``active``).

    Raises ConfigKeyError (``active.selection.<key>: …``) for unknown keys, wrong types, or weights
    that are not one per level (``len(grids) + 1``).
    """
    raw = {} if cfg.active is None else thaw(cfg.active.selection)
    settings = config_from_dict(raw, None, SelectionSettings, where="active.selection")
    if len(settings.weights) != len(settings.grids) + 1:
        raise ConfigKeyError(f"active.selection.weights: expected {len(settings.grids) + 1} values (the point level, "
                             f"then one per grid {list(settings.grids)}), got {len(settings.weights)}")
    return settings


def protocol(cfg: Config) -> ActiveConfig:
    """``cfg.active``, checked for active learning; raises ConfigKeyError naming the key."""
    if cfg.active is None:
        raise ConfigKeyError("active: missing; active learning reads its rounds from an 'active:' section "
                             "(rounds, total_budget, initial_fraction, strategy, warm_start, selection)")
    if cfg.active.strategy not in STRATEGIES:
        raise ConfigKeyError(f"active.strategy: expected one of {', '.join(STRATEGIES)}, got {cfg.active.strategy!r}")
    if cfg.active.rounds < 1:
        raise ConfigKeyError(f"active.rounds: expected an int >= 1, got {cfg.active.rounds}")
    if cfg.data.budget is not None:
        raise ConfigKeyError(f"data.budget: is set ({cfg.data.budget}); active learning writes its own budget per "
                             f"round, remove it")
    selection_settings(cfg)
    return cfg.active


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


def _labelled_points(budget: Optional[Budget]) -> dict[str, np.ndarray]:
    """Scene → (K,) int64 sorted indices of ``budget``'s points; empty without a budget."""
    return {} if budget is None else {s: budget.indices(s) for s in budget.scenes}


def available_points(dataset: Any, labelled: dict[str, np.ndarray],
                     require_label: bool = True) -> dict[str, np.ndarray]:
    """Scene → (N,) bool annotatable points: not in ``labelled`` and (``require_label``) with a ground-truth label."""
    return {s: annotatable(dataset.reader.load(s)["segment"], labelled.get(s, np.zeros(0, np.int64)),
                           dataset.ignore_index, require_label=require_label) for s in dataset.reader.scenes}


def _scene_sizes(dataset: Any, budget: Optional[Budget]) -> dict[str, int]:
    """Scene → raw point count: from ``budget``'s manifest, else by loading every scene."""
    if budget is not None:
        return {s: c["points"] for s, c in budget.manifest["counts"]["per_scene"].items()}
    return {s: len(dataset.reader.load(s)["segment"]) for s in dataset.reader.scenes}


def load_model(cfg: Config, runtime: Runtime, num_classes: int, checkpoint: Path) -> nn.Module:
    """The config's model on the runtime's device with the ``"model"`` weights of ``checkpoint``."""
    return load_weights(build_model_from_config(cfg, num_classes, runtime.device), checkpoint, runtime.device)


def select_next(dataset: Any, previous: Optional[Budget], model: Optional[nn.Module], count: int, strategy: str,
                seed: int, device: torch.device, settings: SelectionSettings = SelectionSettings(), *,
                require_label: bool = True, predicted: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """``count`` new points outside ``previous`` chosen by ``strategy`` (with ``model`` unless ``"random"``).

    settings: the model-based strategies' knobs. require_label False: any point may be chosen, not
    only those with a ground-truth label (a person's own scans). predicted: filled by model-based
    strategies with scene → (K_s,) int64 the model's class of each chosen point (left empty by
    ``"random"``). Returns scene → (K_s,) int64 sorted indices, ΣK_s = count.
    """
    labelled = _labelled_points(previous)
    if strategy == "random":
        return random_selection(available_points(dataset, labelled, require_label), count, np.random.default_rng(seed))
    if model is None:
        raise ValueError(f"select_next: strategy {strategy!r} needs a model")
    return model_selection(model, dataset, labelled, _scene_sizes(dataset, previous), count, strategy, device,
                           **dataclasses.asdict(settings), require_label=require_label, predicted=predicted)


def write_budget(out: Path, write: Callable[[Path], Any]) -> Budget:
    """Run ``write(directory)`` on ``out``.tmp and rename it to ``out`` once complete; the budget at ``out``."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, out)
    return load_budget(out)


def merged_indices(previous: Optional[Budget], picks: dict[str, np.ndarray],
                   scenes: list[str]) -> dict[str, np.ndarray]:
    """Scene → (K,) int64 sorted ``previous`` ∪ ``picks`` indices, for every scene of ``scenes``."""
    labelled, empty = _labelled_points(previous), np.zeros(0, np.int64)
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
    save_config(round_cfg, round_dir / "config.yaml")
    metrics = trainer.train(resume=(round_dir / "model_last.pth").is_file())  # the last epoch's, if evaluated
    if metrics is None or trainer.validation is None:
        metrics, names = evaluate_checkpoint(round_cfg, method, runtime, round_dir / "model_last.pth")
    else:
        names = trainer.validation.evaluator.class_names
    total = budget.manifest["counts"]["total"]
    return {"labelled_points": total["selected"], "labelled_fraction": total["selected"] / total["points"],
            "init_from": None if init_from is None else str(init_from), **metrics.as_dict(names)}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")


def _training_settings(cfg: Config, init_from_round: Optional[int]) -> dict[str, Any]:
    """The train stage's settings: the config without what the rounds set (budget, init_from) or do not use."""
    raw = config_to_dict(cfg)
    for section, key in (("data", "budget"), ("model", "init_from")):
        raw[section].pop(key, None)
    for key in ("active", "work_dir"):
        raw.pop(key)
    return {"config": raw, "init_from_round": init_from_round}


def _select_round(folder: Path, k: int, cfg: Config, runtime: Runtime, dataset: Any, previous: Optional[Budget],
                  count: int, settings: SelectionSettings, meta: dict[str, Any]) -> None:
    """Stage ``select`` of round ``k``: ``count`` new points (round 0: at random) → ``folder/budget``."""
    strategy = meta["strategy"] if previous is not None else "random"
    model = None if strategy == "random" else \
        load_model(cfg, runtime, dataset.num_classes, folder.parent / f"round_{k - 1}" / "model_last.pth")
    picks = select_next(dataset, previous, model, count, strategy, cfg.seed + k, runtime.device, settings)
    merged = merged_indices(previous, picks, dataset.reader.scenes)
    shutil.rmtree(folder / "budget", ignore_errors=True)  # an interrupted selection is redrawn
    write_budget(folder / "budget", lambda out: write_active_budget(
        out, merged, {"method": "HPAL active learning", "round": k, **meta}, reader=dataset.reader))


def _train_round(folder: Path, k: int, cfg: Config, runtime: Runtime, init_from: Optional[Path]) -> None:
    """Stage ``train`` of round ``k``: train on ``folder/budget``, then write ``folder/metrics.json``."""
    budget = load_budget(folder / "budget")
    _write_json(folder / METRICS, {"round": k, **train_round(cfg, runtime, folder, budget, init_from)})


def run_rounds(cfg: Config, runtime: Runtime, work_dir: Path, resume: bool = False) -> list[dict[str, Any]]:
    """Every round of ``cfg.active`` under ``work_dir`` (see the module docstring); each round's metrics record.

    resume: continue the rounds already in ``work_dir`` (without it, a work dir holding rounds is refused).
    Raises ConfigKeyError for a config unfit for active learning, InputError for a work dir of other settings.
    """
    active = protocol(cfg)
    settings = selection_settings(cfg)
    if runtime.dist.world_size > 1:
        raise InputError(f"active learning: expected one process, got {runtime.dist.world_size}; launch it "
                         f"without torchrun")
    if (work_dir / "round_0").exists() and not resume:
        raise InputError(f"{work_dir}: holds earlier rounds; pass --resume to continue them or choose another "
                         f"--work-dir")
    dataset = prediction_dataset(cfg)
    first = work_dir / "round_0" / "budget"
    points = load_budget(first).manifest["counts"]["total"]["points"] if (first / MANIFEST).is_file() else \
        sum(len(scene["segment"]) for scene in map(dataset.reader.load, dataset.reader.scenes))
    targets = cumulative_targets(points, active.total_budget, active.rounds, active.initial_fraction)
    meta = {"strategy": active.strategy, "total_budget": active.total_budget,
            "initial_fraction": active.initial_fraction, "seed": cfg.seed}
    budget: Optional[Budget] = None
    records = []
    for k in range(active.rounds):
        round_dir = work_dir / f"round_{k}"
        model_based = k > 0 and active.strategy != "random"  # the selection settings matter
        count = targets[k] - (targets[k - 1] if k else 0)
        chosen_by = {"selection": dataclasses.asdict(settings)} if model_based else {}
        Stage("select", round_dir, {"round": k, "labelled_points": targets[k], **meta, **chosen_by}).run(
            functools.partial(_select_round, k=k, cfg=cfg, runtime=runtime, dataset=dataset, previous=budget,
                              count=count, settings=settings, meta=meta))
        budget = load_budget(round_dir / "budget")
        init_from = work_dir / f"round_{k - 1}" / "model_last.pth" if active.warm_start and k > 0 else None
        Stage("train", round_dir, _training_settings(cfg, k - 1 if init_from is not None else None)).run(
            functools.partial(_train_round, k=k, cfg=cfg, runtime=runtime, init_from=init_from))
        records.append(json.loads((round_dir / METRICS).read_text(encoding="utf-8")))
        print(f"round {k}: {records[-1]['labelled_points']} labelled points, mIoU {100 * records[-1]['miou']:.2f}")
    return records
