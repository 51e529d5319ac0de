"""SLIC superpixels of camera images (scikit-image), cached on disk per image.

SLidR's defaults: 150 segments, compactness 6, Gaussian pre-smoothing sigma 3. Labels are
relabelled to consecutive ids ``0 .. S-1`` in order of first appearance in the sorted label set,
so every id in ``[0, S)`` covers at least one pixel.

The cache file of an image is ``<cache_dir>/<key>.npy`` where ``key`` is the SHA-256 of the
image's shape and bytes together with the SLIC settings: a changed image or setting never reads
a stale segmentation. Files are written to ``.tmp`` and renamed, so concurrent data-loader
workers never read a torn file. scikit-image is needed only on a cache miss
(``pip install 'pcseg[slidr]'``).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_path

__all__ = ["slic_superpixels", "SuperpixelCache"]


def slic_superpixels(image: np.ndarray, n_segments: int = 150, compactness: float = 6.0,
                     sigma: float = 3.0) -> np.ndarray:
    """SLIC superpixels of ``image`` (H, W, 3) uint8 RGB: (H, W) int64 ids in ``[0, S)``, S <= ~n_segments."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"slic_superpixels: image expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise ImportError("slic_superpixels needs scikit-image: pip install 'pcseg[slidr]'") from None
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma, start_label=0,
                  channel_axis=-1)
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


class SuperpixelCache:
    """:func:`slic_superpixels` with an on-disk cache keyed by the image's hash (module docstring).

    cache_dir: folder of the ``.npy`` files (created on first write); None computes every time.
    ``hits`` / ``misses`` count the lookups of this object (per process).
    """

    def __init__(self, cache_dir: str | os.PathLike | None, n_segments: int = 150, compactness: float = 6.0,
                 sigma: float = 3.0) -> None:
        if n_segments < 1 or compactness <= 0 or sigma < 0:
            raise ValueError(f"SuperpixelCache: expected n_segments >= 1, compactness > 0, sigma >= 0; got "
                             f"{n_segments}, {compactness}, {sigma}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.n_segments, self.compactness, self.sigma = int(n_segments), float(compactness), float(sigma)
        self.hits = self.misses = 0

    def key(self, image: np.ndarray) -> str:
        """Hex SHA-256 of the settings, the image's shape, dtype and bytes."""
        digest = hashlib.sha256(f"slic/{self.n_segments}/{self.compactness}/{self.sigma}/{image.shape}/"
                                f"{image.dtype}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int64 superpixel ids of ``image`` (H, W, 3) uint8, from the cache when present."""
        if self.cache_dir is None:
            self.misses += 1
            return slic_superpixels(image, self.n_segments, self.compactness, self.sigma)
        path = self.cache_dir / f"{self.key(image)}.npy"
        if path.is_file():
            labels = np.load(path)
            if labels.shape != image.shape[:2]:
                raise ValueError(f"{path}: cached superpixels have shape {labels.shape}, expected "
                                 f"{image.shape[:2]}; delete the file")
            self.hits += 1
            return labels
        self.misses += 1
        labels = slic_superpixels(image, self.n_segments, self.compactness, self.sigma)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, labels)
        return labels
