"""Keep long CPU training runs from growing their heap through fragmentation (Linux, glibc).

glibc serves allocations below its mmap threshold from the heap, and it raises that threshold
(up to 32 MiB) every time a large mmap-ed block is freed. A training step allocates many
activation and scratch tensors of slowly varying size; once they come from the heap, small
long-lived allocations pin it and each slightly larger request grows it instead of reusing the
freed holes. Measured here: 200 alloc/free cycles of ~8 MB tensors grew the RSS by ~790 MB by
default and by ~1 MB with a fixed 4 MiB threshold; a 40-room training run was OOM-killed at
9.4 GB without it and stayed at ~3.7 GB with it. A fixed threshold sends every tensor of 4 MiB or
more to its own mapping, returned to the OS when freed. Forked data-loader workers inherit it.

The price is kernel time: every fresh mapping is zero-filled page by page on first touch. On the
demo's model (``benchmarks/page_faults.py``, docs/benchmarks.md) that is ~25 % of a training
step's CPU time, from ~2.2 GB of fresh large tensors per step. Settings that keep freed memory
mapped (a 32 MiB threshold with a large trim threshold, or glibc's default) cut it to 7–9 % but
bring back the heap growth; transparent huge pages cut the fault count 6.5× but not the time (the
zero-filling is the cost). What removes it is allocating less per step, not a malloc setting.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["limit_heap_fragmentation", "mallopt", "MALLOPT_PARAMS"]

# glibc's mallopt parameter ids (malloc.h)
MALLOPT_PARAMS = {"trim_threshold": -1, "top_pad": -2, "mmap_threshold": -3, "mmap_max": -4, "arena_max": -8}


def mallopt(**params: int) -> bool:
    """Set glibc malloc parameters by name (keys of :data:`MALLOPT_PARAMS`, values in bytes or counts).

    True if every one was accepted, False off glibc (a no-op there). Unknown names raise ValueError.
    Setting ``mmap_threshold``, ``trim_threshold`` or ``top_pad`` turns glibc's dynamic threshold off.
    """
    unknown = sorted(set(params) - set(MALLOPT_PARAMS))
    if unknown:
        raise ValueError(f"mallopt: unknown parameter(s) {unknown}; known: {', '.join(MALLOPT_PARAMS)}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(fn(MALLOPT_PARAMS[name], int(value)) == 1 for name, value in params.items())


def limit_heap_fragmentation(threshold_bytes: int = 4 << 20) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes``; True if set, False off glibc (no-op)."""
    return mallopt(mmap_threshold=threshold_bytes)
