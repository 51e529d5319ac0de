"""METHODS: training methods a config picks by name (``method: {name: Supervised}``).

Each method registers itself in its defining file with ``@METHODS.register``. ``Supervised`` lives
in :mod:`pcseg.engine.hooks` (the engine sits below the methods and cannot import this registry),
so it is registered here.
"""
from __future__ import annotations

from typing import Any, Mapping

from pcseg.engine.hooks import MethodHooks, Supervised
from pcseg.utils.registry import Registry

__all__ = ["METHODS", "build_method"]

METHODS = Registry("method")
METHODS.register(Supervised)


def build_method(cfg: Mapping[str, Any]) -> MethodHooks:
    """Build ``METHODS[cfg["name"]](**rest)``; unknown names and keys raise with the known ones listed."""
    method = METHODS.build(cfg)
    if not isinstance(method, MethodHooks):
        raise TypeError(f"method {cfg['name']!r} built a {type(method).__name__}, expected a MethodHooks subclass")
    return method
