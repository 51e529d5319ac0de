"""Atomic file writes: write beside the destination, then ``os.replace`` over it.

A reader (another data-loader worker, a resumed run) sees either the old file or the complete new
one, never a torn one; a crash leaves at most a hidden ``.<name>.<pid>.tmp`` file, which the next
write of the same process id replaces and which no reader looks at.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    The temporary name holds the process id, so concurrent writers of one file do not collide.
    ``durable``: ``fsync`` the finished file before the rename, so the new content survives a power
    loss as well as a killed process (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
