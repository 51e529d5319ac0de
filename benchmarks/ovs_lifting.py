"""3D-OVS experiment under a fixed protocol: do features lifted through a radiance field segment better,
by text query, than the views' own 2D features?

    python benchmarks/ovs_lifting.py --protocol benchmarks/protocols/ovs_v1.yaml --out work_dirs/ovs_v1 [--jobs 1]

Every setting is in the protocol file (its header and ``benchmarks/_protocol.py``; loaded with
``stages=False``: no tool runs, each room is fitted in a process of this script). Read here:
``data`` (``generator: synthetic_room``; per split ``generator_seeds``: for test and val one room
per seed, same index as ``seeds``; the train split's are the image encoder's rooms and only take
part in the disjointness check), ``common_overrides``, ``ovs: {config, rows, places}`` (rows among
``per_view_2d``, ``lifted``; places among ``held_out_views``, ``points``) and ``metric.paired``.

Everything is checked before any run: every room's config loads with its overrides (``ovs_v1.yaml``
is refused here: its ``fit.*`` / ``features.*`` overrides are keys of the configs before issue 18;
a runnable protocol is a new file). The image encoder is the config's: an ``LSegImageEncoder`` must
have been trained already (its ``work_dir``). Then per split (test, then val) and seed ``seeds[i]``,
one room at a time per ``--jobs`` worker (one thread each) in ``OUT/<split>/seed<seed>``, reused
once its ``ovs.json`` exists (a stopped fit continues):

1. render the room of generator seed ``generator_seeds[i]`` (``data.kwargs.seed``) from the fitted
   and held-out cameras; encode every view with the config's image encoder; the run seed
   ``seeds[i]`` (``seed``) drives the encoder's noise and the field's initialisation;
2. fit the field on the fitted views only (``ovs.config`` with ``common_overrides``);
3. held-out views, mIoU over the queries: ``per_view_2d`` = the held-out view's own 2D features
   (upsampled) → relevancy; ``lifted`` = features rendered from the field → relevancy;
4. points, mIoU over the queries on the points that at least one fitted view sees
   (``point_coverage``: their share): ``per_view_2d`` = each point's 2D features averaged over the
   fitted views that see it (projection + z-buffer test); ``lifted`` = the field's feature at the point.

``OUT/results.json``: the runner's results (place -> ``-`` -> row -> seed -> ``test_miou``, and
``val_miou`` of the val room of the same index; 0..1), every room's record under ``rooms`` and one
markdown table per place of test mIoU (%), mean ± sample std over seeds, with the paired differences.

``python benchmarks/ovs_lifting.py fit --config C --work-dir D [overrides…]`` is the process of one room.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from _experiment import REPO, mean_std_cell, run_script, save_summary
from _protocol import (Protocol, Run, data_settings, fill, load_protocol, parse_args, parse_paired, schedule,
                       section_settings, task_table)

from pcseg.cli.ovs import build_scene
from pcseg.engine.config import Config, load_config
from pcseg.methods.ovs import (fit_scene, label_points, labels_from_feature_maps, miou,
                               point_features_from_views, relevancy, render_labels, scene_queries, to_query_labels)
from pcseg.methods.ovs.features import build_text_encoder, encode_views
from pcseg.methods.ovs.pipeline import HELD_OUT_SEED_OFFSET
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

ROWS = {"per_view_2d": "2d", "lifted": "lifted"}
"""Row -> its part of the metric key (``view_2d``, ``point_lifted``, …)."""
PLACES = {"held_out_views": "view", "points": "point"}
"""Place -> its part of the metric key."""
SPLITS = ("test", "val")  # the reported rooms first
RESULT_FILE = "ovs.json"
SEED_KEYS = ("seed", "data.kwargs.seed")  # set per room by this script


# --- one room (the ``fit`` process) -----------------------------------------------------------------------

def load_room_config(config: str | Path, overrides: Sequence[str]) -> Config:
    """``config`` with ``overrides``; InputError unless it renders a synthetic room (it has a point cloud)."""
    cfg = load_config(config, list(overrides))
    if cfg.data.name != "SyntheticRoom":
        raise InputError(f"{config}: data.name: expected 'SyntheticRoom' (a room with a point cloud), "
                         f"got {cfg.data.name!r}")
    return cfg


def run_room(cfg: Config, work_dir: Path) -> dict[str, float]:
    """Steps 1-4 for the room of ``cfg`` (the fit's trainer files in ``work_dir``): ``view_2d``,
    ``view_lifted``, ``point_2d``, ``point_lifted`` mIoU and ``point_coverage``, all in 0..1."""
    scene = build_scene(cfg)  # a SyntheticRoom config (checked by the loader above)
    fitted = fit_scene(cfg, scene, work_dir, resume=True)  # a stopped fit continues
    method = fitted.method
    queries, temperature = scene_queries(method, scene), method.temperature
    text = build_text_encoder(method.text_encoder)(list(queries))
    held_feats, _ = encode_views(scene.held_out, scene.class_names, method.image_encoder, method.text_encoder,
                                 cfg.seed + HELD_OUT_SEED_OFFSET)
    height, width = scene.held_out.images.shape[1:3]
    view_gt = to_query_labels(scene.held_out.labels, scene.class_names, queries, method.query_classes)
    point_feats, seen_by = point_features_from_views(scene.points, scene.train, fitted.features)
    seen = seen_by > 0
    point_gt = to_query_labels(scene.point_classes, scene.class_names, queries, method.query_classes)[seen]
    lifted = render_labels(fitted.field, scene.held_out, text, scene.near_far, method.num_samples, temperature,
                           method.background)[1]
    q = len(queries)
    return {
        "view_2d": miou(labels_from_feature_maps(held_feats, text, height, width, temperature), view_gt, q),
        "view_lifted": miou(lifted, view_gt, q),
        "point_2d": miou(relevancy(point_feats[seen], text, temperature)[1], point_gt, q),
        "point_lifted": miou(label_points(fitted.field, scene.points[seen], text, temperature), point_gt, q),
        "point_coverage": float(seen.float().mean()),
    }


def fit(argv: Sequence[str]) -> None:
    """``fit --config C --work-dir D [overrides…]``: :func:`run_room`, written atomically to
    ``D/ovs.json`` as ``{room, seed, seconds, metrics}`` (room: the generator seed it rendered)."""
    parser = argparse.ArgumentParser(prog="ovs_lifting.py fit")
    parser.add_argument("--config", required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cfg = load_room_config(args.config, args.overrides)
    metrics = run_room(cfg, args.work_dir)
    record = {"room": cfg.data.kwargs["seed"], "seed": cfg.seed, "seconds": time.perf_counter() - start,
              "metrics": metrics}
    with atomic_path(args.work_dir / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=1))


# --- the experiment ---------------------------------------------------------------------------------------

def _names(protocol: Protocol, field: str, names: list, known: Sequence[str]) -> list[str]:
    if not names or len(set(names)) != len(names) or not set(names) <= set(known):
        raise InputError(f"{protocol.path}: {field}: expected distinct names among {', '.join(known)}, got {names!r}")
    return names


def plan(protocol: Protocol, out: Path) -> tuple[list[Run], dict[str, Any], tuple[tuple[str, str], ...]]:
    """Every room's run (test, then val; seed order), the ``ovs`` settings and the ``metric.paired`` pairs,
    all checked: each run's config loads with its overrides. Raises InputError naming the field."""
    _, splits = data_settings(protocol, out, {"generator": str}, {"generator_seeds": list},
                              fixed={"generator": "synthetic_room"})
    spec = section_settings(protocol, "ovs", protocol.sections.get("ovs"), {"config": str, "rows": list,
                                                                            "places": list}, out)
    rows = _names(protocol, "ovs.rows", spec["rows"], tuple(ROWS))
    places = _names(protocol, "ovs.places", spec["places"], tuple(PLACES))
    paired = parse_paired(protocol, {place: rows for place in places})
    config = REPO / spec["config"]
    if not config.is_file():
        raise InputError(f"{protocol.path}: ovs.config: expected a shipped config file, got {str(config)!r}")
    for i, override in enumerate(protocol.common_overrides):
        if override.split("=", 1)[0].strip() in SEED_KEYS:
            raise InputError(f"{protocol.path}: common_overrides[{i}]: expected none of {', '.join(SEED_KEYS)} (set "
                             f"per room from seeds and data.splits.<split>.generator_seeds), got {override!r}")
    runs = []
    for split in SPLITS:
        rooms = splits[split]["generator_seeds"]
        if len(rooms) != len(protocol.seeds):
            raise InputError(f"{protocol.path}: data.splits.{split}.generator_seeds: expected one room per seed "
                             f"({len(protocol.seeds)}), got {len(rooms)}")
        for seed, room in zip(protocol.seeds, rooms):
            overrides = [fill(protocol, "common_overrides", o, out=out, seed=seed) for o in protocol.common_overrides]
            overrides += [f"seed={seed}", f"data.kwargs.seed={room}"]
            try:
                load_room_config(config, overrides)
            except InputError as err:
                raise InputError(f"{protocol.path}: common_overrides: expected overrides that {spec['config']} "
                                 f"accepts, got: {err}") from None
            runs.append(Run(split, "fit", seed, None, "benchmarks/ovs_lifting.py", config, tuple(overrides), (),
                            out / split / f"seed{seed}", False))
    return runs, {"rows": rows, "places": places}, paired


def done(run: Run) -> bool:
    """Whether the room's ``ovs.json`` exists."""
    return (run.work_dir / RESULT_FILE).is_file()


def execute(run: Run) -> None:
    """The room's ``fit`` process (one thread; its output appended to ``stdout.txt`` beside its files)."""
    seconds = run_script(Path(__file__), ["fit", "--config", str(run.config), "--work-dir", str(run.work_dir),
                                          *run.overrides], run.work_dir / "stdout.txt", append=True)
    print(f"{run.key}: fitted and scored in {seconds:.0f} s", flush=True)


def collect(runs: Sequence[Run], rows: Sequence[str], places: Sequence[str]) -> tuple[dict, dict]:
    """(results: place -> ``-`` -> row -> seed -> ``{test_miou, val_miou, seconds}`` (the test room's
    seconds), rooms: split -> seed -> the room's ``ovs.json`` record); a room not yet done is absent."""
    rooms: dict[str, dict[str, Any]] = {}
    for run in runs:
        if done(run):
            rooms.setdefault(run.stage, {})[str(run.seed)] = json.loads((run.work_dir / RESULT_FILE).read_text())
    results: dict[str, Any] = {}
    for place in places:
        for row in rows:
            key = f"{PLACES[place]}_{ROWS[row]}"
            cells = results.setdefault(place, {}).setdefault("-", {}).setdefault(row, {})
            for seed, record in rooms.get("test", {}).items():
                val = rooms.get("val", {}).get(seed)
                cells[seed] = {"test_miou": record["metrics"][key], "seconds": record["seconds"],
                               "val_miou": val["metrics"][key] if val else None}
    return results, rooms


def tables(protocol: Protocol, results: dict, rooms: dict, rows: Sequence[str], places: Sequence[str],
           paired: Sequence[tuple[str, str]]) -> str:
    """One :func:`~_protocol.task_table` per place, then the test rooms' point coverage (%)."""
    seeds = [str(s) for s in protocol.seeds]
    text = "\n\n".join(task_table(place, ("-",), rows, paired, results[place], seeds) for place in places)
    coverage = [100 * rooms["test"][s]["metrics"]["point_coverage"] for s in seeds if s in rooms.get("test", {})]
    return text + (f"\n\npoint coverage (%), test rooms: {mean_std_cell(coverage, per_seed=True)}" if coverage else "")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The experiment (see the module docstring); returns the summary written to ``OUT/results.json``.
    A bad protocol exits with ``error: <message>`` before any run."""
    args = parse_args(__doc__, argv)
    start = time.perf_counter()
    try:
        protocol = load_protocol(args.protocol, ("ovs",), stages=False)
        out = args.out.resolve()
        runs, spec, paired = plan(protocol, out)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    jobs = args.jobs or protocol.jobs
    started = schedule(runs, execute, jobs, done=done)
    results, rooms = collect(runs, spec["rows"], spec["places"])
    text = tables(protocol, results, rooms, spec["rows"], spec["places"], paired)
    summary = save_summary(out, args, start, results, text, protocol=protocol.name, protocol_sha256=protocol.sha256,
                           runs_started=started, rooms=rooms)
    print(f"\n{protocol.name}: test mIoU (%) over the queries per place, mean ± sample std over seeds "
          f"{list(protocol.seeds)} (per-seed values):\n\n{text}")
    print(f"\n{len(started)} rooms in {summary['wall_seconds'] / 60:.1f} min with {jobs} workers")
    return summary


if __name__ == "__main__":
    if sys.argv[1:2] == ["fit"]:
        fit(sys.argv[2:])
    else:
        main()
