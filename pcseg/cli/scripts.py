"""Console-script entry points: ``pcseg.cli.scripts:<tool>`` runs :func:`pcseg.cli.<tool>.main`.

A script's exit status is 0, or 2 after an ``error: …`` line (:mod:`pcseg.engine.cli`); the value
``main`` returns is discarded (``sys.exit`` would print it and exit 1).
"""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["TOOLS"]

TOOLS = ("train", "test", "make_budget", "make_synthetic", "visualize", "active_learn", "annotate", "pretrain_slidr",
         "demo", "convert_checkpoint", "export", "ovs")
"""Modules of pcseg.cli with a console script ``pcseg-<name, - for _>`` (see setup.py)."""


def __getattr__(tool: str) -> Callable[[], None]:
    """The console script of ``tool`` (PEP 562 module attribute)."""
    if tool not in TOOLS:
        raise AttributeError(f"module {__name__!r} has no attribute {tool!r}")

    def run() -> None:
        importlib.import_module(f"pcseg.cli.{tool}").main()

    run.__name__ = run.__qualname__ = tool
    return run
