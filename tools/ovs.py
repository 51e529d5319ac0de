"""3D open-vocabulary segmentation: fit a feature radiance field, then label views and points by text.

    python tools/ovs.py --config configs/ovs/synthetic_room.yaml --queries "chair,table,sofa" [--out DIR] [key=value …]

Loads or renders the posed views (``data``), encodes 2D features (``features``), fits the field on
the fitted views (``fit``, progress bar), then writes to ``DIR`` (default ``work_dir`` or
``work_dirs/ovs/<config name>``):

- ``<view>_rgb.png`` rendered colours, ``<view>_labels.png`` rendered relevancy labels and, when
  ground truth exists, ``<view>_gt.png`` (query classes only; others grey) for each held-out view;
- ``points.ply`` the point cloud (synthetic rooms) coloured by the field's label at each point,
  with an int ``label`` property (query index);
- ``metrics.json`` held-out view and point mIoU over the queries when ground truth exists.

``--queries`` (comma-separated) replaces the config's ``queries``; with neither, the scene's class
names are the queries.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from pcseg.engine.config import exit_on_config_error, load_config
from pcseg.methods.ovs.pipeline import (OVSConfig, build_text_encoder, encode_views, fit_scene, label_points,
                                        load_scene, miou, render_labels, to_query_labels)
from pcseg.vis import colorize, get_palette, save_ply
from pcseg.utils.atomic import atomic_path


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


def main(argv: Optional[Sequence[str]] = None) -> dict[str, float]:
    """Run and return the metrics (empty without ground truth)."""
    args = parse_args(argv)
    with exit_on_config_error(args.config):
        cfg: OVSConfig = load_config(args.config, args.overrides, schema=OVSConfig)
    out = Path(args.out or cfg.work_dir or Path("work_dirs/ovs") / Path(args.config).stem)
    scene = load_scene(cfg.data, cfg.field.padding)
    queries = tuple(q.strip() for q in args.queries.split(",")) if args.queries else cfg.queries or scene.class_names
    if not queries or any(not q for q in queries):
        raise SystemExit(f"error: queries expected non-empty names, got {list(queries)}")
    text_encoder = build_text_encoder(cfg.features, cfg.seed)
    features, dino = encode_views(scene.train, text_encoder(list(scene.class_names)) if scene.class_names else None,
                                  cfg.features, cfg.seed)
    field, fit_cfg = fit_scene(scene, features, dino, cfg, progress=True)
    text = text_encoder(list(queries))
    rgb, labels = render_labels(field, scene.held_out, text, fit_cfg, cfg.features.temperature)
    palette = get_palette(len(queries))
    metrics: dict[str, float] = {}
    for v, name in enumerate(scene.held_out.names):
        _save_rgb_png(rgb[v].numpy(), out / f"{name}_rgb.png")
        _save_label_png(labels[v].numpy(), palette, out / f"{name}_labels.png")
    if scene.held_out.labels is not None:
        gt = to_query_labels(scene.held_out.labels, scene.class_names, queries)
        for v, name in enumerate(scene.held_out.names):
            _save_label_png(gt[v].numpy(), palette, out / f"{name}_gt.png")
        metrics["view_miou"] = miou(labels, gt, len(queries))
    if scene.points is not None:
        point_labels = label_points(field, scene.points, text, cfg.features.temperature)
        save_ply(out / "points.ply", scene.points.numpy(), labels=point_labels.numpy().astype(np.int32),
                 palette=palette)
        if scene.point_classes is not None:
            metrics["point_miou"] = miou(point_labels, to_query_labels(scene.point_classes, scene.class_names, queries),
                                         len(queries))
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"queries": list(queries), **metrics}, indent=2))
    print(f"wrote {out}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in metrics.items()))
    return metrics


if __name__ == "__main__":
    main()
