"""Training logs: a text logger and an event writer (JSON lines + optional TensorBoard).

Only the main process writes; other ranks get writers that drop everything. ``log.jsonl`` holds one
JSON object per line, each with a ``"type"`` (``"train"`` per logged iteration, ``"val"`` per
evaluation) plus ``epoch`` and ``step``; numbers are plain floats.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

__all__ = ["get_logger", "EventWriter"]


def get_logger(work_dir: Optional[Path], is_main: bool, name: str = "pcseg") -> logging.Logger:
    """A logger printing to stderr (main process at INFO, others at WARNING) and to ``work_dir/train.log``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):  # a second run in the same process replaces the handlers
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if is_main and work_dir is not None:
        handlers.append(logging.FileHandler(Path(work_dir) / "train.log", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def _scalars(prefix: str, record: Mapping[str, Any]) -> dict[str, float]:
    """Flatten nested numeric entries of ``record`` into ``prefix/key`` TensorBoard tags."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            out.update(_scalars(f"{prefix}/{key}", value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("epoch", "step"):
            out[f"{prefix}/{key}"] = float(value)
    return out


class EventWriter:
    """Appends records to ``work_dir/log.jsonl`` and, when tensorboard is importable, to TensorBoard.

    enabled False (non-main ranks) makes every method a no-op.
    """

    def __init__(self, work_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self._file = open(Path(work_dir) / "log.jsonl", "a", encoding="utf-8") if enabled else None
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra (pip install pcseg[log])
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(work_dir) / "tb"))

    def write(self, kind: str, record: Mapping[str, Any]) -> None:
        """Log one record; ``record`` must contain ``step`` (global iteration)."""
        if not self.enabled:
            return
        line = {"type": kind, **record}
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        if self._tb is not None:
            for tag, value in _scalars(kind, record).items():
                self._tb.add_scalar(tag, value, global_step=int(record["step"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
