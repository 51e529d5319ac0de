"""Draw a sparse label budget for the training split of a config.

    python tools/make_budget.py --config configs/scannet/sparse_0.1pct.yaml --kind ratio --amount 0.001 --seed 0
    python tools/make_budget.py --config configs/image2d/sparse_pixels.yaml --kind points_per_scene --amount 50 \
        --seed 0 [--out DIR] [data.kwargs.root=data/image2d …]

The budget (``pcseg.data.budget``) is drawn over the raw scenes of the config's training split and
written to --out, by default the config's ``data.budget``: the directory training reads. The tool
prints the labelled points per class and the labelled fraction. An existing budget is never
overwritten: one with the same kind, amount, seed and scenes is checked against the data (label
hashes) and kept, any other is an error.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from pcseg.data.budget import MANIFEST, Budget, Reader, load_budget, make_budget
from pcseg.data.formats import IGNORE_INDEX
from pcseg.engine.build import build_dataset
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import Config, ConfigError, ConfigKeyError, load_config
from pcseg.utils.errors import InputError

DRAWN_KINDS = ("ratio", "points_per_scene")  # "active" and "annotated" budgets come from a method or a person


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config whose training split the budget is for")
    parser.add_argument("--kind", required=True, choices=DRAWN_KINDS)
    parser.add_argument("--amount", required=True,
                        help="ratio: fraction of each class's points in (0, 1]; points_per_scene: an int >= 1")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", help="budget directory (default: the config's data.budget)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.kwargs.root=data/scannet")
    return parser.parse_args(argv)


def parse_amount(kind: str, text: str) -> float | int:
    """``--amount`` as make_budget expects it: a float for ``ratio``, an int for ``points_per_scene``."""
    try:
        return float(text) if kind == "ratio" else int(text)
    except ValueError:
        expected = "a fraction such as 0.001" if kind == "ratio" else "an integer such as 20"
        raise InputError(f"--amount for --kind {kind}: expected {expected}, got {text!r}") from None


def training_reader(cfg: Config) -> Reader:
    """The raw-scene reader of ``cfg``'s training split.

    Builds the training dataset without its budget (which may not exist yet); that loads no scene.
    """
    dataset = build_dataset(cfg, cfg.data.train, train=False)
    base = getattr(dataset, "base", dataset)  # wrappers such as pcseg.data.views.TwoViewDataset
    reader = getattr(base, "reader", None)
    if reader is None:
        raise ConfigKeyError(f"data.name: dataset {cfg.data.name!r} ({type(base).__name__}) has no raw-scene "
                          f"reader (.reader); a budget cannot be drawn for it")
    return reader


def existing_budget(out: Path, kind: str, amount: float | int, seed: int, reader: Reader) -> Optional[Budget]:
    """The budget already at ``out`` if it was made with these settings; None if ``out`` is absent or empty.

    Raises InputError when ``out`` holds anything else, naming what differs.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return None
    if not (out / MANIFEST).is_file():
        raise InputError(f"{out}: exists and is not a budget directory ({MANIFEST} missing); "
                         f"remove it or pass another --out")
    budget = load_budget(out)
    wanted = {"kind": kind, "amount": amount, "seed": seed, "scenes": list(reader.scenes)}
    for key, value in wanted.items():
        if budget.manifest[key] != value:
            got = budget.manifest[key]
            if key == "scenes":
                value, got = f"{len(value)} scenes of {reader}", f"{len(got)} other scenes"
            raise InputError(f"{out / MANIFEST}: a different budget exists here ({key}: requested {value}, "
                             f"found {got}); remove it or pass another --out")
    return budget


def class_counts(budget: Budget, reader: Reader, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the points the budget labels and all labelled points: two (C,) int64 arrays.

    Checks every scene's labels against the budget's hashes (:meth:`Budget.mask`).
    """
    selected = np.zeros(num_classes, dtype=np.int64)
    labelled = np.zeros(num_classes, dtype=np.int64)
    for scene in budget.scenes:
        segment = np.asarray(reader.load(scene)["segment"], dtype=np.int64)
        mask = budget.mask(scene, segment)
        valid = segment != IGNORE_INDEX
        labelled += np.bincount(segment[valid], minlength=num_classes)
        selected += np.bincount(segment[valid & mask], minlength=num_classes)
    return selected, labelled


def format_counts(class_names: Sequence[str], selected: np.ndarray, labelled: np.ndarray) -> str:
    """A table: class, budget points, labelled points, fraction; then the total."""
    width = max(len(n) for n in [*class_names, "total"])
    lines = [f"{'class':<{width}}  {'budget':>10}  {'labelled':>12}  {'fraction':>10}"]
    rows = [*zip(class_names, selected, labelled), ("total", selected.sum(), labelled.sum())]
    for name, k, n in rows:
        fraction = f"{100 * k / n:9.4f}%" if n else f"{'-':>10}"
        lines.append(f"{name:<{width}}  {k:>10d}  {n:>12d}  {fraction}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Budget:
    args = parse_args(argv)
    with tool_errors(args.config):
        amount = parse_amount(args.kind, args.amount)
        cfg = load_config(args.config, args.overrides)
        if args.out is None and cfg.data.budget is None:
            raise ConfigError(f"{args.config}: data.budget is not set; set it or pass --out")
        reader = training_reader(cfg)
        out = Path(args.out if args.out is not None else cfg.data.budget)
        budget = existing_budget(out, args.kind, amount, args.seed, reader)
        if budget is None:
            try:
                budget = make_budget(reader, args.kind, amount, args.seed, out)
            except ValueError as err:  # amount or seed out of range
                raise InputError(str(err)) from None
            print(f"wrote {args.kind} budget (amount {amount}, seed {args.seed}) for {len(budget.scenes)} scenes "
                  f"of {reader} to {out}")
        else:
            print(f"{out}: a budget with these settings exists; checking it against the data")
        try:
            selected, labelled = class_counts(budget, reader, reader.NUM_CLASSES)
        except ValueError as err:  # labels differ from those the budget was made from
            raise InputError(str(err)) from None
        print(format_counts(reader.CLASS_NAMES, selected, labelled))
        return budget


if __name__ == "__main__":
    main()
