"""Segmentation metrics from a confusion matrix.

Conventions (those of the ScanNet / S3DIS benchmarks):

- ``confusion[t, p]`` counts points of ground-truth class ``t`` predicted as ``p``; points whose
  ground truth is ``ignore_index`` are skipped.
- IoU of class c = TP / (TP + FP + FN); it is undefined (NaN) when the union is zero, i.e. the
  class is neither in the ground truth nor predicted.
- **mIoU is the mean over the classes with a nonzero union** (present in the ground truth or
  predicted). A class that is predicted but absent from the ground truth therefore counts with
  IoU 0; a class absent from both is left out.
- class accuracy = TP / (points of that class); mean class accuracy averages over the classes
  present in the ground truth. Overall accuracy = trace / total.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "SegmentationMetrics", "compute_metrics", "format_table"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = -100) -> Tensor:
    """Count (target, prediction) pairs.

    pred, target: (N,) integer class ids on the same device; ``target == ignore_index`` skipped.
    Returns (num_classes, num_classes) int64, rows = ground truth, columns = prediction.
    Raises ValueError when a kept id is outside [0, num_classes).
    """
    if pred.shape != target.shape or pred.ndim != 1:
        raise ValueError(f"pred and target must both be (N,), got {tuple(pred.shape)} and {tuple(target.shape)}")
    keep = target != ignore_index
    pred, target = pred[keep].long(), target[keep].long()
    for name, ids in (("target", target), ("pred", pred)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
            raise ValueError(f"{name} ids must be in [0, {num_classes}) or ignore_index={ignore_index}, "
                             f"got range [{int(ids.min())}, {int(ids.max())}]")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationMetrics:
    """Metrics of one confusion matrix. Per-class tensors are (C,) float64 with NaN where undefined."""

    iou: Tensor
    class_acc: Tensor
    miou: float
    acc: float
    macc: float
    confusion: Tensor  # (C, C) int64

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, object]:
        """JSON-friendly summary: scalars plus ``iou`` keyed by class name (None where undefined)."""
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {"miou": self.miou, "acc": self.acc, "macc": self.macc,
                "iou": {n: (None if v != v else v) for n, v in zip(names, self.iou.tolist())}}


def compute_metrics(confusion: Tensor) -> SegmentationMetrics:
    """IoU per class, mIoU, overall and mean class accuracy from a (C, C) confusion matrix."""
    conf = confusion.detach().cpu().to(torch.float64)
    tp = conf.diagonal()
    gt = conf.sum(1)
    predicted = conf.sum(0)
    union = gt + predicted - tp
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    class_acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    total = float(conf.sum())
    return SegmentationMetrics(
        iou=iou,
        class_acc=class_acc,
        miou=float(iou.nanmean()) if bool((union > 0).any()) else float("nan"),
        acc=float(tp.sum()) / total if total else float("nan"),
        macc=float(class_acc.nanmean()) if bool((gt > 0).any()) else float("nan"),
        confusion=confusion.detach().cpu(),
    )


def format_table(metrics: SegmentationMetrics, class_names: Sequence[str] | None = None) -> str:
    """A per-class text table (IoU, accuracy, GT points) followed by mIoU / mAcc / OA, in percent."""
    num_classes = len(metrics.iou)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries, the confusion matrix {num_classes} classes")
    width = max([len(n) for n in names] + [5])
    gt = metrics.confusion.sum(1).tolist()

    def pct(v: float) -> str:
        return "    -" if v != v else f"{100 * v:5.1f}"

    lines = [f"{'class':<{width}}  {'IoU':>5}  {'Acc':>5}  {'points':>10}"]
    lines += [f"{n:<{width}}  {pct(i)}  {pct(a)}  {g:>10d}"
              for n, i, a, g in zip(names, metrics.iou.tolist(), metrics.class_acc.tolist(), gt)]
    lines.append(f"{'mIoU':<{width}}  {pct(metrics.miou)}")
    lines.append(f"{'mAcc':<{width}}  {pct(metrics.macc)}")
    lines.append(f"{'OA':<{width}}  {pct(metrics.acc)}")
    return "\n".join(lines)
