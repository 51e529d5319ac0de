"""Prediction | ground truth | errors of one scene, as a PNG and coloured PLY files."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pcseg.vis.palette import error_colors, legend_entries
from pcseg.vis.ply import save_ply
from pcseg.vis.render import render_panels

__all__ = ["save_prediction_views"]


def save_prediction_views(points: np.ndarray, pred: np.ndarray, target: np.ndarray, out_dir: str | Path, name: str,
                          palette: np.ndarray, ignore_index: int = -100, ceiling_clip: float | None = 0.3,
                          class_names: Sequence[str] | None = None) -> dict[str, Path]:
    """Write ``<name>.png`` (prediction | ground truth | errors) and ``<name>_pred.ply`` / ``<name>_gt.ply``.

    points: (N, 3) float; pred, target: (N,) int class ids (target may hold ``ignore_index``).
    palette: (C, 3) uint8 class colours. class_names: C names; given, the PNG gets a legend of the
    classes present in the pictured prediction or ground truth (:func:`legend_entries`).
    ceiling_clip: indoor scenes seen from above are hidden by their ceiling; points higher than
    ``max z - ceiling_clip`` metres are left out of the picture (never out of the PLY files). None keeps all.
    ``name`` may contain ``/`` (``Area_5/office_1``); it becomes ``__`` in file names.
    Returns the written paths by kind (``png``, ``pred_ply``, ``gt_ply``).
    """
    points, pred, target = np.asarray(points), np.asarray(pred), np.asarray(target)
    if not (len(points) == len(pred) == len(target)):
        raise ValueError(f"{name}: points, pred and target must have one row per point, got "
                         f"{len(points)}, {len(pred)}, {len(target)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "__")
    keep = np.ones(len(points), dtype=bool)
    if ceiling_clip is not None and len(points):
        keep = points[:, 2] < points[:, 2].max() - ceiling_clip
    paths = {"png": out_dir / f"{stem}.png", "pred_ply": out_dir / f"{stem}_pred.ply",
             "gt_ply": out_dir / f"{stem}_gt.ply"}
    pred_shown, target_shown = pred[keep], target[keep]
    legend = () if class_names is None else legend_entries([pred_shown, target_shown], class_names, palette,
                                                           ignore_index)
    render_panels(points[keep], [pred_shown, target_shown, error_colors(pred_shown, target_shown, ignore_index)],
                  ["prediction", "ground truth", "errors"], paths["png"], palette, ignore_index=ignore_index,
                  legend=legend)
    save_ply(paths["pred_ply"], points, labels=pred, palette=palette, ignore_index=ignore_index)
    save_ply(paths["gt_ply"], points, labels=target, palette=palette, ignore_index=ignore_index)
    return paths
