"""What the one trainer runs besides its loop: one training method and a list of plain hooks.

:class:`MethodHooks` turns a batch into named losses; the trainer sums them, back-propagates,
clips, steps and logs each. A method that needs modules of its own (heads, teachers) wraps the
backbone in one :class:`MethodModel` (:meth:`MethodHooks.wrap`), which the trainer moves to the
device, hands to DistributedDataParallel, checkpoints and exports; the trainer never asks which
method runs. Optional method hooks run at fixed points of the loop with the bare (unwrapped)
model; ``after_train`` runs in a ``finally``. ``state`` is a :class:`TrainState` snapshot, never
shared mutable state.

:class:`Hook` s are what is not a method (detectron2 style): a timer, a profiler, an extra
evaluation. Each gets the trainer at ``before_train``, ``before_epoch``, ``before_step``,
``after_step``, ``after_epoch`` and ``after_train``; configs list them by name from :data:`HOOKS`
(``train.hooks: [{name: StepTimer}, {name: Profiler, start_step: 5}]``).

``model`` given to :meth:`MethodHooks.losses` may be wrapped in DistributedDataParallel: call it
(``model(x)``) so gradients synchronise; the other method hooks get the bare model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX
from pcseg.sparse import SparseTensor
from pcseg.utils.atomic import atomic_path
from pcseg.utils.registry import Registry

if TYPE_CHECKING:  # the trainer imports this module
    from .trainer import Trainer

__all__ = ["TrainState", "MethodModel", "backbone_of", "MethodHooks", "Supervised", "sparse_input", "Hook", "HOOKS",
           "StepTimer", "Profiler"]


@dataclass(frozen=True)
class TrainState:
    """Where the loop is. epoch: 0-based; step: global 0-based iteration; max_steps = max_epochs * iters_per_epoch.

    rank, world_size: this process's place in the job (0 and 1 in one process).
    """

    epoch: int
    step: int
    max_epochs: int
    max_steps: int
    iters_per_epoch: int
    rank: int = 0
    world_size: int = 1

    def joined_positions(self, count: int) -> list[int]:
        """Positions in the joined batch of all processes of this process's ``count`` samples of the step.

        :class:`~pcseg.engine.loader.EpochSampler` gives rank ``r`` of ``W`` the epoch-order positions
        ``r, r + W, …``, so sample ``k`` of this process's batch is sample ``k * W + r`` of the batch of
        ``W * B`` that one process would see at the same step. A method drawing random numbers per
        sample keyed by this position (with the step) draws the same numbers in any number of processes.
        """
        return [k * self.world_size + self.rank for k in range(count)]


def sparse_input(batch: Mapping[str, Any]) -> SparseTensor:
    """The model input of a collated batch: ``SparseTensor(batch["feats"], batch["coords"])``."""
    return SparseTensor(batch["feats"], batch["coords"])


class MethodModel(nn.Module):
    """The one module a method trains: ``backbone`` (the segmentation network) plus the modules the method owns.

    Subclasses add their modules as children and define ``forward`` to compute, in one call, all
    that carries gradients (DistributedDataParallel synchronises only what runs inside its forward).
    A child that must not train (a frozen or EMA teacher) has ``requires_grad`` False: DDP's
    gradient all-reduce and the optimiser skip it, while DDP still gives every process rank 0's copy
    when it is built and its buffers before each forward.

    Checkpoints hold ``backbone.state_dict()`` as ``"model"`` (what ``tools/test.py``,
    ``model.init_from`` and the exported ``backbone.pth`` read) and ``{name: child.state_dict()}`` of
    every other child in ``"method"``, except the children named in ``rebuilt``: modules built from the
    config alone (a frozen network read from its own weights file), not saved.
    """

    rebuilt: tuple[str, ...] = ()

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def saved_modules(self) -> dict[str, nn.Module]:
        """The children saved in the checkpoint's ``"method"`` entry: all but ``backbone`` and ``rebuilt``."""
        return {name: child for name, child in self.named_children()
                if name != "backbone" and name not in self.rebuilt}


def backbone_of(model: nn.Module) -> nn.Module:
    """The segmentation network of a bare trained model: a :class:`MethodModel`'s ``backbone``, else ``model``."""
    return model.backbone if isinstance(model, MethodModel) else model


