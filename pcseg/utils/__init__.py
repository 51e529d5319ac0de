"""Small helpers shared by several pcseg layers; imports nothing else from pcseg."""
from pcseg.utils.registry import Registry, UnknownNameError, build_from_config

__all__ = ["Registry", "UnknownNameError", "build_from_config"]
