"""The one validation loop: voxel logits → point predictions → confusion matrix → metrics.

Predictions are scored on the original points, not on voxels: the voxel argmax is read back through
``batch["inverse"]`` and compared with ``batch["point_labels"]``. With several processes each scores
its shard and the confusion matrices are summed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcseg.data.formats import IGNORE_INDEX

from .distributed import DistInfo, all_reduce_sum
from .metrics import SegmentationMetrics, compute_metrics, confusion_matrix

__all__ = ["Evaluator", "to_device"]

PredictFn = Callable[[nn.Module, Mapping[str, Any]], Tensor]


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A copy of ``batch`` with every tensor moved to ``device`` (other values as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Evaluator:
    """Scores a model on a loader of collated batches.

    num_classes: C. class_names: C names for tables and logs. device: where the model runs.
    dist: the process's place in the job (confusion matrices are summed over it).
    """

    def __init__(self, num_classes: int, class_names: Optional[Sequence[str]] = None, *,
                 device: torch.device, dist: DistInfo = DistInfo(), ignore_index: int = IGNORE_INDEX) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"Evaluator: {len(class_names)} class names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
        self.device = device
        self.dist = dist
        self.ignore_index = ignore_index

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable[Mapping[str, Any]], predict: PredictFn,
                 save_dir: Optional[Path] = None) -> SegmentationMetrics:
        """Run ``predict(model, batch) -> (ΣM, C) voxel logits`` over ``loader`` in eval mode.

        save_dir: when given, writes ``<save_dir>/<scene name>.npy`` (N,) int32 point predictions per scene.
        The model's train/eval mode is restored afterwards.
        """
        was_training = model.training
        model.eval()
        confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self.device)
        try:
            for batch in loader:
                batch = to_device(batch, self.device)
                point_pred = predict(model, batch).argmax(1)[batch["inverse"]]
                confusion += confusion_matrix(point_pred, batch["point_labels"], self.num_classes, self.ignore_index)
                if save_dir is not None:
                    self._save(point_pred, batch, Path(save_dir))
        finally:
            model.train(was_training)
        return compute_metrics(all_reduce_sum(confusion, self.dist))

    @staticmethod
    def _save(point_pred: Tensor, batch: Mapping[str, Any], save_dir: Path) -> None:
        pred = point_pred.cpu().numpy().astype(np.int32)
        scene = batch["point_batch"].cpu().numpy()
        for i, name in enumerate(batch["names"]):
            path = save_dir / f"{name}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, pred[scene == i])
