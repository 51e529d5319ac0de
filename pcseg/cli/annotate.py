"""One human-in-the-loop annotation round for HPAL on your own scans: a model picks, a person labels.

    pcseg-annotate select --config CFG [--checkpoint CKPT] [--budget PREV] --count N \\
        [--strategy hpal|margin|random] [--seed S] --out DIR [dotted overrides …]
    pcseg-annotate apply --labels DIR/to_label.csv --config CFG [--budget PREV] --out NEW_BUDGET \\
        [dotted overrides …]

``select`` picks ``--count`` points of the config's training scenes that ``--budget`` (an earlier
budget of the same scans) does not hold yet, with the selection of :mod:`pcseg.methods.hpal.selection`
(its settings from the config's ``active.selection``, else HPAL's) and the weights of ``--checkpoint``.
The scans need no labels: every point not yet in the budget is a candidate. ``--strategy random``
needs no checkpoint (the first round). It writes, under ``DIR``:

    to_label.csv     header ``scene,index,x,y,z,suggested,label``, one row per chosen point (scenes in the
                     reader's order, indices ascending): ``index`` into the scene's raw points, their
                     coordinates, the model's predicted class name (empty without a checkpoint) and an
                     empty ``label`` for the person
    <scene>.ply      per scene with chosen points ('/' becomes '__'): the scan in dimmed grey, the chosen
                     points magenta; vertex field ``label`` = the point's line number in to_label.csv
                     (header = line 1), -1 elsewhere, to find a row's point in CloudCompare / Open3D

The person fills ``label`` of each row with a class name of the dataset (e.g. ``chair``) or a class id;
a row that cannot be labelled is deleted. ``apply`` checks every row — known scene, index in range,
coordinates matching the scan, known class, no point twice or already in ``--budget`` — and reports all
mistakes as ``<file>:<line>: field '<name>': expected …, got …``. It then writes ``--budget``'s points
plus the new ones as an ``annotated`` budget (:mod:`pcseg.data.budget`; the person's labels are stored
with the indices) for ``tools/train.py … data.budget=NEW_BUDGET``. ``--out`` must be absent or empty;
it appears only once complete.
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from pcseg.data.budget import Budget, Reader, load_budget, scene_filename, write_annotated_budget
from pcseg.engine.build import setup_runtime
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import Config, load_config
from pcseg.engine.distributed import shutdown
from pcseg.methods.hpal import STRATEGIES, predict_raw_scene
from pcseg.methods.hpal.rounds import load_model, prediction_dataset, select_next, selection_settings, write_budget
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError
from pcseg.vis.ply import save_ply

CSV_NAME = "to_label.csv"
HEADER = ("scene", "index", "x", "y", "z", "suggested", "label")
REQUIRED = ("scene", "index", "label")
HIGHLIGHT = (255, 0, 255)  # chosen points in the PLYs
DIM = 0.6  # brightness of the rest of the scan
ATOL, RTOL = 1e-4, 1e-6  # x, y, z of a row against the scan (written with 6 decimals)
MAX_REPORTED = 50  # mistakes listed in one error


class AnnotationError(ValueError):
    """A filled-in CSV that cannot be applied; the message lists ``<file>:<line>: field …`` mistakes."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    select = commands.add_parser("select", help="pick points to label, write to_label.csv and PLYs")
    select.add_argument("--config", required=True, help="YAML config of the model and the scans (training split)")
    select.add_argument("--checkpoint", help="trained weights (a 'model' entry); optional for --strategy random")
    select.add_argument("--budget", help="budget of the points labelled so far (never picked again)")
    select.add_argument("--count", type=int, required=True, help="points to pick over all training scenes")
    select.add_argument("--strategy", choices=STRATEGIES, default="hpal")
    select.add_argument("--seed", type=int, help="seed of --strategy random (default: the config's seed)")
    select.add_argument("--out", required=True, help="folder for to_label.csv and the PLYs")
    apply = commands.add_parser("apply", help="turn a filled-in to_label.csv into a training budget")
    apply.add_argument("--labels", required=True, help="to_label.csv with its 'label' column filled in")
    apply.add_argument("--config", required=True, help="the config given to select")
    apply.add_argument("--budget", help="the budget given to select; its points are kept")
    apply.add_argument("--out", required=True, help="new budget directory (absent or empty)")
    for sub in (select, apply):
        sub.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.kwargs.root=data/my_scans")
    return parser.parse_args(argv)


