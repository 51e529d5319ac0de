"""The one training loop. It takes built objects; reading configs is :mod:`pcseg.engine.build`'s job.

It runs one method (:class:`~pcseg.engine.hooks.MethodHooks`) on the one module the method
wrapped (:meth:`~pcseg.engine.hooks.MethodHooks.wrap`), plus a list of plain
:class:`~pcseg.engine.hooks.Hook` s, and never asks which method runs.

Per iteration: hooks' ``before_step`` → batch → device → ``method.losses`` under autocast → sum →
backward (GradScaler for fp16) → clip → optimiser step → LR step (skipped when the fp16
GradScaler skipped the optimiser step because of an inf/NaN gradient, so the schedule counts
optimiser steps) → method's, then hooks' ``after_step``. Every
``log_period`` iterations a record goes to ``log.jsonl``/TensorBoard; every ``checkpoint_period``
iterations, at each epoch end and after each evaluation ``model_last.pth`` is rewritten atomically;
``model_best.pth`` follows the best validation mIoU. A checkpoint holds the backbone's weights as
``"model"`` (the form ``tools/test.py`` and ``model.init_from`` read) and the method's modules and
state as ``"method"`` (see :class:`~pcseg.engine.hooks.MethodModel`). When both are written,
``model_best.pth`` goes first, and ``model_last.pth`` records the step of the best (``best_step``), so a process killed
between the two writes leaves a best that is never older than what the last records; ``--resume``
reconciles the pair (:meth:`Trainer.resume`). Temporaries of killed writers are deleted at start.

Nothing non-finite is saved: each step's loss is checked on the device (no host sync; read at log
steps and before each checkpoint), and the weights before each checkpoint; either stops training
with :class:`NonFiniteError` naming the step and the last good checkpoint, which stays untouched.

What the readers dropped or remapped (their ``LoadReport`` counts, summed per batch by
:func:`pcseg.data.collate.collate_sparse` as ``load_report``) is summed over each epoch on every
rank and logged once per epoch as a warning in ``train.log`` and a ``load_report`` record in
``log.jsonl``.

Resuming restores model, optimiser state, scheduler step, scaler, method state, best metric and
every rank's RNG states (the optimiser's hyper-parameters and base learning rates stay those of
this run's config, so a change accepted with ``tools/train.py --allow-changed`` takes effect), then
restarts the interrupted epoch at the first iteration not yet done: the sampler's
epoch order depends only on (seed, epoch) and a dataset with ``set_epoch(epoch)`` (such as
``SegmentationDataset``) augments item i from (seed, epoch, i) alone, so the remaining batches are
exactly those of an uninterrupted run, and the skipped ones are never loaded. ``log.jsonl`` is
appended to, so records logged after the last checkpoint of a killed run appear twice.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader
from tqdm import tqdm

from pcseg.data.collate import sum_counts
from pcseg.utils.atomic import remove_stale_temporaries
from pcseg.utils.errors import InputError
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .distributed import DistInfo, all_gather_object, barrier, unwrap_model
from .evaluator import Evaluator, to_device
from .hooks import Hook, MethodHooks, MethodModel, TrainState, backbone_of
from .logging import EventWriter, get_logger
from .metrics import SegmentationMetrics, format_table
from .loader import EpochSampler
from .seeding import loader_seed

__all__ = ["Trainer", "Validation", "NonFiniteError", "AMP_DTYPES"]

AMP_DTYPES: dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINTS = ("model_last.pth", "model_best.pth")


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or weights; the message names the step and the last good checkpoint."""


@dataclass(frozen=True)
class Validation:
    """What the trainer needs to evaluate: a loader, an evaluator and the period in epochs (0 = never).

    With a period, the last epoch is always evaluated too, so a run always ends with ``model_best.pth``.
    """

    loader: DataLoader
    evaluator: Evaluator
    period: int = 1


