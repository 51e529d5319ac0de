"""The method interface of the one trainer (:class:`MethodHooks`) and the default :class:`Supervised`.

A method turns a batch into named losses; the trainer sums them, back-propagates, clips, steps
and logs each. Optional hooks run at fixed points of the loop (detectron2 style); ``after_train``
runs in a ``finally``. ``state`` is a :class:`TrainState` snapshot, never shared mutable state.

``model`` given to :meth:`MethodHooks.losses` may be wrapped in DistributedDataParallel: call it
(``model(x)``) so gradients synchronise; the other hooks get the bare model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX
from pcseg.sparse import SparseTensor

__all__ = ["TrainState", "MethodHooks", "Supervised", "sparse_input"]


@dataclass(frozen=True)
class TrainState:
    """Where the loop is. epoch: 0-based; step: global 0-based iteration; max_steps = max_epochs * iters_per_epoch."""

    epoch: int
    step: int
    max_epochs: int
    max_steps: int
    iters_per_epoch: int


def sparse_input(batch: Mapping[str, Any]) -> SparseTensor:
    """The model input of a collated batch: ``SparseTensor(batch["feats"], batch["coords"])``."""
    return SparseTensor(batch["feats"], batch["coords"])


class MethodHooks:
    """Base of every training method. Subclasses implement :meth:`losses`; the rest is optional."""

    seed: int = 0  # this process's run seed, set by set_seed; methods derive their random generators from it

    def set_seed(self, seed: int) -> None:
        """Take this process's run seed, ``cfg.seed + rank`` (``build_trainer`` calls it before :meth:`param_groups`).

        A method that draws random numbers (CPCM's masks, HPAL's student noise) derives them from
        ``self.seed`` and the step (:func:`pcseg.methods.common.step_generator`).
        """
        self.seed = int(seed)

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        """Named scalar losses for one batch (already on the device); the trainer sums them."""
        raise NotImplementedError(f"{type(self).__name__} must implement losses(model, batch, state)")

    def predict(self, model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
        """Voxel logits (ΣM, num_classes) used for evaluation; default: ``model(x).F``."""
        return model(sparse_input(batch)).F

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (``torch.optim`` dicts; a group without ``lr`` gets ``train.lr``).

        Called once by ``build_trainer`` with the bare model on its device, before the optimiser and
        the DDP wrapper exist: a method that trains modules of its own builds them here; one that
        freezes parts of the model sets ``requires_grad`` here. Default: every model parameter.
        """
        return [{"params": list(model.parameters())}]

    def before_train(self, model: nn.Module, state: TrainState) -> None:
        """Once, before the first iteration (also when resuming)."""

    def before_epoch(self, model: nn.Module, state: TrainState) -> None:
        """At the start of every epoch (also a resumed partial one)."""

    def after_backward(self, model: nn.Module, state: TrainState) -> None:
        """After ``backward()`` (gradients unscaled), before clipping and the optimiser step."""

    def after_step(self, model: nn.Module, state: TrainState) -> None:
        """After the optimiser and LR steps (e.g. an EMA teacher update)."""

    def after_epoch(self, model: nn.Module, state: TrainState) -> None:
        """At the end of every epoch, before evaluation and the checkpoint."""

    def after_train(self, model: nn.Module, state: TrainState) -> None:
        """Once at the end, also when training raised."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints (tensors and plain values only)."""
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