def open_dataset(args: argparse.Namespace) -> tuple[Config, Any, Optional[Budget]]:
    """The config, its training scenes under the validation transforms and the ``--budget`` (or None)."""
    cfg = load_config(args.config, args.overrides)
    dataset = prediction_dataset(cfg)
    if args.budget is None:
        return cfg, dataset, None
    try:
        previous = load_budget(args.budget)
    except (FileNotFoundError, ValueError) as err:
        raise InputError(f"--budget: {err}") from None
    missing = [s for s in dataset.reader.scenes if s not in previous.scenes]
    if missing:
        raise InputError(f"--budget {args.budget}: made for other scans, {len(missing)} training scene(s) "
                         f"of {args.config} are not in it, e.g. {missing[:3]}")
    return cfg, dataset, previous


# ---------------------------------------------------------------------------------------------- select


def xyz(coord: np.ndarray) -> np.ndarray:
    """(N, 3) float64 coordinates: ``coord`` (N, D) with D <= 3, zero-padded (D=2 images: z = 0)."""
    out = np.zeros((len(coord), 3), dtype=np.float64)
    out[:, : coord.shape[1]] = coord
    return out


def highlighted_colors(scene: dict[str, Any], chosen: np.ndarray) -> np.ndarray:
    """(N, 3) uint8: the scan's brightness dimmed to grey, the ``chosen`` (K,) points in :data:`HIGHLIGHT`."""
    n = len(scene["coord"])
    color = scene.get("color")
    grey = np.asarray(color, dtype=np.float64).mean(axis=1) if color is not None else np.full(n, 128.0)
    rgb = np.repeat((DIM * np.clip(grey, 0, 255))[:, None], 3, axis=1).astype(np.uint8)
    rgb[chosen] = HIGHLIGHT
    return rgb


def suggestions(model: Optional[nn.Module], dataset: Any, index: int, num_points: int, chosen: np.ndarray,
                predicted: Optional[np.ndarray], device: torch.device) -> list[str]:
    """The model's predicted class name of each ``chosen`` (K,) point of scene ``index``; "" without a model.

    predicted: (K,) int64 classes the selection already predicted, or None to predict the scene here.
    """
    if model is None:
        return [""] * len(chosen)
    if predicted is None:
        _, probs, _, _ = predict_raw_scene(model, dataset, index, num_points, device)
        predicted = probs.argmax(dim=1).cpu().numpy()[chosen]
    return [dataset.class_names[c] for c in predicted]


def write_selection(out: Path, dataset: Any, picks: dict[str, np.ndarray], model: Optional[nn.Module],
                    predicted: dict[str, np.ndarray], device: torch.device) -> int:
    """Write a PLY per scene with chosen points, then ``to_label.csv``; returns the number of rows.

    picks: scene → (K_s,) int64 sorted raw indices. predicted: scene → (K_s,) int64 the model's class
    of each pick, from the selection; with a model, scenes missing there (``random``) are predicted here.
    """
    rows: list[list[Any]] = []
    for i, scene in enumerate(dataset.reader.scenes):
        chosen = np.asarray(picks.get(scene, np.zeros(0, np.int64)), dtype=np.int64)
        if not len(chosen):
            continue
        raw = dataset.reader.load(scene)
        points = xyz(np.asarray(raw["coord"]))
        names = suggestions(model, dataset, i, len(points), chosen, predicted.get(scene), device)
        line_numbers = np.full(len(points), -1, dtype=np.int32)
        line_numbers[chosen] = len(rows) + 2 + np.arange(len(chosen))  # line 1 is the header
        save_ply(out / scene_filename(scene, ".ply"), points, colors=highlighted_colors(raw, chosen),
                 labels=line_numbers)
        rows += [[scene, int(j), *(f"{v:.6f}" for v in points[j]), name, ""] for j, name in zip(chosen, names)]
    with atomic_path(out / CSV_NAME) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return len(rows)


def select_command(args: argparse.Namespace) -> Path:
    """``select``: returns the written ``to_label.csv``."""
    if args.count < 1:
        raise InputError(f"--count: expected an int >= 1, got {args.count}")
    if args.checkpoint is None and args.strategy != "random":
        raise InputError(f"--strategy {args.strategy} ranks points with a model: pass --checkpoint "
                         f"(or use --strategy random for the first round)")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise InputError(f"--checkpoint {args.checkpoint}: no such file")
    out = Path(args.out)
    if (out / CSV_NAME).exists():
        raise InputError(f"{out / CSV_NAME} exists (perhaps being filled in); choose another --out")
    cfg, dataset, previous = open_dataset(args)
    runtime = setup_runtime(cfg)
    try:
        model = None
        if args.checkpoint is not None:
            model = load_model(cfg, runtime, dataset.num_classes, Path(args.checkpoint)).eval()
        seed = cfg.seed if args.seed is None else args.seed
        predicted: dict[str, np.ndarray] = {}
        try:
            picks = select_next(dataset, previous, model, args.count, args.strategy, seed, runtime.device,
                                selection_settings(cfg), require_label=False, predicted=predicted)
        except ValueError as err:  # more points requested than there are, transforms that drop points
            raise InputError(str(err)) from None
        rows = write_selection(out, dataset, picks, model, predicted, runtime.device)
    finally:
        shutdown(runtime.dist)
    print(f"wrote {rows} points to label in {sum(len(p) > 0 for p in picks.values())} scene(s) to {out / CSV_NAME} "
          f"(PLYs beside it); fill in the 'label' column, then run pcseg-annotate apply")
    return out / CSV_NAME


