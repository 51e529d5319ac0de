"""Training methods: plug-ins to the one trainer through :class:`pcseg.engine.hooks.MethodHooks`."""
from .registry import METHODS, build_method
from . import cpcm  # noqa: F401  (registers CPCM)

__all__ = ["METHODS", "build_method"]
