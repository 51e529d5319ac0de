"""MODELS: backbones a config picks by name (``model.name: Res16UNet34C``)."""
from typing import Any, Mapping

from torch import nn

from pcseg.utils.registry import Registry

__all__ = ["MODELS", "build_model"]

MODELS = Registry("model")


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a registered model: ``{"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3}``."""
    return MODELS.build(cfg)
