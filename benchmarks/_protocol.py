"""Experiment protocols (``benchmarks/protocols/<name>.yaml``): load and validate, expand into runs,
schedule them on worker processes, score them on the test split, tabulate.

A protocol holds every setting of an experiment (issue 19); ``benchmarks/slidr_v1.yaml`` is the model.
The sections this module reads (an experiment script names the extra ones it reads itself, such as
``teacher``):

- ``name`` (the file's stem: a changed protocol is a new file), ``seeds`` (distinct ints >= 0),
  ``jobs`` (default worker count);
- ``data.splits.{train,val,test}``: each with its ``generator_seed`` (or ``generator_seeds``); every
  generator seed anywhere in the protocol must differ from every other, so no split, teacher or
  pre-training pool shares a scene;
- ``budgets``: name -> ``{kind: ratio | points_per_scene, amount, out}``, drawn per seed on the
  train split (budget seed = run seed) before any run;
- ``common_overrides``: dotted ``key=value`` overrides of every run;
- ``pretrain`` (optional) and ``downstream`` (task -> stage): a stage is ``{tool, config, work_dir,
  overrides, args, budgets, rows}``; ``rows`` maps a row name to its overrides (a list) or to
  ``{config, overrides, args}``. A stage's runs are rows x budgets (or none) x seeds; a run trains
  ``config`` with ``common_overrides + stage overrides + row overrides``, in that order;
- ``metric``: ``{checkpoint, overrides, paired}``: every downstream run's ``checkpoint`` (relative to
  its work dir) is evaluated with the run's own config and overrides plus ``metric.overrides`` (which
  point the val slot at the test split) exactly as ``tools/test.py`` does; ``paired`` lists ``"a - b"``
  row differences, paired by seed.

Strings are ``string.Template`` text: ``${out}`` (the experiment's ``--out``), ``${seed}``, ``${row}``,
``${budget}`` (the budget's name) and ``${budget_dir}`` (its folder for the run's seed).

A run waits for the runs whose work dir its overrides or arguments name (a fine-tuning run for its
pre-training run). Finished work is reused: a trained run has ``wall_seconds.txt``, a scored one
``test.json``; a stopped training continues (``--resume``).

Bad protocols raise :class:`~pcseg.utils.errors.InputError` ``<file>: <field>: <expected>, got <found>``.

``python benchmarks/_protocol.py evaluate --config C --checkpoint K --out test.json [overrides…]`` is
the evaluation subprocess of one run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import string
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from _experiment import REPO, final_miou, mean_std_cell, run_resumable, run_script, run_tool, save_summary, wall_seconds

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pcseg.utils.atomic import atomic_path  # noqa: E402
from pcseg.utils.errors import InputError  # noqa: E402
from pcseg.utils.yaml_io import load_yaml_file  # noqa: E402

__all__ = ["TOOLS", "SPLITS", "TEST_FILE", "Row", "Stage", "Metric", "Protocol", "Run", "load_protocol",
           "parse_paired", "expand", "dependencies", "finished", "schedule", "collect", "task_table", "table",
           "section_settings", "make_budgets", "generate_once", "run_experiment"]

TOOLS = {"tools/train.py": "checkpoint", "tools/pretrain_slidr.py": "checkpoint", "tools/active_learn.py": "flag"}
"""Tools a stage may run -> how a stopped run continues: ``checkpoint`` (``--resume`` once
``model_last.pth`` exists, :func:`~_experiment.run_resumable`) or ``flag`` (always ``--resume``: the
tool reuses its finished parts itself)."""
SPLITS = ("train", "val", "test")
TEST_FILE = "test.json"
_SECTIONS = ("name", "seeds", "jobs", "data", "budgets", "common_overrides", "pretrain", "downstream", "metric")
_BUDGET_KINDS = ("ratio", "points_per_scene")


@dataclass(frozen=True)
class Row:
    """One row of a stage: its name, its own config (None: the stage's), overrides and tool arguments."""

    name: str
    config: str | None
    overrides: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class Stage:
    """A group of runs of one tool; ``scored`` stages (downstream tasks) are evaluated on the test split."""

    name: str
    tool: str
    config: str
    work_dir: str
    overrides: tuple[str, ...]
    args: tuple[str, ...]
    budgets: tuple[str, ...]
    rows: tuple[Row, ...]
    scored: bool


@dataclass(frozen=True)
class Metric:
    """How a scored run is evaluated: its checkpoint, the test-split overrides, the paired differences."""

    checkpoint: str
    overrides: tuple[str, ...]
    paired: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Protocol:
    """A validated protocol file. ``sections`` holds the raw extra sections a script asked for."""

    path: Path
    name: str
    seeds: tuple[int, ...]
    jobs: int
    data: Mapping[str, Any]
    budgets: Mapping[str, Mapping[str, Any]]
    common_overrides: tuple[str, ...]
    stages: tuple[Stage, ...]
    metric: Metric | None
    sections: Mapping[str, Any]

    @property
    def sha256(self) -> str:
        """Hash of the protocol file's bytes (recorded beside its results)."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Run:
    """One training run: a stage's row at one seed (and budget). Paths are absolute, templates filled;
    ``test_overrides`` (scored runs) are the run's overrides followed by ``metric.overrides``."""

    stage: str
    row: str
    seed: int
    budget: str | None
    tool: str
    config: Path
    overrides: tuple[str, ...]
    args: tuple[str, ...]
    work_dir: Path
    scored: bool
    test_overrides: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """``stage/budget/row/seed<k>`` (``-`` for no budget), unique within a protocol."""
        return f"{self.stage}/{self.budget or '-'}/{self.row}/seed{self.seed}"


# --- loading ---------------------------------------------------------------------------------------------

def _fail(path: Path, field: str, expected: str, got: Any) -> InputError:
    return InputError(f"{path}: {field}: expected {expected}, got {got!r}")


def _mapping(path: Path, field: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, field, "a mapping", value)
    return value


def _text(path: Path, field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, field, "a non-empty string", value)
    return value


def _int(path: Path, field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(path, field, f"an int >= {low}", value)
    return value


def _strings(path: Path, field: str, value: Any, overrides: bool = False) -> tuple[str, ...]:
    """A list of strings (``key=value`` each with ``overrides``); absent (None) is empty."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(path, field, "a list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or (overrides and "=" not in item):
            raise _fail(path, f"{field}[{i}]", "a dotted key=value override" if overrides else "a string", item)
    return tuple(value)


def _only(path: Path, field: str, raw: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise InputError(f"{path}: {field}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _generator_seeds(value: Any, field: str) -> list[tuple[str, Any]]:
    """Every ``generator_seed`` / ``generator_seeds`` under ``value``, as (dotted field, value)."""
    found = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{field}.{key}" if field else str(key)
            if key in ("generator_seed", "generator_seeds"):
                found.append((where, item))
            else:
                found += _generator_seeds(item, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _generator_seeds(item, f"{field}[{i}]")
    return found


def _check_generator_seeds(path: Path, raw: Mapping[str, Any]) -> None:
    """Every split names its generator seed(s) and no seed is used twice anywhere in the protocol."""
    splits = _mapping(path, "data.splits", _mapping(path, "data", raw.get("data")).get("splits"))
    for split in SPLITS:
        spec = _mapping(path, f"data.splits.{split}", splits.get(split))
        if "generator_seed" not in spec and "generator_seeds" not in spec:
            raise InputError(f"{path}: data.splits.{split}: expected a generator_seed (or generator_seeds), "
                             f"got keys {sorted(spec)}")
    owner: dict[int, str] = {}
    for field, value in _generator_seeds(raw, ""):
        values = value if field.endswith("generator_seeds") else [value]
        if not isinstance(values, list) or not values:
            raise _fail(path, field, "a non-empty list of ints >= 0", value)
        for i, seed in enumerate(values):
            _int(path, field if field.endswith("generator_seed") else f"{field}[{i}]", seed, 0)
            if seed in owner:
                raise InputError(f"{path}: {field}: generator seed {seed} is also used by {owner[seed]}; "
                                 f"every split, teacher and pool needs its own seeds")
            owner[seed] = field


def _row(path: Path, field: str, name: str, raw: Any) -> Row:
    if isinstance(raw, list):
        return Row(name, None, _strings(path, field, raw, overrides=True), ())
    raw = _mapping(path, field, raw)
    _only(path, field, raw, ("config", "overrides", "args"))
    config = _text(path, f"{field}.config", raw["config"]) if "config" in raw else None
    return Row(name, config, _strings(path, f"{field}.overrides", raw.get("overrides"), overrides=True),
               _strings(path, f"{field}.args", raw.get("args")))


def _stage(path: Path, field: str, name: str, raw: Any, budgets: Mapping[str, Any], scored: bool) -> Stage:
    raw = _mapping(path, field, raw)
    _only(path, field, raw, ("tool", "config", "work_dir", "overrides", "args", "budgets", "rows"))
    tool = _text(path, f"{field}.tool", raw.get("tool"))
    if tool not in TOOLS:
        raise _fail(path, f"{field}.tool", f"one of {', '.join(TOOLS)}", tool)
    names = _strings(path, f"{field}.budgets", raw.get("budgets"))
    for i, budget in enumerate(names):
        if budget not in budgets:
            raise _fail(path, f"{field}.budgets[{i}]", f"a budget of the budgets section ({', '.join(budgets)})",
                        budget)
    rows = _mapping(path, f"{field}.rows", raw.get("rows"))
    if not rows:
        raise _fail(path, f"{field}.rows", "at least one row", dict(rows))
    return Stage(name, tool, _text(path, f"{field}.config", raw.get("config")),
                 _text(path, f"{field}.work_dir", raw.get("work_dir")),
                 _strings(path, f"{field}.overrides", raw.get("overrides"), overrides=True),
                 _strings(path, f"{field}.args", raw.get("args")), names,
                 tuple(_row(path, f"{field}.rows.{r}", str(r), v) for r, v in rows.items()), scored)


def _paired(path: Path, value: Any, tasks: Mapping[str, Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """``metric.paired``'s ``"a - b"`` texts as (a, b) pairs; ``tasks``: task name -> its row names,
    and both rows of a pair must be rows of every task."""
    paired = []
    for i, text in enumerate(_strings(path, "metric.paired", value)):
        parts = [p.strip() for p in text.split(" - ")]
        if len(parts) != 2 or not all(parts):
            raise _fail(path, f"metric.paired[{i}]", "'<row> - <row>'", text)
        for task, rows in tasks.items():
            if not set(parts) <= set(rows):
                raise InputError(f"{path}: metric.paired[{i}]: expected rows of every downstream task, got "
                                 f"{text!r}; task {task} has rows {', '.join(rows)}")
        paired.append((parts[0], parts[1]))
    return tuple(paired)


def _metric(path: Path, raw: Any, stages: Sequence[Stage]) -> Metric:
    raw = _mapping(path, "metric", raw)
    _only(path, "metric", raw, ("tool", "checkpoint", "overrides", "report", "paired", "also_recorded"))
    if raw.get("tool", "tools/test.py") != "tools/test.py":
        raise _fail(path, "metric.tool", "tools/test.py (the evaluation every scored run gets)", raw["tool"])
    paired = _paired(path, raw.get("paired"), {s.name: [r.name for r in s.rows] for s in stages if s.scored})
    return Metric(_text(path, "metric.checkpoint", raw.get("checkpoint")),
                  _strings(path, "metric.overrides", raw.get("overrides"), overrides=True), paired)


def parse_paired(protocol: Protocol, tasks: Mapping[str, Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """The ``metric.paired`` pairs of a protocol loaded with ``stages=False``, whose rows only its script
    knows (``tasks``: task name -> row names, as for the downstream tasks); InputError names the entry."""
    return _paired(protocol.path, protocol.sections.get("metric", {}).get("paired"), tasks)


def load_protocol(path: str | Path, extra_sections: Sequence[str] = (), stages: bool = True) -> Protocol:
    """Read and validate a protocol file; ``extra_sections`` are the script's own top-level keys.

    ``stages`` False: an experiment that runs no tool (3D-OVS fits in its own process): ``pretrain`` and
    ``downstream`` are refused, ``metric`` (only ``report``, ``paired``, ``also_recorded``: nothing is
    evaluated by ``tools/test.py``) is kept raw in ``sections`` for the script (:func:`parse_paired`),
    ``stages`` is empty.

    Raises InputError naming the file and the field for every mistake: unknown keys, a name that is
    not the file's stem, repeated or negative seeds, a split without a generator seed, a generator
    seed used twice, an unknown budget kind or tool, a row of ``metric.paired`` that a task lacks.
    """
    path = Path(path)
    try:
        raw = load_yaml_file(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the protocol ({err.strerror})") from err
    raw = _mapping(path, "<top level>", raw)
    known = _SECTIONS if stages else tuple(k for k in _SECTIONS if k not in ("pretrain", "downstream"))
    _only(path, "<top level>", raw, (*known, *extra_sections))
    name = _text(path, "name", raw.get("name"))
    if name != path.stem:
        raise _fail(path, "name", f"the file's stem {path.stem!r} (a changed protocol is a new file)", name)
    seeds = raw.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise _fail(path, "seeds", "a non-empty list of ints", seeds)
    for i, seed in enumerate(seeds):
        _int(path, f"seeds[{i}]", seed, 0)
    if len(set(seeds)) != len(seeds):
        raise _fail(path, "seeds", "distinct seeds", seeds)
    _check_generator_seeds(path, raw)
    budgets = _mapping(path, "budgets", raw.get("budgets", {}))
    for budget, spec in budgets.items():
        spec = _mapping(path, f"budgets.{budget}", spec)
        _only(path, f"budgets.{budget}", spec, ("kind", "amount", "out"))
        if spec.get("kind") not in _BUDGET_KINDS:
            raise _fail(path, f"budgets.{budget}.kind", f"one of {', '.join(_BUDGET_KINDS)}", spec.get("kind"))
        amount = spec.get("amount")
        if spec["kind"] == "ratio" and (isinstance(amount, bool) or not isinstance(amount, (int, float))
                                        or not 0 < amount <= 1):
            raise _fail(path, f"budgets.{budget}.amount", "a fraction in (0, 1]", amount)
        if spec["kind"] == "points_per_scene":
            _int(path, f"budgets.{budget}.amount", amount, 1)
        if "${seed}" not in _text(path, f"budgets.{budget}.out", spec.get("out")):
            raise _fail(path, f"budgets.{budget}.out", "a folder containing ${seed} (one budget per seed)", spec["out"])
    if not stages:
        if "metric" in raw:
            _only(path, "metric", _mapping(path, "metric", raw["metric"]), ("report", "paired", "also_recorded"))
        return Protocol(path, name, tuple(seeds), _int(path, "jobs", raw.get("jobs", 1), 1), raw["data"], budgets,
                        _strings(path, "common_overrides", raw.get("common_overrides"), overrides=True), (), None,
                        {k: raw[k] for k in (*extra_sections, "metric") if k in raw})
    runs = [_stage(path, "pretrain", "pretrain", raw["pretrain"], budgets, False)] if "pretrain" in raw else []
    downstream = _mapping(path, "downstream", raw.get("downstream"))
    if not downstream:
        raise _fail(path, "downstream", "at least one task", dict(downstream))
    if "pretrain" in downstream:
        raise _fail(path, "downstream", "task names other than 'pretrain'", list(downstream))
    runs += [_stage(path, f"downstream.{task}", str(task), spec, budgets, True) for task, spec in downstream.items()]
    return Protocol(path, name, tuple(seeds), _int(path, "jobs", raw.get("jobs", 1), 1), raw["data"], budgets,
                    _strings(path, "common_overrides", raw.get("common_overrides"), overrides=True), tuple(runs),
                    _metric(path, raw.get("metric"), runs), {k: raw[k] for k in extra_sections if k in raw})


# --- runs ------------------------------------------------------------------------------------------------

def fill(protocol: Protocol, field: str, text: str, **values: Any) -> str:
    """``text`` with its ``${name}`` variables from ``values``; InputError names ``field`` otherwise."""
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as err:
        raise InputError(f"{protocol.path}: {field}: unknown variable ${{{err.args[0]}}} in {text!r}; "
                         f"known here: {', '.join('${' + k + '}' for k in values)}") from None
    except ValueError as err:
        raise InputError(f"{protocol.path}: {field}: bad $ in {text!r} ({err})") from None


def budget_dir(protocol: Protocol, name: str, seed: int, out: Path) -> Path:
    """The folder of budget ``name`` for ``seed``."""
    return Path(fill(protocol, f"budgets.{name}.out", protocol.budgets[name]["out"], out=out, seed=seed))


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO / p


def expand(protocol: Protocol, out: Path) -> list[Run]:
    """Every run of the protocol, stage by stage, then budget, row and seed, in the file's order.

    Raises InputError when two runs would share a work dir or a config file does not exist.
    """
    out = Path(out).resolve()
    runs, owner = [], {}
    for stage in protocol.stages:
        field = "pretrain" if not stage.scored else f"downstream.{stage.name}"
        for budget in stage.budgets or (None,):
            for row in stage.rows:
                for seed in protocol.seeds:
                    values = {"out": out, "seed": seed, "row": row.name}
                    if budget is not None:
                        values.update(budget=budget, budget_dir=budget_dir(protocol, budget, seed, out))
                    where = f"{field}.rows.{row.name}"
                    config = _resolve(fill(protocol, f"{where}.config" if row.config else f"{field}.config",
                                           row.config or stage.config, **values))
                    if not config.is_file():
                        raise _fail(protocol.path, f"{where}.config" if row.config else f"{field}.config",
                                    "a shipped config file", str(config))
                    overrides = [fill(protocol, "common_overrides", o, **values) for o in protocol.common_overrides]
                    overrides += [fill(protocol, f"{field}.overrides", o, **values) for o in stage.overrides]
                    overrides += [fill(protocol, f"{where}", o, **values) for o in row.overrides]
                    args = [fill(protocol, f"{field}.args", a, **values) for a in (*stage.args, *row.args)]
                    work_dir = Path(fill(protocol, f"{field}.work_dir", stage.work_dir, **values))
                    test = [fill(protocol, "metric.overrides", o, **values) for o in protocol.metric.overrides]
                    run = Run(stage.name, row.name, seed, budget, stage.tool, config, tuple(overrides), tuple(args),
                              work_dir, stage.scored, tuple(overrides + test) if stage.scored else ())
                    if work_dir in owner:
                        raise InputError(f"{protocol.path}: {field}.work_dir: runs {owner[work_dir]} and {run.key} "
                                         f"share {work_dir}; use ${{row}}, ${{seed}} (and ${{budget}}) in it")
                    owner[work_dir] = run.key
                    runs.append(run)
    return runs


def dependencies(runs: Sequence[Run]) -> dict[str, tuple[str, ...]]:
    """Run key -> keys of the runs whose work dir (followed by ``/``) appears in its overrides or arguments."""
    return {run.key: tuple(other.key for other in runs if other is not run and any(
        f"{other.work_dir}/" in text for text in (*run.overrides, *run.args))) for run in runs}


def trained(run: Run) -> bool:
    """Whether the run's tool finished (:func:`~_experiment.run_tool` wrote ``wall_seconds.txt``)."""
    return wall_seconds(run.work_dir) is not None


def finished(run: Run) -> bool:
    """Trained, and for a scored run also evaluated on the test split."""
    return trained(run) and (not run.scored or (run.work_dir / TEST_FILE).is_file())


def schedule(runs: Sequence[Run], execute: Callable[[Run], None], jobs: int,
             done: Callable[[Run], bool] = finished) -> list[str]:
    """``execute(run)`` for every run not ``done``, ``jobs`` at a time, each once its dependencies are done.

    Single runs, not whole seeds, go to the workers, in the order of ``runs`` among those ready.
    Returns the keys executed, in start order. A failed run is reported and its dependants skipped;
    RuntimeError lists both after the others finished.
    """
    deps = dependencies(runs)
    completed = {run.key for run in runs if done(run)}
    pending = [run for run in runs if run.key not in completed]
    started: list[str] = []
    failed: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: dict[Future, Run] = {}
        while pending or running:
            blocked = {run.key for run in pending if any(d in failed for d in deps[run.key])}
            failed.update({key: RuntimeError("a run it needs failed") for key in blocked})
            pending = [run for run in pending if run.key not in blocked]
            for run in [r for r in pending if all(d in completed for d in deps[r.key])]:
                if len(running) == jobs:
                    break
                pending.remove(run)
                started.append(run.key)
                running[pool.submit(execute, run)] = run
            if not running:  # what is left waits on runs that cannot finish (a cycle)
                failed.update({run.key: RuntimeError("its dependencies never finished") for run in pending})
                break
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                run = running.pop(future)
                if future.exception() is None:
                    completed.add(run.key)
                else:
                    failed[run.key] = future.exception()
                    print(f"{run.key} failed: {future.exception()}", flush=True)
    if failed:
        raise RuntimeError("runs not finished: " + "; ".join(f"{k}: {e}" for k, e in failed.items()))
    return started


def execute(protocol: Protocol, run: Run) -> None:
    """Train ``run`` (continuing a stopped one) unless it has, then score it on the test split (scored runs)."""
    if not trained(run):
        args = ["--config", str(run.config), *run.args, *run.overrides]
        if TOOLS[run.tool] == "checkpoint":
            seconds, resumed = run_resumable(Path(run.tool).name, args, run.work_dir)
        else:
            resumed = (run.work_dir / "stdout.txt").is_file()
            seconds = run_tool(Path(run.tool).name, [*args, "--resume"], run.work_dir, append=resumed)
        print(f"{run.key}: trained in {seconds:.0f} s{' (resumed)' if resumed else ''}", flush=True)
    if run.scored and not (run.work_dir / TEST_FILE).is_file():
        checkpoint = run.work_dir / protocol.metric.checkpoint
        run_script(Path(__file__), ["evaluate", "--config", str(run.config), "--checkpoint", str(checkpoint),
                                    "--out", str(run.work_dir / TEST_FILE), *run.test_overrides],
                   run.work_dir / "test_stdout.txt")
        miou = json.loads((run.work_dir / TEST_FILE).read_text())["miou"]
        print(f"{run.key}: test mIoU {100 * miou:.2f}", flush=True)


# --- results ---------------------------------------------------------------------------------------------

def val_miou(protocol: Protocol, run: Run) -> float | None:
    """Val mIoU of the evaluated checkpoint's own run: its folder's ``metrics.json`` (an active-learning
    round), else the last val record of its ``log.jsonl``; None if there is none."""
    folder = (run.work_dir / protocol.metric.checkpoint).parent
    metrics = folder / "metrics.json"
    return json.loads(metrics.read_text())["miou"] if metrics.is_file() else final_miou(folder)


def collect(protocol: Protocol, runs: Sequence[Run]) -> dict[str, Any]:
    """task -> budget (``-`` for none) -> row -> seed -> ``{test_miou, val_miou, seconds}`` (mIoU in 0..1;
    a run not yet scored has test_miou None)."""
    results: dict[str, Any] = {}
    for run in runs:
        if not run.scored:
            continue
        test = run.work_dir / TEST_FILE
        results.setdefault(run.stage, {}).setdefault(run.budget or "-", {}).setdefault(run.row, {})[str(run.seed)] = {
            "test_miou": json.loads(test.read_text())["miou"] if test.is_file() else None,
            "val_miou": val_miou(protocol, run), "seconds": wall_seconds(run.work_dir)}
    return results


def _cell(values: Sequence[float], total: int) -> str:
    if not values:
        return "—"
    return mean_std_cell(values, per_seed=True) + (f" [{len(values)}/{total} seeds]" if len(values) < total else "")


def _percent(by_seed: Mapping[str, Any], seeds: Sequence[str]) -> list[float]:
    return [100 * by_seed[s]["test_miou"] for s in seeds if s in by_seed and by_seed[s]["test_miou"] is not None]


def task_table(task: str, budgets: Sequence[str], rows: Sequence[str], paired: Sequence[tuple[str, str]],
               by_budget: Mapping[str, Any], seeds: Sequence[str]) -> str:
    """One task's markdown table: ``rows`` x ``budgets`` (``-``: one column, "test mIoU (%)") of
    ``by_budget[budget][row][seed]["test_miou"]`` (0..1, None or absent: not scored) in %, mean ± sample
    std (per-seed values), then each ``paired`` (a, b) difference paired by seed (over the seeds both have)."""
    head = " | ".join("test mIoU (%)" if b == "-" else b for b in budgets)
    lines = [f"**{task}**", "", f"| row | {head} |", "|---" * (len(budgets) + 1) + "|"]
    for row in rows:
        cells = [_cell(_percent(by_budget.get(b, {}).get(row, {}), seeds), len(seeds)) for b in budgets]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    for a, b in paired:
        cells = []
        for budget in budgets:
            by_row = by_budget.get(budget, {})
            both = [s for s in seeds if _percent(by_row.get(a, {}), [s]) and _percent(by_row.get(b, {}), [s])]
            diff = np.subtract(_percent(by_row.get(a, {}), both), _percent(by_row.get(b, {}), both))
            cells.append(_cell(list(diff), len(seeds)))
        lines.append(f"| {a} − {b}, paired | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(protocol: Protocol, results: Mapping[str, Any]) -> str:
    """One :func:`task_table` per downstream task: rows x budgets of test mIoU (%), with the
    ``metric.paired`` differences."""
    seeds = [str(s) for s in protocol.seeds]
    return "\n\n".join(task_table(stage.name, stage.budgets or ("-",), [r.name for r in stage.rows],
                                  protocol.metric.paired, results.get(stage.name, {}), seeds)
                       for stage in protocol.stages if stage.scored)


# --- data, budgets and the experiment --------------------------------------------------------------------

def section_settings(protocol: Protocol, field: str, raw: Any, schema: Mapping[str, type],
                     out: Path) -> dict[str, Any]:
    """``raw`` (the protocol's ``field``) checked against a script's ``schema`` (key -> type, all
    required, no other key); ``${out}`` is filled in string values. Raises InputError naming the field."""
    raw = _mapping(protocol.path, field, raw)
    _only(protocol.path, field, raw, tuple(schema))
    settings = {}
    for key, tp in schema.items():
        value = raw.get(key)
        if value is None or isinstance(value, bool) or not isinstance(value, tp):
            raise _fail(protocol.path, f"{field}.{key}", f"a {tp.__name__}", value)
        settings[key] = fill(protocol, f"{field}.{key}", value, out=out) if isinstance(value, str) else value
    return settings


def data_settings(protocol: Protocol, out: Path, keys: Mapping[str, type], split_keys: Mapping[str, type],
                  fixed: Mapping[str, Any] = ()) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The ``data`` section checked against a script's schema (:func:`section_settings`): ``keys``
    (besides ``splits``) and, for every split, ``split_keys``. ``fixed``: keys whose value the script
    implements and the protocol must state as is (the generator).

    Returns (data settings, split -> its settings). Raises InputError naming the field.
    """
    data = section_settings(protocol, "data", {k: v for k, v in protocol.data.items() if k != "splits"}, keys, out)
    for key, expected in dict(fixed).items():
        if data[key] != expected:
            raise _fail(protocol.path, f"data.{key}", f"{expected!r} (what this experiment script runs)", data[key])
    return data, {split: section_settings(protocol, f"data.splits.{split}", protocol.data["splits"][split],
                                          split_keys, out) for split in SPLITS}


def generate_once(root: Path, split: str, settings: Mapping[str, Any], write: Callable[[], Any]) -> None:
    """``write()`` the data of ``split`` under ``root`` unless a marker ``root/.generated_<split>.json``
    says it was written with the same ``settings``; a marker with other settings raises InputError
    (a protocol changed under a finished ``--out``). The marker is written after ``write`` succeeded."""
    marker = root / f".generated_{split}.json"
    plain = json.loads(json.dumps(dict(settings)))
    if marker.is_file():
        saved = json.loads(marker.read_text())
        if saved != plain:
            raise InputError(f"{marker}: {split}: written with {saved}, the protocol asks for {plain}; "
                             f"use another --out")
        return
    write()
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(plain, indent=1))


def make_budgets(protocol: Protocol, out: Path, reader: Any) -> None:
    """Every budget of the protocol for every seed on ``reader`` (the train split), unless it exists."""
    from pcseg.data.budget import MANIFEST, make_budget

    for name, spec in protocol.budgets.items():
        for seed in protocol.seeds:
            path = budget_dir(protocol, name, seed, out)
            if not (path / MANIFEST).is_file():
                make_budget(reader, spec["kind"], spec["amount"], seed, path)


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``--protocol FILE --out DIR [--jobs N]`` (jobs default: the protocol's)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", type=Path, required=True, help="benchmarks/protocols/<name>.yaml")
    parser.add_argument("--out", type=Path, required=True, help="data, budgets, runs and results.json go here")
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time, one thread each (default: the protocol's)")
    return parser.parse_args(argv)


def run_experiment(description: str, prepare: Callable[[Protocol, Path], Any], extra_sections: Sequence[str] = (),
                   argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The whole experiment of a script: load the protocol, ``prepare(protocol, out)`` (writes the data and
    whatever must exist before the runs; returns the train-split reader the budgets are drawn on, or None),
    draw the budgets, run every unfinished run on ``--jobs`` workers, write ``OUT/results.json`` and print
    the tables. Returns the summary. A bad protocol (InputError) exits with ``error: <message>``."""
    args = parse_args(description, argv)
    start = time.perf_counter()
    try:  # a bad protocol ends the script with one error line, before any run
        protocol = load_protocol(args.protocol, extra_sections)
        out = args.out.resolve()
        runs = expand(protocol, out)
        out.mkdir(parents=True, exist_ok=True)
        reader = prepare(protocol, out)
        if protocol.budgets:
            make_budgets(protocol, out, reader)
    except InputError as err:
        raise SystemExit(f"error: {err}") from None
    jobs = args.jobs or protocol.jobs
    started = schedule(runs, lambda run: execute(protocol, run), jobs)
    results = collect(protocol, runs)
    text = table(protocol, results)
    summary = save_summary(out, args, start, results, text, protocol=protocol.name,
                           protocol_sha256=protocol.sha256, runs_started=started)
    print(f"\n{protocol.name}: point-level test mIoU (%) of the last epoch, mean ± sample std over seeds "
          f"{list(protocol.seeds)} (per-seed values):\n\n{text}")
    print(f"\n{len(started)} runs in {summary['wall_seconds'] / 60:.1f} min with {jobs} workers")
    return summary


def evaluate(argv: Sequence[str] | None = None) -> None:
    """``evaluate --config C --checkpoint K --out FILE [overrides…]``: what ``tools/test.py`` computes
    (the config's val slot), written as JSON (mIoU, accuracies, per-class IoU, in 0..1) atomically."""
    from pcseg.engine.build import config_section, evaluate_checkpoint, setup_runtime
    from pcseg.engine.config import load_config
    from pcseg.engine.distributed import shutdown
    from pcseg.methods import build_method

    parser = argparse.ArgumentParser(prog="_protocol.py evaluate")
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    runtime = setup_runtime(cfg)
    try:
        with config_section("method"):
            method = build_method(cfg.method)
        metrics, names = evaluate_checkpoint(cfg, method, runtime, args.checkpoint)
    finally:
        shutdown(runtime.dist)
    record = metrics.as_dict(names)
    if not math.isfinite(record["miou"]):
        raise RuntimeError(f"{args.checkpoint}: mIoU is {record['miou']}")
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps({"checkpoint": args.checkpoint, **record}, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] != ["evaluate"]:
        raise SystemExit("usage: python benchmarks/_protocol.py evaluate --config C --checkpoint K --out FILE [overrides…]")
    evaluate(sys.argv[2:])
