"""Atomic file writes: write beside the destination, then ``os.replace`` over it.

A reader (another data-loader worker, a resumed run) sees either the old file or the complete new
one, never a torn one; a crash leaves at most a hidden ``.<name>.<pid>.tmp`` file, which no reader
looks at and :func:`remove_stale_temporaries` deletes once its process is gone.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "temporary_path", "remove_stale_temporaries"]


def temporary_path(path: Path, pid: int) -> Path:
    """The temporary file process ``pid`` writes before renaming it over ``path``: ``.<name>.<pid>.tmp``."""
    return path.with_name(f".{path.name}.{pid}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries of ``path`` left by killed writers (their process no longer runs).

    Temporaries of running processes, this one included, are kept. Returns the deleted paths.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and tmp == temporary_path(path, int(pid)) and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return sorted(removed)


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    The temporary name holds the process id, so concurrent writers of one file do not collide.
    ``durable``: ``fsync`` the finished file before the rename, so the new content survives a power
    loss as well as a killed process (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path, os.getpid())
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
