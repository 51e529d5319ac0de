"""Frozen 2D image and text encoders, registered in :data:`pcseg.models.ENCODERS` (nothing downloads).

``ImageEncoder``: images (B, 3, H, W) float32 in [0, 1] → (B, C, h, w); ``TextEncoder``: Q strings →
(Q, C) unit rows. CLIP / DINO ViTs and CLIP's text tower load by key from local checkpoints
(:mod:`.vit`); :mod:`.text`: a hash stand-in and MiniLM sentence embeddings; :mod:`.lseg`: an
LSeg-style D=2 network trained by the one trainer into a text space.
"""
from .base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, TextEncoder
from .lseg import LSeg, LSegImageEncoder
from .text import HashTextEncoder, SentenceTransformerTextEncoder
from .tokenizer import CLIPTokenizer
from .vit import (CLIPTextEncoder, TextTransformer, ViTConfig, ViTImageEncoder, VisionTransformer, clip_image_encoder,
                  dino_image_encoder, load_clip_text, load_vit)

__all__ = ["ImageEncoder", "TextEncoder", "CLIP_MEAN", "CLIP_STD", "IMAGENET_MEAN", "IMAGENET_STD", "LSeg",
           "LSegImageEncoder", "HashTextEncoder", "SentenceTransformerTextEncoder", "CLIPTokenizer", "CLIPTextEncoder",
           "TextTransformer", "ViTConfig", "ViTImageEncoder", "VisionTransformer", "clip_image_encoder",
           "dino_image_encoder", "load_clip_text", "load_vit"]