class MethodHooks:
    """Base of every training method. Subclasses implement :meth:`losses`; the rest is optional."""

    seed: int = 0  # the run seed, set by set_seed; methods derive their random generators from it

    def set_seed(self, seed: int) -> None:
        """Take the run seed ``cfg.seed``, the same in every process (``build_trainer`` calls it before :meth:`wrap`).

        A method that draws random numbers (CPCM's masks, HPAL's student noise) draws them per sample
        from ``self.seed``, the step and the sample's position in the joined batch
        (:func:`pcseg.methods.common.sample_generators`), so two processes draw what one process
        draws for the joined batch.
        """
        self.seed = int(seed)

    def wrap(self, backbone: nn.Module) -> nn.Module:
        """The module the trainer trains: ``backbone`` itself (default) or a :class:`MethodModel` around it.

        Called once by ``build_trainer`` with the backbone on its device (pre-trained weights of
        ``model.init_from`` already loaded), before the optimiser and the DDP wrapper exist; the
        result is moved to the same device.
        """
        return backbone

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        """Named scalar losses for one batch (already on the device); the trainer sums them.

        model: what :meth:`wrap` returned, possibly inside DistributedDataParallel.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement losses(model, batch, state)")

    def predict(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        """Voxel logits (ΣM, num_classes) used for evaluation; ``model`` is the backbone; default ``model(x).F``."""
        return model(sparse_input(batch)).F

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (``torch.optim`` dicts; a group without ``lr`` gets ``train.lr``).

        Called once by ``build_trainer`` with what :meth:`wrap` returned, on its device, before the
        optimiser and the DDP wrapper exist; a method that freezes parts of the model sets
        ``requires_grad`` here. Default: every parameter that requires a gradient.
        """
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def before_train(self, model: nn.Module, state: TrainState) -> None:
        """Once, before the first iteration (also when resuming)."""

    def before_epoch(self, model: nn.Module, state: TrainState) -> None:
        """At the start of every epoch (also a resumed partial one)."""

    def after_step(self, model: nn.Module, state: TrainState) -> None:
        """After the optimiser and LR steps (e.g. an EMA teacher update)."""

    def after_epoch(self, model: nn.Module, state: TrainState) -> None:
        """At the end of every epoch, before evaluation and the checkpoint."""

    def after_train(self, model: nn.Module, state: TrainState) -> None:
        """Once at the end, also when training raised."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints besides the model's modules (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} has no state but the checkpoint holds keys {sorted(state)}")


class Supervised(MethodHooks):
    """Cross-entropy on the labelled voxels (``batch["labels"] != ignore_index``).

    The mean runs over the labelled voxels of the batch; a batch without any gives a zero loss that
    still touches every parameter (so DDP's gradient all-reduce sees them all).

    freeze_backbone: linear probing. Only the model's classifier ``model.head`` trains; every other
    parameter is frozen and every other module kept in eval mode.
    frozen_bn: with ``freeze_backbone``, whether the backbone's BatchNorm running statistics stay as
        loaded (True, SLidR's protocol) or are re-estimated on the training data (False: the BatchNorm
        layers run in train mode, their affine parameters stay frozen). A randomly initialised backbone
        keeps mean 0 / variance 1 statistics that do not fit its features, so a fair random-init probe
        needs False.
    head_lr: learning rate of ``model.head`` in its own optimiser group (SLidR fine-tunes its backbone
        at 0.05 and the classifier at 2.0); None = ``train.lr`` for every parameter.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, freeze_backbone: bool = False, frozen_bn: bool = True,
                 head_lr: Optional[float] = None) -> None:
        if head_lr is not None and head_lr <= 0:
            raise ValueError(f"Supervised.head_lr: expected > 0 or None, got {head_lr}")
        self.ignore_index = ignore_index
        self.freeze_backbone = freeze_backbone
        self.frozen_bn = frozen_bn
        self.head_lr = head_lr

    @staticmethod
    def _head(model: nn.Module) -> nn.Module:
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Module):
            raise TypeError(f"Supervised.freeze_backbone: expected the model's classifier at model.head, but "
                            f"{type(model).__name__} has none")
        return head

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if not self.freeze_backbone and self.head_lr is None:
            return super().param_groups(model)
        head = self._head(model)
        head_group: dict[str, Any] = {"params": list(head.parameters())}
        if self.head_lr is not None:
            head_group["lr"] = self.head_lr
        if self.freeze_backbone:
            model.requires_grad_(False)
            head.requires_grad_(True)
            return [head_group]
        in_head = {id(p) for p in head_group["params"]}
        return [{"params": [p for p in model.parameters() if id(p) not in in_head]}, head_group]

    def before_epoch(self, model: nn.Module, state: TrainState) -> None:
        if self.freeze_backbone:  # after the trainer's model.train() and every evaluation's restore
            model.eval()
            if not self.frozen_bn:
                for module in model.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.train()
            self._head(model).train()

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        logits = model(sparse_input(batch)).F.float()
        labels = batch["labels"]
        total = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="sum")
        count = (labels != self.ignore_index).sum().clamp(min=1)
        return {"ce": total / count}


