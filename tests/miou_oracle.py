"""mIoU oracles for the end-to-end tool tests, independent of pcseg's metric code.

:func:`numpy_miou` counts a confusion matrix in numpy; :func:`checkpoint_val_miou` reruns a work
directory's saved weights on its validation split and scores them with it, so a test can assert
that the mIoU a tool logged is the one of the model it saved; :func:`view_png_miou` scores the
label images a tool wrote against its ground-truth images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pcseg.data.formats import IGNORE_INDEX
from pcseg.engine.build import Runtime, build_validation
from pcseg.engine.checkpoint import load_checkpoint
from pcseg.engine.config import load_config, thaw
from pcseg.engine.distributed import DistInfo, resolve_device
from pcseg.models import build_model
from pcseg.sparse import SparseTensor
from pcseg.vis import get_palette
from pcseg.vis.palette import IGNORE_COLOR


def numpy_miou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> float:
    """Mean IoU over the classes present in ``target`` or predicted (the ScanNet / S3DIS convention).

    pred, target: (N,) integer class ids; points whose ``target`` is ``ignore_index`` are skipped.
    """
    keep = target != ignore_index
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (target[keep], pred[keep]), 1)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@torch.no_grad()
def checkpoint_val_miou(work_dir: Path) -> float:
    """The :func:`numpy_miou` of ``work_dir/model_last.pth``'s backbone on the validation split of its config.yaml.

    Voxel logits ``model(SparseTensor(feats, coords)).F`` → argmax → points through ``inverse``,
    scored against ``point_labels`` of every validation batch together.
    """
    cfg = load_config(work_dir / "config.yaml")
    device = resolve_device(cfg.device, DistInfo())
    loader = build_validation(cfg, Runtime(DistInfo(), device)).loader
    spec = {k: v for k, v in thaw(cfg.model).items() if k != "init_from"}
    model = build_model(spec).to(device).eval()
    model.load_state_dict(load_checkpoint(work_dir / "model_last.pth", map_location=device)["model"])
    preds, labels = [], []
    for batch in loader:
        logits = model(SparseTensor(batch["feats"].to(device), batch["coords"].to(device))).F
        preds.append(logits.argmax(1).cpu().numpy()[batch["inverse"].numpy()])
        labels.append(batch["point_labels"].numpy())
    return numpy_miou(np.concatenate(preds), np.concatenate(labels), spec["num_classes"])


def _decode(png: Path, palette: np.ndarray) -> np.ndarray:
    """(H*W,) int64 palette indices of the RGB image ``png``; IGNORE_COLOR → IGNORE_INDEX (other colours fail)."""
    colours = np.concatenate([palette, np.asarray([IGNORE_COLOR], np.uint8)])
    assert len(np.unique(colours, axis=0)) == len(colours), "palette colours must be distinct to decode"
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 1, 3)
    match = (pixels == colours[None]).all(-1)  # (H*W, C + 1)
    assert match.any(1).all(), f"{png}: colours outside the palette"
    index = match.argmax(1)
    return np.where(index == len(palette), IGNORE_INDEX, index)


def view_png_miou(folder: Path, num_classes: int) -> float:
    """The :func:`numpy_miou` of every ``<view>_labels.png`` in ``folder`` against its ``<view>_gt.png``, together.

    Colours are decoded with ``get_palette(num_classes)``; ground-truth pixels in IGNORE_COLOR are not scored.
    """
    palette = get_palette(num_classes)
    gts = sorted(folder.glob("*_gt.png"))
    assert gts, f"{folder}: no *_gt.png"
    pred = np.concatenate([_decode(p.with_name(p.name.replace("_gt.png", "_labels.png")), palette) for p in gts])
    target = np.concatenate([_decode(p, palette) for p in gts])
    return numpy_miou(pred, target, num_classes)
