"""Contextual masked training (CPCM, ICCV'23) as a :class:`MethodHooks` plug-in.

Each batch holds two augmented views of the same scenes (:mod:`pcseg.data.views`). One shared
network sees, in a single forward (so BatchNorm normalises all branches with the same statistics):
view 1, view 2 and a RegionMask-ed copy of view 2. Losses:

- ``ce``: cross-entropy on the labelled voxels of views 1 and 2 (the unmasked branches);
- ``js``: JS divergence from the stop-gradient prediction of view ``target_view`` to the masked
  prediction, compared on the *points* (each view's voxel probabilities are read through its
  inverse map, so the two views' voxels correspond), times ``weight`` ramped up linearly over
  ``rampup_epochs`` epochs.

``consistency_only`` drops the mask (the ablation "consistency" of the paper): the forward holds
views 1 and 2 and ``js`` goes from view 1 (stop-gradient) to view 2.

Each scene's mask is drawn from :func:`~pcseg.methods.common.step_generator` of the run seed
(``cfg.seed``, given by ``build_trainer``), the step and the scene's position in the joined batch of
all processes (:meth:`~pcseg.engine.hooks.TrainState.joined_positions`), so masks are reproducible,
a resumed run draws those of an uninterrupted one and ``torchrun --nproc_per_node=2`` draws those
of one process on the joined batch. CPCM owns no modules: the trainer trains the backbone itself.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.views import VIEW2_KEYS
from pcseg.engine.hooks import MethodHooks, TrainState
from pcseg.methods.common import js_divergence, labelled_cross_entropy, rampup_weight, step_generator
from pcseg.methods.registry import METHODS
from pcseg.sparse import SparseTensor

from .region_mask import RegionMask

__all__ = ["CPCM"]


@METHODS.register
class CPCM(MethodHooks):
    """Region-wise masking + contextual masked training (see the module docstring).

    mask_ratio, grid: :class:`RegionMask` settings (paper: 0.75; grid 4 at 0.1 %, 8 at 0.01 % labels).
    weight: consistency weight after the ramp-up (paper: 5 at 0.1 %, 10 at 0.01 %).
    rampup_epochs: length of the linear ramp of the weight (paper: 5).
    target_view: 1 or 2, the unmasked view whose (stop-gradient) prediction the masked view matches.
    consistency_only: no mask; consistency from view 1 to view 2.
    ignore_index: label of unlabelled voxels. The masks' seed is the run's (``self.seed``, see
    :meth:`~pcseg.engine.hooks.MethodHooks.set_seed`).
    """

    def __init__(self, mask_ratio: float = 0.75, grid: int = 4, weight: float = 5.0, rampup_epochs: float = 5.0,
                 target_view: int = 1, consistency_only: bool = False, ignore_index: int = IGNORE_INDEX) -> None:
        if target_view not in (1, 2):
            raise ValueError(f"CPCM.target_view: expected 1 or 2, got {target_view!r}")
        if consistency_only and target_view != 1:
            raise ValueError("CPCM.target_view: consistency_only compares view 2 with view 1; target_view must be 1")
        if weight < 0 or rampup_epochs < 0:
            raise ValueError(f"CPCM: expected weight >= 0 and rampup_epochs >= 0, got {weight}, {rampup_epochs}")
        self.region_mask = RegionMask(mask_ratio, grid)
        self.weight = float(weight)
        self.rampup_epochs = float(rampup_epochs)
        self.target_view = target_view
        self.consistency_only = consistency_only
        self.ignore_index = ignore_index

    def branches(self, batch: Mapping[str, Any], state: TrainState) -> list[tuple[Tensor, Tensor]]:
        """(feats, coords without offset) of each branch: view 1, view 2 and, unless consistency_only,
        the masked view 2."""
        missing = [k for k in VIEW2_KEYS if k not in batch]
        if missing:
            raise KeyError(f"CPCM needs two views per scene but the batch lacks {', '.join(missing)}; use "
                           f"data.name: TwoViews (pcseg.data.views) with kwargs.dataset naming the base dataset")
        out = [(batch["feats"], batch["coords"]), (batch["view2_feats"], batch["view2_coords"])]
        if not self.consistency_only:
            generators = [step_generator(self.seed, state.step, position)
                          for position in state.joined_positions(len(batch["names"]))]
            masked = self.region_mask.apply(batch["view2_feats"], batch["view2_coords"], generators)
            out.append((masked, batch["view2_coords"]))
        return out

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        branches = self.branches(batch, state)
        num_scenes = len(batch["names"])
        coords = []
        for k, (_, c) in enumerate(branches):  # branch k holds scenes k*B … k*B+B-1
            c = c.clone()
            c[:, 0] += k * num_scenes
            coords.append(c)
        logits = model(SparseTensor(torch.cat([f for f, _ in branches]), torch.cat(coords))).F.float()
        per_branch = torch.split(logits, [len(c) for c in coords])
        labels = torch.cat([batch["labels"], batch["view2_labels"]])
        ce = labelled_cross_entropy(torch.cat(per_branch[:2]), labels, self.ignore_index)
        inverse = (batch["inverse"], batch["view2_inverse"])
        target_view = 1 if self.consistency_only else self.target_view
        target = torch.softmax(per_branch[target_view - 1].detach(), dim=1)[inverse[target_view - 1]]
        js = js_divergence(target, per_branch[-1][inverse[1]])
        return {"ce": ce, "js": rampup_weight(self.weight, self.rampup_epochs, state) * js}
