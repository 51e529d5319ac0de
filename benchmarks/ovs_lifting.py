"""3D-OVS experiment: do features lifted through a radiance field segment better than per-view 2D features?

    python benchmarks/ovs_lifting.py [--config configs/ovs/synthetic_room.yaml] [--seeds 0 1 2] [--out work_dirs/ovs_exp] [key=value …]

Per seed (room layout, cameras, 2D feature noise and field initialisation all follow the seed):

1. render the synthetic room from the fitted and held-out cameras; encode 2D features of every
   view with the config's image encoder (the synthetic stand-in by default: coarse, noisy,
   view-inconsistent class-embedding patches);
2. fit the field on the fitted views only;
3. held-out views, mIoU over the queries: **2D** = the held-out view's own 2D features (upsampled)
   → relevancy; **lifted** = features rendered from the field → relevancy;
4. point cloud, mIoU over the queries on the points that at least one fitted view sees
   (``point_coverage`` = their fraction): **2D** = each point's 2D features averaged over the
   fitted views that see it (projection + z-buffer test) → relevancy; **lifted** = the field's
   feature at the point → relevancy.

Writes ``OUT/results.json`` (per seed and mean ± sample std) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pcseg.data.synthetic.posed_room import room_views
from pcseg.engine.config import Config, config_to_dict, load_config
from pcseg.methods.ovs import (OVSScene, fit_scene, label_points, labels_from_feature_maps, miou,
                               point_features_from_views, relevancy, render_labels, scene_queries, to_query_labels)
from pcseg.methods.ovs.features import build_text_encoder, encode_views
from pcseg.methods.ovs.pipeline import HELD_OUT_SEED_OFFSET
from pcseg.methods.ovs.scene import scene_kwargs
from pcseg.utils.atomic import atomic_path

REPO = Path(__file__).resolve().parents[1]
METRICS = ("view_2d", "view_lifted", "point_2d", "point_lifted", "point_coverage")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs/ovs/synthetic_room.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/ovs_exp"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. data.kwargs.steps_per_epoch=125")
    return parser.parse_args(argv)


def run_seed(cfg: Config, seed: int, work_dir: Path) -> dict[str, float]:
    """The four mIoUs and the point coverage (0..1) of one seed (the fit's trainer files in ``work_dir``)."""
    if cfg.data.name != "SyntheticRoom":
        raise SystemExit(f"error: data.name {cfg.data.name!r} has no point cloud; use SyntheticRoom")
    cfg = load_config_with(cfg, seed)
    kwargs = scene_kwargs(cfg.data.kwargs)
    padding = float(kwargs.pop("padding", 0.1))
    room = room_views(**kwargs)
    scene = OVSScene.from_room(room.train, room.held_out, room.points, room.point_classes, room.class_names, padding)
    fitted = fit_scene(cfg, scene, work_dir, resume=True)  # an interrupted fit continues
    method = fitted.method
    queries, temperature = scene_queries(method, scene), method.temperature
    text = build_text_encoder(method.text_encoder)(list(queries))
    held_feats, _ = encode_views(scene.held_out, scene.class_names, method.image_encoder, method.text_encoder,
                                 seed + HELD_OUT_SEED_OFFSET)
    height, width = scene.held_out.images.shape[1:3]
    view_gt = to_query_labels(scene.held_out.labels, scene.class_names, queries, method.query_classes)
    point_feats, seen_by = point_features_from_views(scene.points, scene.train, fitted.features)
    seen = seen_by > 0
    point_gt = to_query_labels(scene.point_classes, scene.class_names, queries, method.query_classes)[seen]
    point_2d = relevancy(point_feats[seen], text, temperature)[1]
    lifted = render_labels(fitted.field, scene.held_out, text, scene.near_far, method.num_samples, temperature,
                           method.background)[1]
    q = len(queries)
    return {
        "view_2d": miou(labels_from_feature_maps(held_feats, text, height, width, temperature), view_gt, q),
        "view_lifted": miou(lifted, view_gt, q),
        "point_2d": miou(point_2d, point_gt, q),
        "point_lifted": miou(label_points(fitted.field, scene.points[seen], text, temperature), point_gt, q),
        "point_coverage": float(seen.float().mean()),
    }


def load_config_with(cfg: Config, seed: int) -> Config:
    """``cfg`` with run seed and room seed ``seed``."""
    data = replace(cfg.data, kwargs={**cfg.data.kwargs, "seed": seed})
    return replace(cfg, seed=seed, data=data)


def cached_seed(cfg: Config, seed: int, path: Path) -> dict[str, float]:
    """:func:`run_seed`, or its result from ``path`` when that was written with the same config."""
    config = json.loads(json.dumps(config_to_dict(cfg)))
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached["config"] == config:
            return cached["result"]
    result = run_seed(cfg, seed, path.with_suffix(''))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"config": config, "result": result}, indent=1))
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = cached_seed(cfg, seed, args.out / f"seed{seed}.json")
        print(f"seed {seed}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in per_seed[seed].items()), flush=True)
    summary = {}
    for key in METRICS:
        values = np.array([r[key] for r in per_seed.values()]) * 100
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    results = {"config": str(args.config), "overrides": args.overrides, "seeds": args.seeds,
               "per_seed": {str(s): r for s, r in per_seed.items()}, "summary_percent": summary}
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print("\n| mIoU (%) | per-view 2D | lifted (field) |\n|---|---|---|")
    for where in ("view", "point"):
        a, b = summary[f"{where}_2d"], summary[f"{where}_lifted"]
        label = "held-out views" if where == "view" else "point cloud"
        print(f"| {label} | {a['mean']:.1f} ± {a['std']:.1f} | {b['mean']:.1f} ± {b['std']:.1f} |")
    return results


if __name__ == "__main__":
    main()
