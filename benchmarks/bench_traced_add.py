"""One pairs-form convolution (the traced form of ``pcseg.sparse.functional``) in eager and under
``torch.compile``, with the per-offset add written two ways; one JSON line per (rows, add, executor, threads).

    python benchmarks/bench_traced_add.py [--rows 2000 60000] [--threads 2] [--repeats 7] [--profile]

Why it exists: an AOTInductor package of the pairs form barely gets faster with a second CPU thread
(docs/benchmarks.md, issue 17). This isolates the convolution: a random (rows, 27) neighbour table
with about half the neighbours present, 64 → 64 channels, for each offset ``nonzero`` → gather →
``mm`` → add into the output rows, the add as ``index_add_`` (what the traced form uses) or as
``scatter_add_`` over the rows broadcast to the columns. Inductor lowers the first to atomic float
adds on CPU and leaves the second to ATen's kernel at more than one thread
(``torch._inductor.config.cpp.fallback_scatter_reduce_sum``). Each line: ``min_ms`` / ``median_ms``
over ``--repeats`` calls after the first (the compile) and a warm-up, ``max_abs_diff`` against eager ``index_add_``,
and with ``--profile`` ``self_ms``: self time per op (Inductor's kernels summed as ``inductor_kernels``,
kernel profiling switched on, which also slows that run's timed calls a little) of one more call. Run each thread count in a process of its own
(Inductor fixes its thread count at compile time; this script compiles per line).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Callable

import torch
from torch import Tensor

from bench_latency import timed  # min / median after a warm-up, as every latency line here

CHANNELS, KERNEL_VOLUME, IDENTITY = 64, 27, 13


def pairs_conv(add: str) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """feats (N, C), table (N, K) int64 (-1: no neighbour), weight (K, C, C) → (N, C)."""
    def conv(feats: Tensor, table: Tensor, weight: Tensor) -> Tensor:
        out = feats @ weight[IDENTITY]
        for k in range(KERNEL_VOLUME):
            if k == IDENTITY:
                continue
            out_rows = (table[:, k] >= 0).nonzero().squeeze(1)
            products = feats.index_select(0, table[:, k].index_select(0, out_rows)) @ weight[k]
            if add == "index_add":
                out.index_add_(0, out_rows, products)
            else:
                out.scatter_add_(0, out_rows[:, None].expand_as(products), products)
        return out
    return conv


def inputs(rows: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    table = torch.randint(-rows, rows, (rows, KERNEL_VOLUME), generator=g)
    table[table < 0] = -1
    table[:, IDENTITY] = torch.arange(rows)
    return (torch.randn(rows, CHANNELS, generator=g), table,
            torch.randn(KERNEL_VOLUME, CHANNELS, CHANNELS, generator=g))


def self_times(fn: Callable[[], Tensor]) -> dict[str, float]:
    with torch.profiler.profile() as prof:
        fn()
    totals: Counter = Counter()
    for event in prof.key_averages():
        name = "inductor_kernels" if event.key.startswith(("graph_", "cpp_")) else event.key
        totals[name] += event.self_cpu_time_total / 1e3
    return {name: round(ms, 1) for name, ms in totals.most_common(6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 60000])
    parser.add_argument("--threads", type=int, default=2, help="one thread count per process")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    torch._dynamo.config.capture_scalar_outputs = True
    if args.profile:
        torch._inductor.config.cpp.enable_kernel_profile = True
    for rows in args.rows:
        feats, table, weight = inputs(rows)
        ref = pairs_conv("index_add")(feats, table, weight)
        for add in ("index_add", "scatter_add"):
            for executor in ("eager", "compiled"):
                conv = pairs_conv(add)
                if executor == "compiled":
                    torch._dynamo.reset()
                    conv = torch.compile(conv, fullgraph=True, dynamic=True)
                start = time.perf_counter()
                diff = float((conv(feats, table, weight) - ref).abs().max())
                first_s = time.perf_counter() - start
                min_ms, median_ms = timed(lambda: conv(feats, table, weight), args.repeats)
                record = dict(rows=rows, add=add, executor=executor, threads=args.threads, first_call_s=round(first_s, 1),
                              max_abs_diff=diff, min_ms=round(min_ms, 1), median_ms=round(median_ms, 1))
                if args.profile:
                    record["self_ms"] = self_times(lambda: conv(feats, table, weight))
                print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
