"""Plumbing shared by the experiment scripts: run a tool, read its result, run many, save the table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def mean_std_cell(values: Sequence[float], per_seed: bool = False) -> str:
    """``"mean ± sample std"`` of ``values`` (std is nan for one value), with the values when ``per_seed``."""
    std = np.std(values, ddof=1) if len(values) > 1 else float("nan")
    cell = f"{np.mean(values):.1f} ± {std:.1f}"
    return cell + f" ({', '.join(f'{v:.1f}' for v in values)})" if per_seed else cell


def run_script(script: Path, args: Sequence[str], log: Path, threads: int = 1, append: bool = False) -> float:
    """``python script args…`` in a subprocess with ``threads`` OMP threads and the repository on its path.

    Its output goes to ``log`` (appended with ``append``). Returns the wall time in seconds; raises
    RuntimeError on a non-zero exit.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(script), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log, "a" if append else "w") as fh:
        if subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return time.perf_counter() - start


def run_tool(tool: str, args: Sequence[str], work_dir: Path, threads: int = 1, append: bool = False) -> float:
    """``tools/<tool> --work-dir work_dir args…`` through :func:`run_script`.

    Its output goes to ``work_dir/stdout.txt`` (appended with ``append``, for resumed tools); the wall
    time is written to ``work_dir/wall_seconds.txt`` once the tool succeeded, and returned.
    """
    seconds = run_script(REPO / "tools" / tool, ["--work-dir", str(work_dir), *args], work_dir / "stdout.txt",
                         threads, append)
    (work_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def run_resumable(tool: str, args: Sequence[str], work_dir: Path, threads: int = 1) -> tuple[float, bool]:
    """:func:`run_tool` for a tool that checkpoints to ``work_dir/model_last.pth`` (``train.py``,
    ``pretrain_slidr.py``): a run stopped before it finished continues with ``--resume``.

    Returns the wall time and whether the run was resumed.
    """
    resume = (work_dir / "model_last.pth").is_file()
    return run_tool(tool, [*args, *(["--resume"] if resume else [])], work_dir, threads, append=resume), resume


def wall_seconds(work_dir: Path) -> float | None:
    """The wall time :func:`run_tool` recorded for ``work_dir``, None if it has not finished."""
    path = work_dir / "wall_seconds.txt"
    return float(path.read_text()) if path.is_file() else None


def final_miou(work_dir: Path) -> float | None:
    """mIoU of the last ``val`` record in ``work_dir/log.jsonl``, None if there is none."""
    log = work_dir / "log.jsonl"
    if not log.is_file():
        return None
    vals = [r for r in map(json.loads, log.read_text().splitlines()) if r["type"] == "val"]
    return vals[-1]["miou"] if vals else None


def save_summary(out: Path, args: Any, start: float, results: dict, table: str, **extra: Any) -> dict:
    """Write ``out/results.json`` (the arguments, wall time since ``start``, results, table, ``extra``)."""
    summary = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "wall_seconds": time.perf_counter() - start, **extra, "results": results, "table": table}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return summary
