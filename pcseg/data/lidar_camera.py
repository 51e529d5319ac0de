"""LiDAR scans paired with their camera image, for image-to-LiDAR distillation (SLidR).

:class:`LidarCameraDataset` wraps a :class:`~pcseg.data.datasets.SegmentationDataset` whose reader
also has ``load_image(name)`` and ``load_calib(name)`` (e.g. SemanticKITTI, with or without labels:
SLidR pre-training reads none, ``labels: false``). Each item projects the
*raw* points into the image (:func:`~pcseg.data.projection.project_points`), takes the image's
SLIC superpixels (:class:`~pcseg.data.superpixels.SuperpixelCache`), then applies the base
dataset's transforms and voxelizes as usual. Transforms must keep every point (rotations, flips,
scaling, jitter): the per-point pixel arrays follow the points by position.

A sample is the base training sample (docs/contracts.md) plus

=====================  ======================  ==============================================
key                    shape / dtype           meaning
=====================  ======================  ==============================================
``image``              (3, H, W) uint8         RGB camera image (the reader's camera: image_2 or image_3)
``P``, ``Tr``          (3, 4), (4, 4) float64  calibration of that camera (velodyne → pixels: ``P @ Tr``)
``pixel``              (N, 2) int64            (column, row) of each point, -1 where not in the image
``superpixels``        (H, W) int64            superpixel id of each pixel, ``0 .. S-1``
``point_superpixel``   (N,) int64              superpixel of each point's pixel, -1 where none
=====================  ======================  ==============================================

:func:`collate_lidar_camera` batches them on top of :func:`~pcseg.data.collate.collate_sparse`:
``images`` (B, 3, Hmax, Wmax) uint8 zero-padded at the bottom/right, ``superpixels``
(B, Hmax, Wmax) int64 with ids made unique over the batch (image b's ids offset by the superpixel
counts of images 0..b-1) and -1 on padding, ``point_superpixel`` (ΣN,) int64 with the same
offsets, ``pixel`` (ΣN, 2), ``P`` (B, 3, 4), ``Tr`` (B, 4, 4) and ``num_superpixels`` (int, the
batch's total S).

Config (``data.name: LidarCamera``)::

    data:
      name: LidarCamera
      kwargs: {dataset: SemanticKITTI, root: data/semantickitti, voxel_size: 0.05, labels: false,
               camera: 2, superpixel_cache: data/semantickitti/superpixels}
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import DatasetWrapper, SegmentationDataset, build_wrapped_base
from pcseg.data.projection import project_points
from pcseg.data.registry import DATASETS
from pcseg.data.superpixels import SuperpixelCache

__all__ = ["CAMERA_KEYS", "CAMERA_BATCH_KEYS", "LidarCameraDataset", "collate_lidar_camera", "LidarCamera"]

CAMERA_KEYS: tuple[str, ...] = ("image", "P", "Tr", "pixel", "superpixels", "point_superpixel")
"""Keys a :class:`LidarCameraDataset` sample adds to the base training sample."""
CAMERA_BATCH_KEYS: tuple[str, ...] = ("images", "P", "Tr", "pixel", "superpixels", "point_superpixel",
                                      "num_superpixels")
"""Keys :func:`collate_lidar_camera` adds to the :func:`~pcseg.data.collate.collate_sparse` batch."""


def collate_lidar_camera(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch :class:`LidarCameraDataset` samples (see the module docstring for the keys)."""
    for i, s in enumerate(samples):
        missing = [k for k in CAMERA_KEYS if k not in s]
        if missing:
            raise KeyError(f"collate_lidar_camera: sample {i} ({s.get('name', '?')!r}) lacks {', '.join(missing)}; "
                           f"expected samples of LidarCameraDataset")
    batch = collate_sparse(samples)
    height = max(s["image"].shape[1] for s in samples)
    width = max(s["image"].shape[2] for s in samples)
    images = torch.zeros((len(samples), 3, height, width), dtype=torch.uint8)
    superpixels = torch.full((len(samples), height, width), -1, dtype=torch.int64)
    point_superpixel, offset = [], 0
    for i, s in enumerate(samples):
        h, w = s["image"].shape[1:]
        images[i, :, :h, :w] = s["image"]
        superpixels[i, :h, :w] = s["superpixels"] + offset
        point_superpixel.append(torch.where(s["point_superpixel"] >= 0, s["point_superpixel"] + offset, -1))
        offset += int(s["superpixels"].max()) + 1
    batch.update({
        "images": images, "superpixels": superpixels, "point_superpixel": torch.cat(point_superpixel),
        "pixel": torch.cat([s["pixel"] for s in samples]), "P": torch.stack([s["P"] for s in samples]),
        "Tr": torch.stack([s["Tr"] for s in samples]), "num_superpixels": offset,
    })
    return batch


