"""The command-line front ends: one module per tool, each with ``parse_args`` and ``main(argv)``.

Installed as console scripts ``pcseg-<tool>`` (``setup.py``, through :mod:`pcseg.cli.scripts`) and
runnable from a checkout as ``python tools/<tool>.py`` (three-line shims). Each ``main`` returns what
it made (metrics, paths) for callers and tests. The CLI modules sit above every other layer: they
import the library (mostly :mod:`pcseg.methods` and :mod:`pcseg.engine`), nothing imports them, and
they do not import each other.
"""
