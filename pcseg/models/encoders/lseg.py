"""An LSeg-style image encoder: a D=2 sparse segmentation network whose classifier is the text space.

LSeg (Li et al., ICLR'22) trains a dense image encoder so that each pixel's feature lies close to
the text embedding of its class name: per-pixel logits are ``cos(pixel feature, class text
embedding) / temperature``, trained by cross-entropy on 2D label maps. Free-text queries then work
through the text encoder: a query embedded near a class name (``couch`` near ``sofa`` with MiniLM
sentence embeddings) picks that class's pixels.

:class:`LSeg` is that network for the one trainer: a registered backbone (``MinkUNet14A`` …) on an
image's pixels as D=2 sparse sites (``ImageFolder`` data: one site per pixel at (column, row),
colour features), its 1x1 head projecting to the text width, then the fixed classifier above over
``class_names`` embedded by ``text_encoder`` (kept as the buffer ``class_embeddings``, so a
checkpoint records its text space). Its logits are those of any segmentation model, so
``method: {name: Supervised}`` trains it with LSeg's loss (``configs/ovs/lseg_*.yaml``).

:class:`LSegImageEncoder` (``ENCODERS``) serves a trained one to 3D-OVS: it reads a training run's
``config.yaml`` (``model`` section) and checkpoint, refuses a text space other than the one asked
for, and maps images (B, 3, H, W) in [0, 1] to unit features (B, D, H, W).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcseg.sparse import SparseTensor
from pcseg.utils.errors import InputError
from pcseg.utils.yaml_io import load_yaml_file

from ..registry import ENCODERS, MODELS
from .base import ImageEncoder

__all__ = ["LSeg", "LSegImageEncoder"]


@MODELS.register
class LSeg(nn.Module):
    """Sparse backbone → unit pixel features → ``cos(feature, class embedding) / temperature``.

    Args:
        in_channels: input feature width (3: RGB). num_classes: C, must equal ``len(class_names)``.
        D: spatial dimension (2 for images). class_names: the C names the text encoder embeds.
        text_encoder: an ``ENCODERS`` spec (``{name: HashTextEncoder, dim: 64}``); its width is the
            feature width D_t. temperature: the fixed logit temperature. backbone: a ``MODELS`` name
            built with ``num_classes = D_t`` (its head is the projection to the text space).

    ``forward``: SparseTensor (N sites, in_channels) → SparseTensor (N, C) logits;
    ``forward_features``: → SparseTensor (N, D_t) L2-normalised features.
    """

    def __init__(self, in_channels: int, num_classes: int, class_names: Sequence[str], text_encoder: Mapping[str, Any],
                 D: int = 2, temperature: float = 0.07, backbone: str = "MinkUNet14A") -> None:
        super().__init__()
        if len(class_names) != num_classes:
            raise ValueError(f"LSeg: class_names expected {num_classes} names (num_classes), got {len(class_names)}")
        if temperature <= 0:
            raise ValueError(f"LSeg: temperature expected > 0, got {temperature}")
        text = ENCODERS.build(dict(text_encoder))
        embeddings = F.normalize(text(list(class_names)).float(), dim=1)
        self.class_names, self.text_encoder, self.temperature = tuple(class_names), dict(text_encoder), temperature
        self.backbone = MODELS.build({"name": backbone, "in_channels": in_channels, "num_classes": embeddings.shape[1],
                                      "D": D})
        self.register_buffer("class_embeddings", embeddings)
        self.out_channels = embeddings.shape[1]

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        out = self.backbone(x)
        return out.replace(F.normalize(out.F.float(), dim=1))

    def forward(self, x: SparseTensor) -> SparseTensor:
        features = self.forward_features(x)
        return features.replace(features.F @ self.class_embeddings.T / self.temperature)


@ENCODERS.register
class LSegImageEncoder(ImageEncoder):
    """A trained :class:`LSeg` (frozen) as an image encoder: (B, 3, H, W) in [0, 1] → (B, D_t, H, W).

    Args:
        work_dir: the training run's folder (``tools/train.py --config configs/ovs/lseg_*.yaml``):
            its ``config.yaml`` gives the model, ``checkpoint`` (default ``model_last.pth``) the weights.
        text_encoder: the ``ENCODERS`` spec the caller embeds its queries with; it must be the one the
            model was trained with (same spec, and the same class-name embeddings now), else InputError.
        color_range: the (low, high) the training transforms mapped colour [0, 255] to (its
            ``NormalizeColor``; default [-1, 1]).
        batch_size: images per forward.
    """

    def __init__(self, work_dir: str, text_encoder: Mapping[str, Any], checkpoint: str = "model_last.pth",
                 color_range: Sequence[float] = (-1.0, 1.0), batch_size: int = 16) -> None:
        root = Path(work_dir)
        config_file, weights_file = root / "config.yaml", root / checkpoint
        for path, what in ((config_file, "the training run's config.yaml"), (weights_file, "its checkpoint")):
            if not path.is_file():
                raise InputError(f"{path}: expected {what} (train the encoder first: python tools/ovs.py "
                                 f"--write-views … then python tools/train.py --config configs/ovs/lseg_*.yaml "
                                 f"--work-dir {root}), no such file")
        spec = dict(load_yaml_file(config_file).get("model") or {})
        if spec.get("name") != "LSeg":
            raise InputError(f"{config_file}: model.name: expected 'LSeg', got {spec.get('name')!r}")
        spec.pop("init_from", None)
        if dict(spec.get("text_encoder") or {}) != dict(text_encoder):
            raise InputError(f"{config_file}: model.text_encoder: expected {dict(text_encoder)} (the text encoder of "
                             f"the queries), the encoder was trained with {spec.get('text_encoder')}")
        self.net: LSeg = MODELS.build(spec)
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
        weights = state.get("model") if isinstance(state, dict) else None
        if not isinstance(weights, dict) or "class_embeddings" not in weights:
            raise InputError(f"{weights_file}: expected a training checkpoint of an LSeg model ('model' entry with "
                             f"class_embeddings)")
        stored = weights["class_embeddings"]
        if stored.shape != self.net.class_embeddings.shape or not torch.allclose(stored, self.net.class_embeddings,
                                                                                 atol=1e-4):
            raise InputError(f"{weights_file}: class_embeddings: the stored class-name embeddings differ from "
                             f"{dict(text_encoder)}'s today (another text model behind the same name?)")
        self.net.load_state_dict(weights)
        self.net.eval().requires_grad_(False)
        self.low, self.high = float(color_range[0]), float(color_range[1])
        self.batch_size = batch_size
        self.out_channels = self.net.out_channels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.net.class_names

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"LSegImageEncoder: images expected (B, 3, H, W), got {tuple(images.shape)}")
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size].float()
            colour = self.low + (self.high - self.low) * chunk
            # sites at (column, row), as pcseg.data.datasets.ImageFolderReader lays pixels out
            x = SparseTensor.from_dense(colour.transpose(2, 3))
            features = self.net.forward_features(x).dense(shape=chunk.shape[:1:-1])
            out.append(features.transpose(2, 3))
        return torch.cat(out)
