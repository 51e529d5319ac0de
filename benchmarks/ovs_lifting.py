"""3D-OVS experiment under a fixed protocol: do features lifted through a radiance field segment better,
by text query, than the views' own 2D features?

    python benchmarks/ovs_lifting.py --protocol benchmarks/protocols/ovs_v2.yaml --out work_dirs/ovs_v2 [--jobs 2]

Every setting is in the protocol file (its header and ``benchmarks/_protocol.py``; loaded with
``stages=False``: each room is fitted in a process of this script). Read here: ``data``
(``generator: synthetic_room``; per split ``generator_seeds``: for test and val one room per seed,
same index as ``seeds``; the train split's are the image encoder's training rooms),
``encoder: {views, views_per_room, val: {generator_seeds}, config, work_dir, overrides}``,
``common_overrides``, ``ovs: {config, rows, places}`` (rows among ``per_view_2d``, ``lifted``,
``rendered``; places among ``held_out_views``, ``points``) and ``metric.paired``.

Everything is checked before any run: the encoder stage (the train split's generator seeds, then
``encoder.val``'s, consecutive: :func:`~pcseg.data.synthetic.posed_room.write_room_views` renders
rooms ``first, first + 1, …``; ``views`` and ``work_dir`` under ``--out``; ``encoder.config``
loading with ``encoder.overrides``, an ``LSeg`` trained on ``views`` with the rooms' text encoder)
and every room's config with its overrides, whose ``method.image_encoder`` must be exactly
``{name: LSegImageEncoder, work_dir: <encoder.work_dir>}`` (``ovs_v1.yaml`` is refused: its
``fit.*`` / ``features.*`` overrides are keys of the configs before issue 18). Then:

0. the encoder stage, once, before any room: the views of the train split's rooms (and of
   ``encoder.val``'s, its val split; ``views_per_room`` each, at the rooms' ``num_points``, image
   size and field of view) in ``views``, reused when written with the same settings; then
   ``tools/train.py --config <encoder.config> <encoder.overrides>`` (one thread) in ``work_dir``,
   reused once finished (``wall_seconds.txt``), continued when stopped;
1. per split (test, then val) and seed ``seeds[i]``, one room at a time per ``--jobs`` worker (one
   thread each) in ``OUT/<split>/seed<seed>``, reused once its ``ovs.json`` exists (a stopped fit
   continues): render the room of generator seed ``generator_seeds[i]`` (``data.kwargs.seed``) from
   the fitted and held-out cameras; encode every view with the trained encoder; the run seed
   ``seeds[i]`` (``seed``) drives the field's initialisation and ray batches;
2. fit the field on the fitted views only (``ovs.config`` with ``common_overrides``);
3. held-out views, mIoU over the queries: ``per_view_2d`` = the held-out view's own 2D features
   (upsampled) → relevancy; ``lifted`` = features rendered from the field → relevancy
   (``rendered``: the same numbers, the views are rendered);
4. points, mIoU over the queries on the points that at least one fitted view sees
   (``point_coverage``: their share): ``per_view_2d`` = each point's 2D features averaged over the
   fitted views that see it (projection + z-buffer test); ``lifted`` = the field's feature at the
   point; ``rendered`` = the field's features rendered from the fitted views, read and averaged
   exactly as ``per_view_2d`` reads its maps (only the feature source differs).

``OUT/results.json``: the runner's results (place -> ``-`` -> row -> seed -> ``test_miou``, and
``val_miou`` of the val room of the same index; 0..1), every room's record under ``rooms``, the
encoder's last val mIoU (pixels of its val rooms, 0..1) and wall time under ``encoder``, and one
markdown table per place of test mIoU (%), mean ± sample std over seeds, with the paired differences.

``python benchmarks/ovs_lifting.py fit --config C --work-dir D [overrides…]`` is the process of one room.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from _experiment import REPO, final_miou, mean_std_cell, run_resumable, run_script, save_summary, wall_seconds
from _protocol import (Protocol, Run, data_settings, fill, generate_once, load_protocol, parse_args, parse_paired,
                       schedule, section_settings, task_table)

from pcseg.cli.ovs import build_scene
from pcseg.data.synthetic.posed_room import write_room_views
from pcseg.engine.config import Config, load_config, thaw
from pcseg.methods.ovs import (fit_scene, label_points, labels_from_feature_maps, miou, point_features_from_renders,
                               point_features_from_views, relevancy, render_labels, scene_queries, to_query_labels)
from pcseg.methods.ovs.features import build_text_encoder, encode_views
from pcseg.methods.ovs.pipeline import HELD_OUT_SEED_OFFSET
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

ROWS = {"per_view_2d": "2d", "lifted": "lifted", "rendered": "rendered"}
"""Row -> its part of the metric key (``view_2d``, ``point_lifted``, …)."""
PLACES = {"held_out_views": "view", "points": "point"}
"""Place -> its part of the metric key."""
SPLITS = ("test", "val")  # the reported rooms first
RESULT_FILE = "ovs.json"
SEED_KEYS = ("seed", "data.kwargs.seed")  # set per room by this script
SECTIONS = ("ovs", "encoder")  # the protocol's sections this script reads itself
ENCODER_SCHEMA = {"views": str, "views_per_room": int, "val": dict, "config": str, "work_dir": str,
                  "overrides": list}
"""The ``encoder`` section: key -> type (all required)."""
SCENE_KEYS = ("num_points", "height", "width", "fov_deg")
"""The rooms' ``data.kwargs`` the encoder's views are rendered with too."""


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
    ``view_lifted``, ``view_rendered`` (the same), ``point_2d``, ``point_lifted``, ``point_rendered``
    mIoU and ``point_coverage``, all in 0..1."""
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
    rendered = point_features_from_renders(fitted.field, scene.points, scene.train, scene.near_far,
                                           method.num_samples)[0]  # the same visibility: the same seen points
    lifted = render_labels(fitted.field, scene.held_out, text, scene.near_far, method.num_samples, temperature,
                           method.background)[1]
    q = len(queries)
    view_lifted = miou(lifted, view_gt, q)
    return {
        "view_2d": miou(labels_from_feature_maps(held_feats, text, height, width, temperature), view_gt, q),
        "view_lifted": view_lifted,
        "view_rendered": view_lifted,
        "point_2d": miou(relevancy(point_feats[seen], text, temperature)[1], point_gt, q),
        "point_lifted": miou(label_points(fitted.field, scene.points[seen], text, temperature), point_gt, q),
        "point_rendered": miou(relevancy(rendered[seen], text, temperature)[1], point_gt, q),
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


# --- the image encoder (once, before the rooms) -----------------------------------------------------------

@dataclass(frozen=True)
class EncoderStage:
    """The encoder stage: the views of rooms ``room_seed`` … ``room_seed + rooms + val_rooms - 1``
    (:func:`~pcseg.data.synthetic.posed_room.write_room_views`, ``views_per_room`` each, the last
    ``val_rooms`` rooms to its val split) rendered with the rooms' ``scene`` settings into ``views``,
    then ``tools/train.py --config config overrides…`` in ``work_dir``. Paths are absolute."""

    views: Path
    room_seed: int
    rooms: int
    val_rooms: int
    views_per_room: int
    scene: Mapping[str, Any]
    config: Path
    overrides: tuple[str, ...]
    work_dir: Path

    def view_settings(self) -> dict[str, Any]:
        """What the written views depend on (the marker :func:`~_protocol.generate_once` compares)."""
        return {"room_seed": self.room_seed, "rooms": self.rooms, "val_rooms": self.val_rooms,
                "views_per_room": self.views_per_room, **self.scene}


def _consecutive(protocol: Protocol, field: str, seeds: list, first: int) -> None:
    """InputError unless ``seeds`` is ``first, first + 1, …`` (what :func:`write_room_views` renders)."""
    if seeds != list(range(first, first + len(seeds))):
        raise InputError(f"{protocol.path}: {field}: expected consecutive generator seeds from {first} (the encoder "
                         f"stage writes rooms data.splits.train.generator_seeds[0], +1, …, then its val rooms), "
                         f"got {seeds!r}")


def _inside(protocol: Protocol, field: str, path: Path, out: Path) -> Path:
    """``path`` if it lies under ``out`` (the stage's output belongs to this experiment); InputError otherwise."""
    if not path.is_relative_to(out):
        raise InputError(f"{protocol.path}: {field}: expected a folder under ${{out}} ({out}), got {str(path)!r}")
    return path


def _encoder_config(protocol: Protocol, spec: Mapping[str, Any], out: Path) -> tuple[Path, tuple[str, ...], Config]:
    """``encoder.config`` (a shipped file), its filled ``encoder.overrides`` and the config they load."""
    config = REPO / spec["config"]
    if not config.is_file():
        raise InputError(f"{protocol.path}: encoder.config: expected a shipped config file, got {str(config)!r}")
    for i, override in enumerate(spec["overrides"]):
        if not isinstance(override, str) or "=" not in override:
            raise InputError(f"{protocol.path}: encoder.overrides[{i}]: expected a dotted key=value override, "
                             f"got {override!r}")
    overrides = tuple(fill(protocol, f"encoder.overrides[{i}]", o, out=out) for i, o in enumerate(spec["overrides"]))
    try:
        return config, overrides, load_config(config, list(overrides))
    except InputError as err:
        raise InputError(f"{protocol.path}: encoder.overrides: expected overrides that {spec['config']} accepts, "
                         f"got: {err}") from None


def plan_encoder(protocol: Protocol, out: Path, train_rooms: list, room: Config) -> EncoderStage:
    """The ``encoder`` section checked against ``room`` (a room's config with its overrides): the train
    split's generator seeds then ``encoder.val.generator_seeds`` consecutive, ``views`` and
    ``work_dir`` under ``out``, the encoder config loading with its overrides, training an ``LSeg``
    on ``views`` with the rooms' text encoder, and the rooms' image encoder the
    ``LSegImageEncoder`` of ``work_dir``. Raises InputError naming the field."""
    spec = section_settings(protocol, "encoder", protocol.sections.get("encoder"), ENCODER_SCHEMA, out)
    val_rooms = section_settings(protocol, "encoder.val", spec["val"], {"generator_seeds": list}, out)
    val_rooms = val_rooms["generator_seeds"]
    _consecutive(protocol, "data.splits.train.generator_seeds", train_rooms, train_rooms[0])
    _consecutive(protocol, "encoder.val.generator_seeds", val_rooms, train_rooms[0] + len(train_rooms))
    if spec["views_per_room"] < 1:
        raise InputError(f"{protocol.path}: encoder.views_per_room: expected an int >= 1, got {spec['views_per_room']}")
    views = _inside(protocol, "encoder.views", Path(spec["views"]), out)
    work_dir = _inside(protocol, "encoder.work_dir", Path(spec["work_dir"]), out)
    config, overrides, cfg = _encoder_config(protocol, spec, out)
    root = cfg.data.kwargs.get("root")
    if cfg.data.name != "ImageFolder" or cfg.model.get("name") != "LSeg" or root is None or Path(root) != views:
        raise InputError(f"{protocol.path}: encoder.overrides: expected an LSeg model trained on the ImageFolder "
                         f"data.kwargs.root={views} (encoder.views, what this stage writes), got model "
                         f"{cfg.model.get('name')!r} on {cfg.data.name} root {root!r}")
    image_encoder = thaw(room.method.get("image_encoder"))
    expected = {"name": "LSegImageEncoder", "work_dir": str(work_dir)}
    if image_encoder != expected:  # nothing else: the encoder's last checkpoint, no keys of another encoder
        raise InputError(f"{protocol.path}: common_overrides: expected the rooms' method.image_encoder to be the "
                         f"LSegImageEncoder of encoder.work_dir, {expected}, got {image_encoder}")
    text, trained_with = thaw(room.method.get("text_encoder")), thaw(cfg.model.get("text_encoder"))
    if text != trained_with:
        raise InputError(f"{protocol.path}: encoder.config: expected the rooms' text encoder {text} as "
                         f"model.text_encoder, got {trained_with}")
    scene = {k: room.data.kwargs[k] for k in SCENE_KEYS if k in room.data.kwargs}
    return EncoderStage(views, train_rooms[0], len(train_rooms), len(val_rooms), spec["views_per_room"], scene,
                        config, overrides, work_dir)


def run_encoder(stage: EncoderStage) -> None:
    """Write the stage's views unless written with the same settings (a marker in ``views``; other
    settings raise InputError), then train the encoder (one thread) unless it finished
    (``wall_seconds.txt``); a stopped training continues."""
    generate_once(stage.views, "encoder_views", stage.view_settings(),
                  lambda: write_room_views(stage.views, stage.rooms, stage.views_per_room, room_seed=stage.room_seed,
                                           val_rooms=stage.val_rooms, **stage.scene))
    if wall_seconds(stage.work_dir) is None:
        seconds, resumed = run_resumable("train.py", ["--config", str(stage.config), *stage.overrides],
                                         stage.work_dir)
        print(f"encoder: trained in {seconds:.0f} s{' (resumed)' if resumed else ''}", flush=True)


# --- the experiment ---------------------------------------------------------------------------------------

def _names(protocol: Protocol, field: str, names: list, known: Sequence[str]) -> list[str]:
    if not names or len(set(names)) != len(names) or not set(names) <= set(known):
        raise InputError(f"{protocol.path}: {field}: expected distinct names among {', '.join(known)}, got {names!r}")
    return names


def plan(protocol: Protocol, out: Path) -> tuple[EncoderStage, list[Run], dict[str, Any], tuple[tuple[str, str], ...]]:
    """The encoder stage (:func:`plan_encoder`), every room's run (test, then val; seed order), the ``ovs``
    settings and the ``metric.paired`` pairs, all checked: each run's config loads with its overrides.
    Raises InputError naming the field."""
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
                room = load_room_config(config, overrides)
            except InputError as err:
                raise InputError(f"{protocol.path}: common_overrides: expected overrides that {spec['config']} "
                                 f"accepts, got: {err}") from None
            runs.append(Run(split, "fit", seed, None, "benchmarks/ovs_lifting.py", config, tuple(overrides), (),
                            out / split / f"seed{seed}", False))
    # the rooms differ by their seeds only: the last one's config stands for all
    encoder = plan_encoder(protocol, out, splits["train"]["generator_seeds"], room)
    return encoder, runs, {"rows": rows, "places": places}, paired


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
        protocol = load_protocol(args.protocol, SECTIONS, stages=False)
        out = args.out.resolve()
        encoder, runs, spec, paired = plan(protocol, out)
        out.mkdir(parents=True, exist_ok=True)
        run_encoder(encoder)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    jobs = args.jobs or protocol.jobs
    started = schedule(runs, execute, jobs, done=done)
    results, rooms = collect(runs, spec["rows"], spec["places"])
    text = tables(protocol, results, rooms, spec["rows"], spec["places"], paired)
    trained = {"val_miou": final_miou(encoder.work_dir), "seconds": wall_seconds(encoder.work_dir)}
    summary = save_summary(out, args, start, results, text, protocol=protocol.name, protocol_sha256=protocol.sha256,
                           runs_started=started, rooms=rooms, encoder=trained)
    print(f"\n{protocol.name}: test mIoU (%) over the queries per place, mean ± sample std over seeds "
          f"{list(protocol.seeds)} (per-seed values):\n\n{text}")
    print(f"\n{len(started)} rooms in {summary['wall_seconds'] / 60:.1f} min with {jobs} workers")
    return summary


if __name__ == "__main__":
    if sys.argv[1:2] == ["fit"]:
        fit(sys.argv[2:])
    else:
        main()
