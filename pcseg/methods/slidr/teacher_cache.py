"""Remember a frozen teacher's feature maps of images seen before.

SLidR's teacher is frozen and the camera images are not augmented, so the teacher's output for an
image never changes: every epoch recomputes the same maps. :class:`CachedTeacher` keeps the maps of
the most recently used ``max_images`` images (least recently used dropped first) and runs the
teacher only on the images of a batch it does not hold.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import Tensor, nn

from .teacher import ImageTeacher

__all__ = ["CachedTeacher", "image_key"]


def image_key(image: Tensor) -> str:
    """A key of one (3, H, W) image: a hash of its values, dtype and shape (padding included)."""
    data = image.detach().contiguous().cpu().numpy().tobytes()
    return f"{hashlib.blake2b(data, digest_size=16).hexdigest()}:{image.dtype}:{tuple(image.shape)}"


class CachedTeacher(nn.Module):
    """An :class:`ImageTeacher` with an in-memory cache of up to ``max_images`` feature maps.

    Same interface: (B, 3, H, W) float images → (B, C, h, w) maps, ``out_channels`` = C. Each map is
    the teacher's output for that image computed in some earlier batch (the teacher treats the
    images of a batch independently: eval-mode BatchNorm, no cross-image operation). Memory:
    ``max_images`` × C × h × w × 4 bytes on the teacher's device (7 MB for a 96-channel map of a
    248 × 75 image). ``hits`` / ``misses`` count images served from the cache / computed.
    """

    def __init__(self, teacher: ImageTeacher, max_images: int) -> None:
        super().__init__()
        if max_images < 1:
            raise ValueError(f"CachedTeacher: max_images expected >= 1, got {max_images}")
        self.teacher, self.max_images = teacher, max_images
        self.out_channels = teacher.out_channels
        self._maps: OrderedDict[str, Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def forward(self, images: Tensor) -> Tensor:
        keys = [image_key(image) for image in images]
        todo: dict[str, int] = {}  # key → first row of an image the cache lacks
        for row, key in enumerate(keys):
            if key not in self._maps and key not in todo:
                todo[key] = row
        if todo:
            for key, maps in zip(todo, self.teacher(images[list(todo.values())])):
                self._maps[key] = maps
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)
        for key in keys:
            self._maps.move_to_end(key)
        out = torch.stack([self._maps[key] for key in keys])
        while len(self._maps) > self.max_images:
            self._maps.popitem(last=False)
        return out