# ---------------------------------------------------------------------------------------------
# plain hooks


class Hook:
    """A plain hook of the training loop, not a training method (timer, profiler, extra evaluation).

    Each method gets the :class:`~pcseg.engine.trainer.Trainer`; ``trainer.state`` is the current
    :class:`TrainState`, ``trainer.writer`` the ``log.jsonl``/TensorBoard writer (main process only
    writes), ``trainer.work_dir`` and ``trainer.dist`` where it runs. ``before_step``/``after_step``
    run around each optimisation step, after the batch is loaded; ``after_train`` in a ``finally``.
    """

    def before_train(self, trainer: Trainer) -> None:
        """Once, before the first iteration (also when resuming)."""

    def before_epoch(self, trainer: Trainer) -> None:
        """At the start of every epoch, before its first batch is loaded."""

    def before_step(self, trainer: Trainer) -> None:
        """Before each optimisation step, with its batch loaded."""

    def after_step(self, trainer: Trainer) -> None:
        """After each optimisation step (the method's ``after_step`` included)."""

    def after_epoch(self, trainer: Trainer) -> None:
        """At the end of every epoch, after the method's ``after_epoch``, before evaluation."""

    def after_train(self, trainer: Trainer) -> None:
        """Once at the end, also when training raised."""


HOOKS = Registry("hook")


@HOOKS.register
class StepTimer(Hook):
    """Each iteration's time split into waiting for the batch and the step, logged as means over log periods.

    data_time: from the end of the previous step (or the epoch's start) to the start of this one
    (the data loader, the method's per-batch host work excluded); step_time: the optimisation step
    (forward, backward, optimiser, the method's ``after_step``). Every ``train.log_period``
    iterations and at each epoch end a record ``{"type": "timer", "epoch", "step", "data_time",
    "step_time"}`` (seconds per iteration) goes to ``log.jsonl``/TensorBoard.
    """

    def __init__(self) -> None:
        self._mark = 0.0
        self._data = self._step = 0.0
        self._count = 0

    def before_epoch(self, trainer: Trainer) -> None:
        self._mark = time.perf_counter()
        self._data = self._step = 0.0
        self._count = 0

    def before_step(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self._data += now - self._mark
        self._mark = now

    def after_step(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self._step += now - self._mark
        self._mark = now
        self._count += 1
        state = trainer.state
        done = state.step + 1
        if done % trainer.log_period == 0 or done % state.iters_per_epoch == 0:
            trainer.writer.write("timer", {"epoch": state.epoch + 1, "step": done,
                                           "data_time": self._data / self._count,
                                           "step_time": self._step / self._count})
            self._data = self._step = 0.0
            self._count = 0
            self._mark = time.perf_counter()


@HOOKS.register
class Profiler(Hook):
    """``torch.profiler`` over ``num_steps`` iterations from global iteration ``start_step`` (0-based), main process.

    Writes a Chrome trace (chrome://tracing, Perfetto) ``<work_dir>/profiler/steps_<first>-<last>.json``
    atomically and logs its path; CUDA activity is recorded too on a GPU. A run that ends (or raises)
    inside the window writes the steps it profiled. record_shapes: record the operators' input shapes.
    """

    def __init__(self, start_step: int = 1, num_steps: int = 2, record_shapes: bool = False) -> None:
        if start_step < 0 or num_steps < 1:
            raise ValueError(f"Profiler: expected start_step >= 0 and num_steps >= 1, got {start_step}, {num_steps}")
        self.start_step, self.num_steps, self.record_shapes = start_step, num_steps, record_shapes
        self._profile: Optional[torch.profiler.profile] = None
        self._first = 0

    def before_step(self, trainer: Trainer) -> None:
        step = trainer.state.step
        inside = self.start_step <= step < self.start_step + self.num_steps
        if self._profile is None and trainer.dist.is_main and inside:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if trainer.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profile = torch.profiler.profile(activities=activities, record_shapes=self.record_shapes)
            self._profile.__enter__()
            self._first = step

    def after_step(self, trainer: Trainer) -> None:
        if self._profile is not None and trainer.state.step + 1 >= self.start_step + self.num_steps:
            self._export(trainer, trainer.state.step)

    def after_train(self, trainer: Trainer) -> None:
        if self._profile is not None:
            self._export(trainer, trainer.state.step)

    def _export(self, trainer: Trainer, last: int) -> None:
        profile, self._profile = self._profile, None
        profile.__exit__(None, None, None)
        path = Path(trainer.work_dir) / "profiler" / f"steps_{self._first}-{last}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            profile.export_chrome_trace(str(tmp))
        trainer.logger.info("profiler: iterations %d-%d written to %s", self._first, last, path)
