"""Training methods: plug-ins to the one trainer through :class:`pcseg.engine.hooks.MethodHooks`."""
from .registry import METHODS, build_method
from .cpcm import CPCM
from .slidr import SLidR
from .hpal import HPAL
from .ovs import FeatureField

__all__ = ["METHODS", "build_method", "CPCM", "HPAL", "SLidR", "FeatureField"]
