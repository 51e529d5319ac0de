"""The command-line tools' guard: a user's mistake ends a tool with one ``error: …`` line, status 2.

Every tool runs its ``main`` body inside :func:`tool_errors`::

    args = parse_args(argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        ...

Caught, printed to stderr without a traceback and turned into :class:`ToolExit` (exit status 2):

- :class:`~pcseg.utils.errors.InputError` (bad data, budget, checkpoint or config; its message
  names the file and field), among them :class:`~pcseg.engine.config.ConfigError`;
- :class:`~pcseg.engine.config.ConfigKeyError`, an unknown name (:class:`UnknownNameError`) or an
  unknown or missing keyword (:class:`UnknownKeyError`) met while building from the config: the
  config file is put in front of the message;
- :class:`~pcseg.sparse.CoordinateOverflowError` (coordinates too large for the sparse core) and
  :class:`~pcseg.engine.trainer.NonFiniteError` (training diverged; nothing non-finite was saved).

An error raised inside a DataLoader worker reaches the main process re-raised by torch with the
worker's whole traceback as its message; the guard prints the worker's own message only.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from pcseg.sparse import CoordinateOverflowError
from pcseg.utils.errors import InputError
from pcseg.utils.registry import UnknownKeyError, UnknownNameError

from .config import ConfigKeyError
from .trainer import NonFiniteError

__all__ = ["EXIT_STATUS", "ToolExit", "tool_errors", "original_message"]

EXIT_STATUS = 2  # as argparse exits on a command-line mistake

_NAMES_NO_FILE = (ConfigKeyError, UnknownNameError, UnknownKeyError)  # built from the config: prefix its file
_CAUGHT = (InputError, CoordinateOverflowError, NonFiniteError) + _NAMES_NO_FILE


class ToolExit(SystemExit):
    """``SystemExit(2)`` whose text is the ``error: …`` line the guard printed (for callers and tests)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_STATUS)
        self.message = message

    def __str__(self) -> str:
        return self.message


def original_message(err: BaseException) -> str:
    """``str(err)``; for an exception a DataLoader re-raised from a worker, the worker's own message.

    torch re-raises ``type(err)("Caught <type> in DataLoader worker process k.\\nOriginal Traceback
    …\\n<module>.<type>: <message>\\n")``; the text after the last ``<module>.<type>: `` is the message.
    """
    text = str(err)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return text
    cls = type(err)
    marker = f"\n{cls.__module__}.{cls.__qualname__}: "
    start = text.rfind(marker)
    return text[start + len(marker):].rstrip("\n") if start >= 0 else text


@contextmanager
def tool_errors(config: Optional[str | Path] = None) -> Iterator[None]:
    """Run a tool's body; the errors listed in the module docstring exit with ``error: <message>``.

    config: the tool's config file, named in front of messages about values built from it.
    Raises :class:`ToolExit` (status 2) after printing the line to stderr.
    """
    try:
        yield
    except _CAUGHT as err:
        message = original_message(err)
        if isinstance(err, _NAMES_NO_FILE) and config is not None:
            message = f"{config}: {message}"
        line = f"error: {message}"
        print(line, file=sys.stderr)
        raise ToolExit(line) from None