class LidarCameraDataset(DatasetWrapper):
    """Scans of ``base`` with their image, calibration, pixels and superpixels (module docstring).

    base: a SegmentationDataset whose reader has ``load_image`` and ``load_calib``.
    superpixels: computes (and caches) the superpixels of an image.
    min_depth: points at most this far in front of the camera (metres) are not projected.
    """

    collate_fn = staticmethod(collate_lidar_camera)  # the training loader's collate function

    def __init__(self, base: SegmentationDataset, superpixels: SuperpixelCache, min_depth: float = 0.0) -> None:
        reader = base.reader
        if not (hasattr(reader, "load_image") and hasattr(reader, "load_calib")):
            raise TypeError(f"LidarCameraDataset: the reader {type(reader).__name__} has no load_image/load_calib; "
                            f"expected a LiDAR reader with camera images such as SemanticKITTIReader")
        super().__init__(base)
        self.superpixels = superpixels
        self.min_depth = float(min_depth)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.base.load_scene(index)
        name = scene["name"]
        image = self.base.reader.load_image(name)
        calib = self.base.reader.load_calib(name)
        projection = project_points(scene["coord"], calib["P"], calib["Tr"], (image.shape[1], image.shape[0]),
                                    self.min_depth)
        superpixels = self.superpixels(image)
        column, row = np.maximum(projection.pixel, 0).T
        point_superpixel = np.where(projection.valid, superpixels[row, column], -1)
        num_points = len(scene["coord"])
        if self.base.transforms is not None:
            scene = self.base.transforms(scene, self.base.rng(index))
        if len(scene["coord"]) != num_points:
            raise ValueError(f"LidarCameraDataset: the transforms changed the number of points of scene {name!r} "
                             f"from {num_points} to {len(scene['coord'])}; the pixel of each point is known only "
                             f"for the raw points, so use transforms that keep every point")
        return {
            **self.base.to_sample(scene),
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "P": torch.from_numpy(calib["P"]), "Tr": torch.from_numpy(calib["Tr"]),
            "pixel": torch.from_numpy(projection.pixel),
            "superpixels": torch.from_numpy(superpixels),
            "point_superpixel": torch.from_numpy(point_superpixel.astype(np.int64)),
        }


@DATASETS.register
def LidarCamera(dataset: str, split: str, transforms: Sequence[Mapping[str, Any]] = (), budget: str | None = None,
                seed: int = 0, superpixel_cache: str | os.PathLike | None = None, n_segments: int = 150,
                compactness: float = 6.0, sigma: float = 3.0, min_depth: float = 0.0,
                camera_splits: Sequence[str] = ("train",), **kwargs: Any) -> LidarCameraDataset | SegmentationDataset:
    """``DATASETS[dataset]`` (built with ``kwargs`` and the split's arguments) with camera data on the
    splits in ``camera_splits``, the plain base dataset on the others.

    superpixel_cache: folder of cached superpixels (None: recompute every time); n_segments,
    compactness, sigma: SLIC settings (SLidR: 150, 6, 3).
    """
    spec = {**kwargs, "split": split, "transforms": transforms, "budget": budget, "seed": seed}
    base = build_wrapped_base("LidarCamera", dataset, spec, split in camera_splits, "SemanticKITTI")
    if split not in camera_splits:
        return base
    return LidarCameraDataset(base, SuperpixelCache(superpixel_cache, n_segments, compactness, sigma), min_depth)
