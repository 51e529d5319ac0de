"""Page faults and kernel time per training step of the demo's model, per allocator setting (JSON lines).

    python benchmarks/page_faults.py [--steps 8] [--warmup 2] [--threads 1] [--settings NAME …]

Each setting runs in its own interpreter (the allocator settings are process-wide and torch reads
``THP_MEM_ALLOC_ENABLE`` at its first allocation): it builds ``configs/demo/scannet_sparse.yaml``'s
trainer (Res16UNet14A at 5 cm, batch 2, bf16 autocast, on the demo's synthetic rooms, written by
``pcseg.cli.demo``'s helpers when absent), loads the first batch of epoch 0, runs ``--warmup`` steps and
then ``--steps`` timed optimisation steps on it (``Trainer.run_step``), each measured from
``/proc/self/stat``: minor/major faults, user and system CPU seconds (clock ticks), and the
resident set (``/proc/self/status``), with the machine-wide huge-page fault, fallback and direct
compaction counts (``/proc/vmstat``; other processes add to them). One line per setting: min and median over the steps of wall,
CPU (user+sys), sys share of CPU (the kernel's share: page faults and the munmap of freed mappings)
and faults, plus the RSS before and after the timed steps (heap growth shows as a rising RSS).
Fault counts and system time are far less sensitive to a busy machine than wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's pcseg, like the other benchmarks

# name → (THP_MEM_ALLOC_ENABLE, mallopt parameters)
SETTINGS: dict[str, tuple[str, dict[str, int]]] = {
    "glibc-default": ("0", {}),
    "mmap-4m": ("0", {"mmap_threshold": 4 << 20}),
    "mmap-4m+thp": ("1", {"mmap_threshold": 4 << 20}),
    "mmap-2m+thp": ("1", {"mmap_threshold": 2 << 20}),
    "mmap-32m+trim-512m+pad-64m": ("0", {"mmap_threshold": 32 << 20, "trim_threshold": 512 << 20,
                                         "top_pad": 64 << 20}),
}


def proc_stat() -> dict[str, float]:
    """This process's minor/major faults and user/system CPU seconds from ``/proc/self/stat``."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")  # fields after the command name start at stat's field 3 (state)
    return {"minflt": int(fields[7]), "majflt": int(fields[9]),
            "user_s": int(fields[11]) / tick, "sys_s": int(fields[12]) / tick}


THP_COUNTERS = ("thp_fault_alloc", "thp_fault_fallback", "compact_stall")


def thp_counters() -> dict[str, int]:
    """Machine-wide huge-page fault / fallback and direct-compaction counters (``/proc/vmstat``)."""
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return {k: int(values.get(k, 0)) for k in THP_COUNTERS}


def rss_mb() -> float:
    """Resident set of this process in MiB (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status: no VmRSS line")


def summary(values: list[float], digits: int = 4) -> dict[str, float]:
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits)}


def worker(setting: str, steps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Run the demo's training steps under ``setting`` (this process); the record of one JSON line."""
    import time

    from pcseg.utils.memory import mallopt
    thp, params = SETTINGS[setting]
    ok = mallopt(**params) if params else True
    import torch

    from pcseg.cli.demo import CONFIG, ensure_budget, ensure_data
    from pcseg.engine.build import Runtime, build_trainer
    from pcseg.engine.config import load_config
    from pcseg.engine.distributed import DistInfo
    from pcseg.engine.hooks import TrainState
    from pcseg.engine.seeding import seed_all
    from pcseg.methods import build_method

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work_dir:
        cfg = load_config(CONFIG, ["data.num_workers=0", f"work_dir={work_dir}"])
        root = Path(cfg.data.kwargs["root"])
        ensure_data(root, 10, 40_000)  # pcseg-demo's defaults
        ensure_budget(root, Path(cfg.data.budget))
        seed_all(cfg.seed)
        method = build_method(cfg.method)
        trainer = build_trainer(cfg, method, Runtime(DistInfo(), torch.device("cpu")), work_dir)
        trainer.sampler.set_epoch(0)
        batch = next(iter(trainer.train_loader))  # the same batch every step: repeats of one workload
        trainer.model.train()
        rows, rss_before = [], None
        for i in range(warmup + steps):
            if i == warmup:
                rss_before = rss_mb()
            before, vm, t = proc_stat(), thp_counters(), time.perf_counter()
            trainer.run_step(batch, TrainState(epoch=0, step=i, max_epochs=1, max_steps=warmup + steps,
                                                                     iters_per_epoch=warmup + steps))
            wall, after, vm_after = time.perf_counter() - t, proc_stat(), thp_counters()
            if i >= warmup:
                rows.append({k: after[k] - before[k] for k in after} | {"wall_s": wall}
                            | {k: vm_after[k] - vm[k] for k in vm})
    cpu = [r["user_s"] + r["sys_s"] for r in rows]
    return {"setting": setting, "THP_MEM_ALLOC_ENABLE": thp, "mallopt": params, "mallopt_ok": ok,
            "threads": threads, "steps": steps, "voxels": len(batch["coords"]),
            "wall_s": summary([r["wall_s"] for r in rows]), "cpu_s": summary(cpu),
            "sys_s": summary([r["sys_s"] for r in rows]),
            "sys_share": summary([r["sys_s"] / c if c else 0.0 for r, c in zip(rows, cpu)], 3),
            "minflt_per_step": summary([r["minflt"] for r in rows], 0),
            "majflt_per_step": summary([r["majflt"] for r in rows], 0),
            **{f"{k}_per_step": summary([r[k] for r in rows], 0) for k in THP_COUNTERS},
            "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_mb(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--worker", choices=sorted(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1, --warmup >= 0")
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.warmup, args.threads)), flush=True)
        return
    for setting in args.settings:
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": SETTINGS[setting][0], "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, __file__, "--worker", setting, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"page_faults.py: setting {setting} failed:\n{out.stderr[-4000:]}")
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