# ----------------------------------------------------------------------------------------------- apply


@dataclass(frozen=True)
class LabelRow:
    """One row of a filled-in CSV: ``index`` into the raw points of ``scene``, class id ``label``.

    xyz: (3,) float64 coordinates given in the row, None when the CSV has no x, y, z values.
    """

    line: int
    scene: str
    index: int
    label: int
    xyz: Optional[np.ndarray]


class Mistakes:
    """The mistakes found in one CSV, each ``<file>:<line>: field '<name>': expected …, got …``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: list[tuple[int, str]] = []

    def add(self, line: int, field: str, expected: str, got: str) -> None:
        self.found.append((line, f"{self.path}:{line}: field '{field}': expected {expected}, got {got}"))

    def raise_any(self) -> None:
        """Raise :class:`AnnotationError` listing the mistakes in line order, if there are any."""
        if not self.found:
            return
        lines = [message for _, message in sorted(self.found, key=lambda m: m[0])]
        more = f"\n… and {len(lines) - MAX_REPORTED} more" if len(lines) > MAX_REPORTED else ""
        raise AnnotationError(f"{self.path}: {len(lines)} mistake(s), nothing was written:\n"
                              + "\n".join(lines[:MAX_REPORTED]) + more)


def parse_int(text: str) -> Optional[int]:
    """``text`` as an integer (a sign allowed); None if it is not one."""
    return int(text) if text.lstrip("+-").isdigit() else None


def parse_label(text: str, class_names: Sequence[str]) -> Optional[int]:
    """Class id of ``text``: a class name (exact, else ignoring case) or an id in [0, C); None if neither."""
    value = parse_int(text)
    if value is not None:
        return value if 0 <= value < len(class_names) else None
    exact = {name: i for i, name in enumerate(class_names)}
    folded = {name.lower(): i for i, name in enumerate(class_names)}
    return exact[text] if text in exact else folded.get(text.lower())


def parse_row(row: dict[Optional[str], Any], line: int, scenes: set[str], class_names: Sequence[str],
              mistakes: Mistakes) -> Optional[LabelRow]:
    """A :class:`LabelRow` from one ``csv.DictReader`` row, or None after recording its mistakes."""
    if row.get(None):  # more fields than the header
        mistakes.add(line, "row", f"at most {len(row) - 1} fields as in the header", f"{len(row[None])} more")
        return None
    value = {key: (row.get(key) or "").strip() for key in HEADER}
    before = len(mistakes.found)
    if value["scene"] not in scenes:
        example = min(scenes, default="")
        mistakes.add(line, "scene", f"one of the {len(scenes)} training scenes, e.g. {example!r}", repr(value["scene"]))
    index = parse_int(value["index"])
    if index is None:
        mistakes.add(line, "index", "a point index (an integer >= 0)", repr(value["index"]))
    label = parse_label(value["label"], class_names)
    if label is None:
        mistakes.add(line, "label", f"a class name ({', '.join(class_names)}) or a class id in "
                                    f"[0, {len(class_names)})", repr(value["label"]) if value["label"] else "nothing")
    coords = None
    if any(value[axis] for axis in "xyz"):
        try:
            coords = np.array([float(value[axis]) for axis in "xyz"])
        except ValueError:
            mistakes.add(line, "x,y,z", "three numbers (or all three empty)",
                         repr(",".join(value[axis] for axis in "xyz")))
    if len(mistakes.found) > before:
        return None
    return LabelRow(line, value["scene"], index, label, coords)


def read_rows(path: Path, scenes: set[str], class_names: Sequence[str], mistakes: Mistakes) -> list[LabelRow]:
    """The well-formed rows of the CSV at ``path``; the mistakes of the others go to ``mistakes``."""
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte order mark
        reader = csv.DictReader(fh)
        try:
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in REQUIRED if name not in header]
            if missing:
                mistakes.add(1, missing[0], f"a header naming the columns {','.join(HEADER)} (at least "
                                            f"{', '.join(REQUIRED)})", repr(",".join(header)))
                return []
            reader.fieldnames = header
            parsed = [parse_row(row, reader.line_num, scenes, class_names, mistakes) for row in reader]
        except (UnicodeDecodeError, csv.Error) as err:
            raise AnnotationError(f"{path}: expected UTF-8 comma-separated values, got unreadable text near "
                                  f"line {reader.line_num + 1} ({err})") from None
    return [row for row in parsed if row is not None]


def check_points(rows: Sequence[LabelRow], reader: Reader, previous: Optional[Budget], mistakes: Mistakes) -> None:
    """Record rows whose point is out of range, elsewhere than its x, y, z, given twice or already labelled."""
    first_line: dict[tuple[str, int], int] = {}
    for scene in sorted({r.scene for r in rows}, key=reader.scenes.index):
        points = xyz(np.asarray(reader.load(scene)["coord"]))
        labelled = set(previous.indices(scene).tolist()) if previous is not None else set()
        for r in [r for r in rows if r.scene == scene]:
            if not 0 <= r.index < len(points):
                mistakes.add(r.line, "index", f"a point index in [0, {len(points)}) of scene {scene!r}", str(r.index))
            elif r.xyz is not None and not np.allclose(r.xyz, points[r.index], rtol=RTOL, atol=ATOL):
                mistakes.add(r.line, "x,y,z", f"the coordinates of point {r.index} of scene {scene!r} "
                             f"{tuple(np.round(points[r.index], 6).tolist())} (is this CSV from other scans?)",
                             str(tuple(r.xyz.tolist())))
            elif (scene, r.index) in first_line:
                mistakes.add(r.line, "index", f"each point once, point {r.index} of scene {scene!r} is also on "
                             f"line {first_line[scene, r.index]}", str(r.index))
            elif r.index in labelled:
                mistakes.add(r.line, "index", f"a point not yet labelled, point {r.index} of scene {scene!r} is in "
                             f"--budget {previous.root}", str(r.index))
            first_line.setdefault((scene, r.index), r.line)


def read_labels(path: Path, reader: Reader, class_names: Sequence[str],
                previous: Optional[Budget]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Check every row of a filled-in CSV; scene → (K,) int64 indices and scene → (K,) int64 class ids.

    Raises :class:`AnnotationError` listing every mistake (``<file>:<line>: field …``), or when there
    are no rows.
    """
    if not path.is_file():
        raise AnnotationError(f"{path}: expected the filled-in {CSV_NAME} here, no such file")
    mistakes = Mistakes(path)
    rows = read_rows(path, set(reader.scenes), class_names, mistakes)
    check_points(rows, reader, previous, mistakes)
    mistakes.raise_any()
    if not rows:
        raise AnnotationError(f"{path}: no rows below the header; nothing to apply")
    scenes = sorted({r.scene for r in rows}, key=reader.scenes.index)
    return ({s: np.array([r.index for r in rows if r.scene == s], dtype=np.int64) for s in scenes},
            {s: np.array([r.label for r in rows if r.scene == s], dtype=np.int64) for s in scenes})


