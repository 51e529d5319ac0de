"""3D open-vocabulary segmentation: fit a feature radiance field, then label views and points by text.

    python tools/ovs.py --config configs/ovs/synthetic_room.yaml --queries "chair,table,sofa" [--out DIR] [key=value …]

Loads or renders the posed views (``data``), encodes 2D features (``features``), fits the field on
the fitted views (``fit``, progress bar), then writes to ``DIR`` (default ``work_dir`` or
``work_dirs/ovs/<config name>``):

- ``<view>_rgb.png`` rendered colours, ``<view>_labels.png`` rendered relevancy labels and, when
  ground truth exists, ``<view>_gt.png`` (query classes only; others grey) for each held-out view;
- ``points.ply`` the point cloud (synthetic rooms) coloured by the field's label at each point,
  with an int ``label`` property (query index);
- ``metrics.json`` held-out view and point mIoU over the queries when ground truth exists
  (``view_miou``, ``point_miou``: the field's labels), plus the per-view 2D baseline on the
  held-out views (``view_2d_miou``: their own 2D features) and per-query IoUs of both
  (``view_iou``, ``view_2d_iou``); all are printed.

``--queries`` (comma-separated) replaces the config's ``queries``; with neither, the scene's class
names are the queries. A query that is no class name (a synonym such as ``couch``) is scored
against the class the config's ``query_classes`` pairs it with (``[[couch, sofa]]``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from pcseg.engine.cli import tool_errors
from pcseg.engine.config import load_config
from pcseg.methods.ovs.encoders import TextEncoder
from pcseg.methods.ovs.pipeline import (OVSConfig, OVSScene, build_text_encoder, encode_views, fit_scene, label_points,
                                        labels_from_feature_maps, load_scene, miou, query_ious, render_labels,
                                        to_query_labels)
from pcseg.vis import colorize, get_palette, save_ply
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--queries", default=None, help='comma-separated text queries, e.g. "chair,table,sofa"')
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. fit.iterations=500")
    return parser.parse_args(argv)


def _save_label_png(labels: np.ndarray, palette: np.ndarray, path: Path) -> None:
    rgb = colorize(labels.reshape(-1), palette).reshape(*labels.shape, 3)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _save_rgb_png(rgb: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(tmp, format="PNG")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _baseline_2d(scene: OVSScene, class_emb: Tensor | None, text_encoder: TextEncoder, text: Tensor, gt: Tensor,
                 lifted: Tensor, queries: tuple[str, ...], cfg: OVSConfig) -> dict[str, object]:
    """Held-out views labelled from their own 2D features (the per-view baseline): its mIoU and the
    per-query IoUs of both it and the ``lifted`` labels (V, H, W) against ``gt`` (V, H, W)."""
    held_features, _ = encode_views(scene.held_out, class_emb, cfg.features, cfg.seed + 10_000, text_encoder)
    labels_2d = labels_from_feature_maps(held_features, text, *lifted.shape[1:], cfg.features.temperature)
    return {"view_2d_miou": miou(labels_2d, gt, len(queries)), "view_iou": query_ious(lifted, gt, queries),
            "view_2d_iou": query_ious(labels_2d, gt, queries)}


def main(argv: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Run and return the metrics (empty without ground truth); mistakes end with ``error: …`` (status 2)."""
    args = parse_args(argv)
    with tool_errors(args.config):
        return run(args)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Fit the scene of ``args.config``, write the label images, PLY and metrics.json; return the metrics."""
    cfg: OVSConfig = load_config(args.config, args.overrides, schema=OVSConfig)
    out = Path(args.out or cfg.work_dir or Path("work_dirs/ovs") / Path(args.config).stem)
    scene = load_scene(cfg.data, cfg.field.padding)
    queries = tuple(q.strip() for q in args.queries.split(",")) if args.queries else cfg.queries or scene.class_names
    if not queries or any(not q for q in queries):
        raise InputError(f"--queries: expected non-empty names, got {list(queries)}")
    text_encoder = build_text_encoder(cfg.features, cfg.seed)
    class_emb = text_encoder(list(scene.class_names)) if scene.class_names else None
    features, dino = encode_views(scene.train, class_emb, cfg.features, cfg.seed, text_encoder, progress=True)
    field, fit_cfg = fit_scene(scene, features, dino, cfg, progress=True)
    text = text_encoder(list(queries))
    rgb, labels = render_labels(field, scene.held_out, text, fit_cfg, cfg.features.temperature)
    palette = get_palette(len(queries))
    metrics: dict[str, float] = {}
    baseline: dict[str, object] = {}
    for v, name in enumerate(scene.held_out.names):
        _save_rgb_png(rgb[v].numpy(), out / f"{name}_rgb.png")
        _save_label_png(labels[v].numpy(), palette, out / f"{name}_labels.png")
    if scene.held_out.labels is not None:
        gt = to_query_labels(scene.held_out.labels, scene.class_names, queries, cfg.query_classes)
        for v, name in enumerate(scene.held_out.names):
            _save_label_png(gt[v].numpy(), palette, out / f"{name}_gt.png")
        metrics["view_miou"] = miou(labels, gt, len(queries))
        baseline = _baseline_2d(scene, class_emb, text_encoder, text, gt, labels, queries, cfg)
    if scene.points is not None:
        point_labels = label_points(field, scene.points, text, cfg.features.temperature)
        save_ply(out / "points.ply", scene.points.numpy(), labels=point_labels.numpy().astype(np.int32),
                 palette=palette)
        if scene.point_classes is not None:
            point_gt = to_query_labels(scene.point_classes, scene.class_names, queries, cfg.query_classes)
            metrics["point_miou"] = miou(point_labels, point_gt, len(queries))
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"queries": list(queries), **metrics, **baseline}, indent=2))
    if baseline:
        print(f"held-out views, per-view 2D features: mIoU {_percent(baseline['view_2d_miou'])}")
        for key in ("view_iou", "view_2d_iou"):
            print(f"{key}: " + ", ".join(f"{q} {_percent(v)}" for q, v in baseline[key].items()))
    print(f"wrote {out}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
