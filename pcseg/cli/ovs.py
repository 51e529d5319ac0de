"""3D open-vocabulary segmentation: fit a feature radiance field, then label views and points by text.

    python tools/ovs.py --config configs/ovs/synthetic_room.yaml --queries "chair,table,sofa" [--out DIR] [--resume] [key=value …]
    python tools/ovs.py --write-views DIR [--rooms 24 --val-rooms 2 --views 16 --height 48 --width 64]

Fit: reads (or, for ``data.name: SyntheticRoom``, renders) the scene, encodes the fitted views, fits
the field with the one trainer in ``DIR`` (default ``work_dir`` or ``work_dirs/ovs/<config name>``:
config.yaml, train.log, log.jsonl, model_last.pth; ``--resume`` continues it), then writes
``<view>_rgb.png``, ``<view>_labels.png`` (and ``<view>_gt.png``: query classes only, others grey)
per held-out view, ``points.ply`` (the points coloured by the field's label, int ``label``
property) and ``metrics.json`` (``view_miou``, ``point_miou``, the per-view 2D baseline
``view_2d_miou``, per-query ``view_iou``/``view_2d_iou``). ``--queries`` replaces
``method.queries``; a query that is no class name is scored against its ``method.query_classes`` class.

--write-views: rendered views of synthetic rooms (seeds 1000…) in the image-folder layout, the
training data of ``configs/ovs/lseg_*.yaml`` (then ``python tools/train.py --config …``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml
from PIL import Image

from pcseg.data.synthetic.posed_room import room_views, write_room_views
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import Config, check_resume_config, config_to_dict, load_config
from pcseg.methods.ovs import OVSScene, fit_scene, load_scene, scene_queries, score_scene
from pcseg.methods.ovs.scene import scene_kwargs
from pcseg.utils.atomic import atomic_path
from pcseg.vis import colorize, get_palette, save_ply


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config")
    parser.add_argument("--queries", default=None, help='comma-separated text queries, e.g. "chair,table,sofa"')
    parser.add_argument("--out", default=None, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue the fit in the output folder")
    parser.add_argument("--write-views", metavar="DIR", help="write synthetic room views for LSeg training and stop")
    for name, default in (("rooms", 24), ("val-rooms", 2), ("views", 16), ("height", 48), ("width", 64)):
        parser.add_argument(f"--{name}", type=int, default=default, help="with --write-views")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=1")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.write_views is None):
        parser.error("give exactly one of --config and --write-views")
    return args


def build_scene(cfg: Config) -> OVSScene:
    """The scene of ``cfg.data``: a rendered synthetic room, or one read from disk."""
    if cfg.data.name != "SyntheticRoom":
        return load_scene(cfg.data.name, cfg.data.kwargs)
    kwargs = scene_kwargs(cfg.data.kwargs)
    padding = float(kwargs.pop("padding", 0.1))
    room = room_views(**kwargs)
    return OVSScene.from_room(room.train, room.held_out, room.points, room.point_classes, room.class_names, padding)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def main(argv: Optional[Sequence[str]] = None) -> dict[str, object]:
    """Run and return the metrics (empty without ground truth); mistakes end with ``error: …`` (status 2)."""
    args = parse_args(argv)
    if args.write_views:
        names = write_room_views(args.write_views, args.rooms, args.views, val_rooms=args.val_rooms,
                                 height=args.height, width=args.width)
        print(f"wrote {len(names)} views to {args.write_views}")
        return {}
    with tool_errors(args.config):
        return run(args)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Fit the scene of ``args.config``, write the label images, PLY and metrics.json; return the metrics."""
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or cfg.work_dir or Path("work_dirs/ovs") / Path(args.config).stem)
    if args.resume and (out / "config.yaml").is_file():
        check_resume_config(out / "config.yaml", cfg, [])
    scene = build_scene(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    fitted = fit_scene(cfg, scene, out, resume=args.resume)
    queries = scene_queries(fitted.method, scene, tuple(q.strip() for q in args.queries.split(",")) if args.queries
                            else None)
    scores = score_scene(fitted, scene, queries, cfg.seed)
    palette = get_palette(len(queries))
    colour = lambda labels: colorize(labels.reshape(-1), palette).reshape(*labels.shape, 3)  # noqa: E731
    for v, name in enumerate(scene.held_out.names):
        _save_png((np.clip(scores.rgb[v].numpy(), 0, 1) * 255).round().astype(np.uint8), out / f"{name}_rgb.png")
        _save_png(colour(scores.labels[v].numpy()), out / f"{name}_labels.png")
        if scores.gt is not None:
            _save_png(colour(scores.gt[v].numpy()), out / f"{name}_gt.png")
    if scores.point_labels is not None:
        save_ply(out / "points.ply", scene.points.numpy(), labels=scores.point_labels.numpy().astype(np.int32),
                 palette=palette)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps({"queries": list(queries), **scores.metrics}, indent=2))
    percent = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731
    for key in ("view_iou", "view_2d_iou"):
        if key in scores.metrics:
            print(f"{key}: " + ", ".join(f"{q} {percent(v)}" for q, v in scores.metrics[key].items()))
    print(f"wrote {out}: " + ", ".join(f"{k} {percent(v)}" for k, v in scores.metrics.items() if k.endswith("miou")))
    return scores.metrics


if __name__ == "__main__":
    main()