class Trainer:
    """Runs ``max_epochs`` epochs of ``method`` on ``model``; ``hooks`` run in their order after the method's.

    model: what ``method.wrap`` returned, on ``device``, possibly DDP-wrapped. train_loader: a DataLoader
    whose sampler is an :class:`EpochSampler` (and with an explicit ``generator``, reseeded per epoch
    for its workers). scheduler: stepped once per optimiser step. amp: ``"none"``, ``"bf16"`` or
    ``"fp16"`` (CUDA only). grad_clip: max global gradient norm or None. checkpoint_period: iterations between mid-epoch
    checkpoints (0: epoch ends only). Only ``dist.is_main`` writes files.
    """

    def __init__(self, model: nn.Module, method: MethodHooks, optimizer: Optimizer, scheduler: LRScheduler,
                 train_loader: DataLoader, *, max_epochs: int, work_dir: str | Path, device: torch.device,
                 validation: Optional[Validation] = None, amp: str = "none", grad_clip: Optional[float] = None,
                 log_period: int = 10, checkpoint_period: int = 0, dist: DistInfo = DistInfo(),
                 hooks: Sequence[Hook] = ()) -> None:
        if not isinstance(train_loader.sampler, EpochSampler):
            raise TypeError(f"Trainer: train_loader.sampler must be an EpochSampler (resumable order), "
                            f"got {type(train_loader.sampler).__name__}")
        if train_loader.generator is None:
            raise ValueError("Trainer: train_loader needs an explicit generator (reseeded each epoch)")
        if amp not in AMP_DTYPES:
            raise ValueError(f"Trainer: amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
        if amp == "fp16" and device.type != "cuda":
            raise ValueError(f"Trainer: amp 'fp16' needs a cuda device, got {device}; use amp 'bf16' on cpu")
        if max_epochs <= 0 or log_period <= 0 or checkpoint_period < 0:
            raise ValueError(f"Trainer: need max_epochs > 0, log_period > 0, checkpoint_period >= 0; got "
                             f"{max_epochs}, {log_period}, {checkpoint_period}")
        self.model = model
        self.method = method
        self.hooks = tuple(hooks)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.sampler: EpochSampler = train_loader.sampler
        self.max_epochs = max_epochs
        self.work_dir = Path(work_dir)
        self.device = device
        self.validation = validation
        self.amp_dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self.grad_clip = grad_clip
        self.log_period = log_period
        self.checkpoint_period = checkpoint_period
        self.dist = dist
        self.iters_per_epoch = len(train_loader)
        self.best_miou = -math.inf
        self.best_step: Optional[int] = None  # step of the checkpoint in model_best.pth
        self.last_good = "none (no checkpoint written yet)"  # the newest model_last.pth, for error messages
        # step (0-based) of the first non-finite loss on this rank, -1 while none; on the device (no sync per step)
        self._first_nonfinite = torch.full((), -1, dtype=torch.int64, device=device)
        self.state = self._state(0, 0)  # the current iteration's, updated by the loop
        if dist.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        self.logger = get_logger(self.work_dir if dist.is_main else None, dist.is_main)
        self.writer = EventWriter(self.work_dir, enabled=False)  # replaced by train()'s

    # ------------------------------------------------------------------------------------------
    @property
    def bare_model(self) -> nn.Module:
        """The trained module without its DDP wrapper (what ``method.wrap`` returned)."""
        return unwrap_model(self.model)

    @property
    def backbone(self) -> nn.Module:
        """The segmentation network inside the trained module: evaluated, saved as ``"model"``."""
        return backbone_of(self.bare_model)

    def _state(self, epoch: int, step: int) -> TrainState:
        return TrainState(epoch=epoch, step=step, max_epochs=self.max_epochs,
                          max_steps=self.max_epochs * self.iters_per_epoch, iters_per_epoch=self.iters_per_epoch,
                          rank=self.dist.rank, world_size=self.dist.world_size)

    def _call_hooks(self, name: str) -> None:
        """The method's hook ``name`` (with the bare model and the state), then every plain hook's."""
        getattr(self.method, name)(self.bare_model, self.state)
        for hook in self.hooks:
            getattr(hook, name)(self)

    def train(self, resume: bool = False) -> Optional[SegmentationMetrics]:
        """Train to ``max_epochs``; returns the last validation metrics (None if none ran)."""
        if self.dist.is_main:
            for name in CHECKPOINTS:
                for tmp in remove_stale_temporaries(self.work_dir / name):
                    self.logger.warning("removed %s, a temporary left by a killed run", tmp)
        epoch, first_iter = self.resume() if resume else (0, 0)
        self.state = self._state(epoch, epoch * self.iters_per_epoch + first_iter)
        self.writer = writer = EventWriter(self.work_dir, enabled=self.dist.is_main)
        metrics = None
        self.model.train()
        try:
            self._call_hooks("before_train")
            for epoch in range(epoch, self.max_epochs):
                self._train_epoch(epoch, first_iter, writer)
                first_iter = 0
                self._call_hooks("after_epoch")
                last = epoch + 1 == self.max_epochs
                if self.validation is not None and self.validation.period and \
                        ((epoch + 1) % self.validation.period == 0 or last):
                    metrics = self.validate(epoch, writer)
                else:
                    self.save(epoch + 1, 0)
            barrier(self.dist)  # every rank returns only once rank 0 has written its files
        finally:
            self._call_hooks("after_train")
            writer.close()
        return metrics

    def _train_epoch(self, epoch: int, first_iter: int, writer: EventWriter) -> None:
        self.sampler.set_epoch(epoch, start=first_iter * self.train_loader.batch_size)
        dataset_set_epoch = getattr(self.train_loader.dataset, "set_epoch", None)
        if dataset_set_epoch is not None:  # per-(seed, epoch, index) augmentation streams
            dataset_set_epoch(epoch)
        self.train_loader.generator.manual_seed(loader_seed(self.sampler.seed, epoch, self.dist.rank))
        self.state = self._state(epoch, epoch * self.iters_per_epoch + first_iter)
        self._call_hooks("before_epoch")
        window: dict[str, Tensor] = {}
        window_start, window_iters = time.perf_counter(), 0
        reports: list[dict[str, int]] = []  # LoadReport counts of the batches loaded this epoch
        bar = tqdm(total=self.iters_per_epoch, initial=first_iter, desc=f"epoch {epoch + 1}/{self.max_epochs}",
                   disable=not self.dist.is_main, dynamic_ncols=True, leave=False)
        with bar:
            for it, batch in enumerate(self.train_loader, start=first_iter):
                self.state = state = self._state(epoch, epoch * self.iters_per_epoch + it)
                lr = self.optimizer.param_groups[0]["lr"]  # the lr this step uses
                if "load_report" in batch:
                    reports.append(batch["load_report"])
                for hook in self.hooks:
                    hook.before_step(self)
                losses = self.run_step(batch, state)
                for hook in self.hooks:
                    hook.after_step(self)
                for name, value in losses.items():
                    window[name] = window.get(name, 0.0) + value.detach().float()
                window_iters += 1
                bar.update(1)
                done = state.step + 1
                if done % self.log_period == 0 or it + 1 == self.iters_per_epoch:
                    self.check_finite()
                    record = self._log_train(epoch, done, lr, window, window_iters, time.perf_counter() - window_start)
                    writer.write("train", record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                    window, window_start, window_iters = {}, time.perf_counter(), 0
                if self.checkpoint_period and done % self.checkpoint_period == 0 and it + 1 < self.iters_per_epoch:
                    self.save(epoch, it + 1)
        self._log_load_report(epoch, sum_counts(reports), writer)

    def _log_load_report(self, epoch: int, dropped: dict[str, int], writer: EventWriter) -> None:
        """Sum the epoch's LoadReport counts over the ranks; log the non-zero ones (main rank)."""
        total = sum_counts(all_gather_object(dropped, self.dist))
        nonzero = {k: v for k, v in total.items() if v}
        if not nonzero:
            return
        self.logger.warning("epoch %d: the readers dropped or remapped data in this epoch's scenes: %s (the "
                            "per-file warnings are in the data-loader workers' output)", epoch + 1,
                            ", ".join(f"{k} {v}" for k, v in nonzero.items()))
        writer.write("load_report", {"epoch": epoch + 1, "step": (epoch + 1) * self.iters_per_epoch, **total})

    def run_step(self, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        """One optimisation step on ``batch``; returns the method's losses plus ``loss`` (their sum).

        The LR scheduler steps only when the optimiser did: fp16's GradScaler skips the step whose
        gradients hold inf/NaN and lowers its scale, which is how the skip is seen.
        """
        batch = to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            losses = self.method.losses(self.model, batch, state)
        if not losses or "loss" in losses:
            raise ValueError(f"{type(self.method).__name__}.losses must return named losses other than 'loss' "
                             f"(the trainer's name for their sum), got {sorted(losses)} at step {state.step}")
        total = sum(losses.values())
        if not self.scaler.is_enabled():  # fp16's GradScaler skips the steps whose gradients overflow
            bad = ~torch.isfinite(total.detach()) & (self._first_nonfinite < 0)
            self._first_nonfinite = torch.where(bad, state.step, self._first_nonfinite)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        scale = self.scaler.get_scale()  # 1.0 without a sync when the scaler is disabled
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scaler.get_scale() >= scale:  # lowered: the optimiser step was skipped
            self.scheduler.step()
        self.method.after_step(self.bare_model, state)
        return {"loss": total, **losses}

    def _log_train(self, epoch: int, done: int, lr: float, window: dict[str, Tensor], iters: int,
                   seconds: float) -> dict[str, Any]:
        """The ``train`` record of the last ``iters`` iterations: mean losses, the current lr, seconds per iteration."""
        values = {name: float(total) / iters for name, total in window.items()}
        record = {"epoch": epoch + 1, "step": done, "lr": lr,
                  "loss": values.pop("loss"), "time_per_iter": seconds / iters}
        record.update({f"loss_{name}": v for name, v in values.items()})
        return record

    def validate(self, epoch: int, writer: EventWriter) -> SegmentationMetrics:
        """Evaluate, log the table and record, update ``model_best.pth``, rewrite ``model_last.pth``."""
        val = self.validation
        metrics = val.evaluator.evaluate(self.backbone, val.loader, self.method.predict)
        step = (epoch + 1) * self.iters_per_epoch
        writer.write("val", {"epoch": epoch + 1, "step": step, **metrics.as_dict(val.evaluator.class_names)})
        self.logger.info("epoch %d validation:\n%s", epoch + 1, format_table(metrics, val.evaluator.class_names))
        improved = metrics.miou > self.best_miou
        if improved:
            self.best_miou, self.best_step = metrics.miou, step
        self.save(epoch + 1, 0, best=improved)
        return metrics

    # ------------------------------------------------------------------------------------------
    def check_finite(self) -> None:
        """Raise NonFiniteError if any rank had a non-finite loss so far (one host sync; collective)."""
        bad = [s for s in all_gather_object(int(self._first_nonfinite), self.dist) if s >= 0]
        if bad:
            step = min(bad)
            raise NonFiniteError(f"loss is not finite at step {step + 1} (epoch {step // self.iters_per_epoch + 1}); "
                                 f"training stopped and no checkpoint was written after it; the last good "
                                 f"checkpoint: {self.last_good}")

    def _saved_modules(self) -> dict[str, nn.Module]:
        """The method's modules saved in the ``"method"`` entry (:meth:`MethodModel.saved_modules`; none if bare)."""
        model = self.bare_model
        return model.saved_modules() if isinstance(model, MethodModel) else {}

    def _method_entry(self) -> dict[str, Any]:
        """The checkpoint's ``"method"`` entry: each saved module's state dict by name, and the method's state."""
        modules = {name: module.state_dict() for name, module in self._saved_modules().items()}
        state = self.method.state_dict()
        clash = sorted(set(modules) & set(state))
        if clash:
            raise ValueError(f"{type(self.method).__name__}.state_dict uses the name(s) {clash} of its model's modules")
        return {**modules, **state}

    def _check_weights(self, step: int) -> None:
        """Raise NonFiniteError if a floating-point tensor of the model holds NaN or inf (one host sync).

        Checked: what a checkpoint saves, the backbone and the method's saved modules.
        """
        state = {**self.backbone.state_dict(),
                 **{f"{name}.{k}": v for name, module in self._saved_modules().items()
                    for k, v in module.state_dict().items()}}
        names = [k for k, t in state.items() if t.is_floating_point()]
        if not names:
            return
        finite = torch.stack([torch.isfinite(state[k]).all() for k in names])
        if not bool(finite.all()):
            bad = [k for k, ok in zip(names, finite.tolist()) if not ok]
            raise NonFiniteError(f"model weights are not finite after step {step} ({', '.join(bad[:3])}"
                                 f"{', …' if len(bad) > 3 else ''}); training stopped and no checkpoint was "
                                 f"written; the last good checkpoint: {self.last_good}")

    def save(self, epoch: int, it: int, best: bool = False) -> None:
        """Write ``model_best.pth`` when ``best``, then ``model_last.pth``, for resuming at (epoch, it).

        Collective: every rank must call it (RNG states are gathered); only the main rank writes.
        Raises NonFiniteError, writing nothing, after a non-finite loss or with non-finite weights.
        """
        step = epoch * self.iters_per_epoch + it
        self.check_finite()
        self._check_weights(step)
        rng = all_gather_object(get_rng_state(self.device), self.dist)
        if not self.dist.is_main:
            return
        ckpt = {
            "model": self.backbone.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self._method_entry(),
            "epoch": epoch, "iter": it, "step": step,
            "best_miou": self.best_miou, "best_step": self.best_step,
            "rng": rng,
            "data_seed": self.sampler.seed,
            "max_epochs": self.max_epochs, "iters_per_epoch": self.iters_per_epoch,
            "world_size": self.dist.world_size,
        }
        if best:  # first: killed before the next write, the last still records the older best (see resume)
            save_checkpoint(ckpt, self.work_dir / "model_best.pth")
        save_checkpoint(ckpt, self.work_dir / "model_last.pth")
        self.last_good = f"{self.work_dir / 'model_last.pth'} (epoch {epoch + 1}, iteration {it}, step {step})"

    def resume(self) -> tuple[int, int]:
        """Load ``work_dir/model_last.pth`` if present; returns (epoch, iteration) to continue from.

        The optimiser's state and the scheduler's step come from the checkpoint; its hyper-parameters
        (lr, momentum, weight decay, …) and the base learning rates stay this run's. Then
        ``model_best.pth`` is reconciled with the best the checkpoint records (:meth:`_reconcile_best`).
        Raises InputError when the checkpoint was written by a run of another length, data, world size or seed.
        """
        path = self.work_dir / "model_last.pth"
        if not path.is_file():
            self.logger.warning("resume: %s not found; starting from scratch", path)
            return 0, 0
        ckpt = load_checkpoint(path, map_location=self.device)
        for key, ours in (("max_epochs", self.max_epochs), ("iters_per_epoch", self.iters_per_epoch),
                          ("world_size", self.dist.world_size), ("data_seed", self.sampler.seed)):
            if ckpt[key] != ours:
                raise InputError(f"{path}: {key}: expected {ours} as in this run, the checkpoint was written with "
                                 f"{ckpt[key]}; the remaining iterations and LR schedule would not match (same "
                                 f"epochs, data, batch size, processes and seed needed to resume)")
        settings = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        base_lrs = list(self.scheduler.base_lrs)
        self.backbone.load_state_dict(ckpt["model"])
        method_state = dict(ckpt["method"])
        for name, module in self._saved_modules().items():
            if name not in method_state:
                raise InputError(f"{path}: method.{name}: expected the state of the method's module {name!r}, the "
                                 f"checkpoint's method entry holds {sorted(method_state) or 'nothing'}")
            module.load_state_dict(method_state.pop(name))
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as err:  # another number or size of parameter groups
            sizes = [len(group["params"]) for group in self.optimizer.param_groups]
            raise InputError(f"{path}: optimizer: expected the parameter groups of this run's method "
                             f"{type(self.method).__name__} (sizes {sizes}), "
                             f"the checkpoint's do not fit ({err}); it was written by another method or "
                             f"setting, so start again, or take its weights with model.init_from") from None
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scheduler.base_lrs = base_lrs
        for group, ours, lr in zip(self.optimizer.param_groups, settings, self.scheduler.get_lr()):
            group.update(ours, lr=lr)  # the lr of the resumed step under this run's base lr
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.scaler.load_state_dict(ckpt["scaler"])
        self.method.load_state_dict(method_state)
        self.best_miou, self.best_step = ckpt["best_miou"], ckpt.get("best_step")
        set_rng_state(ckpt["rng"][self.dist.rank], self.device)
        self.last_good = f"{path} (epoch {ckpt['epoch'] + 1}, iteration {ckpt['iter']}, step {ckpt['step']})"
        self._reconcile_best(ckpt)
        self.logger.info("resumed from %s at epoch %d, iteration %d (step %d)",
                         path, ckpt["epoch"] + 1, ckpt["iter"], ckpt["step"])
        return ckpt["epoch"], ckpt["iter"]

    def _reconcile_best(self, last: dict[str, Any]) -> None:
        """Make ``model_best.pth`` and the best recorded in ``last`` (model_last.pth's content) agree.

        - best newer than recorded (killed after writing best, before last): keep it and adopt its
          mIoU and step, so the retraced evaluation does not replace it by an equal or worse one;
        - best missing or older than recorded (the file deleted or replaced, or left by a writer that
          wrote last first): when ``last`` is the checkpoint that was best, write it as
          ``model_best.pth``; otherwise warn that the recorded best cannot be restored.
        """
        path = self.work_dir / "model_best.pth"
        recorded = self.best_step
        best = load_checkpoint(path) if path.is_file() else None
        if best is not None and best["step"] == recorded:
            return
        if best is not None and (recorded is None or best["step"] > recorded):
            self.best_miou, self.best_step = best["best_miou"], best["step"]
            self.logger.warning("resume: %s (step %d, mIoU %.4f) is newer than the best %s records; keeping it "
                                "(a run killed between the two writes)", path, best["step"], best["best_miou"],
                                self.work_dir / "model_last.pth")
        elif recorded is not None and last["step"] == recorded:
            if self.dist.is_main:
                save_checkpoint(last, path)
            self.logger.warning("resume: %s was %s; rewrote it from model_last.pth (step %d), the best recorded",
                                path, "missing" if best is None else f"stale (step {best['step']})", recorded)
        elif recorded is not None:
            self.logger.warning("resume: %s is %s, but the best recorded is step %d, which no file holds; it is "
                                "replaced at the next improvement", path,
                                "missing" if best is None else f"from step {best['step']}", recorded)
