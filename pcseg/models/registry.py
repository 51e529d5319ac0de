"""MODELS: backbones a config picks by name (``model.name: Res16UNet34C``); ENCODERS: frozen image and
text encoders (:mod:`pcseg.models.encoders`) a config picks by name (``{name: HashTextEncoder, dim: 64}``)."""
from typing import Any, Mapping

from torch import nn

from pcseg.utils.registry import Registry

__all__ = ["MODELS", "build_model", "ENCODERS", "build_encoder"]

MODELS = Registry("model")
ENCODERS = Registry("encoder")


def build_model(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a registered model: ``{"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3}``."""
    return MODELS.build(cfg)


def build_encoder(cfg: Mapping[str, Any]) -> Any:
    """Build a registered image or text encoder: ``{"name": "HashTextEncoder", "dim": 64}``."""
    return ENCODERS.build(cfg)
