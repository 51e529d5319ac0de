"""pcseg.models: sparse backbones, importable without datasets or training code.

    from pcseg.models import build_model, MinkUNet34C
    model = build_model({"name": "Res16UNet34C", "in_channels": 3, "num_classes": 20, "D": 3})
"""
from .minkunet import MinkUNet, MinkUNet14A, MinkUNet18A, MinkUNet34A, MinkUNet34C
from .registry import ENCODERS, MODELS, build_encoder, build_model
from . import encoders  # noqa: F401  (registers the image/text encoders and LSeg)
from .res16unet import Res16UNet14A, Res16UNet34C

__all__ = ["MODELS", "build_model", "ENCODERS", "build_encoder", "MinkUNet", "MinkUNet14A", "MinkUNet18A", "MinkUNet34A", "MinkUNet34C",
           "Res16UNet14A", "Res16UNet34C"]