def apply_command(args: argparse.Namespace) -> Budget:
    """``apply``: returns the written budget."""
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out}: exists and is not empty; choose a new budget directory")
    _, dataset, previous = open_dataset(args)
    labels_path = Path(args.labels)
    try:
        indices, labels = read_labels(labels_path, dataset.reader, dataset.class_names, previous)
        meta = {"method": "pcseg-annotate apply", "labels_csv": str(labels_path.resolve()),
                "previous": None if previous is None else str(previous.root.resolve()),
                "new_points": int(sum(len(i) for i in indices.values()))}
        budget = write_budget(out, lambda tmp: write_annotated_budget(tmp, indices, labels, meta,
                                                                      reader=dataset.reader, previous=previous))
    except ValueError as err:  # AnnotationError, or --budget's labels not those of these scans
        raise InputError(str(err)) from None
    total = budget.manifest["counts"]["total"]["selected"]
    print(f"wrote annotated budget {out}: {meta['new_points']} new labelled points, {total} in all; train with "
          f"data.budget={out}")
    return budget


def main(argv: Optional[Sequence[str]] = None) -> Path | Budget:
    args = parse_args(argv)
    with tool_errors(args.config):
        return select_command(args) if args.command == "select" else apply_command(args)


if __name__ == "__main__":
    main()
