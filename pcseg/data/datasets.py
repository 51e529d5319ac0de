"""Training datasets: raw scene → budget mask → transforms → voxels (docs/contracts.md).

:class:`SegmentationDataset` turns any reader of raw scenes into training samples;
:class:`ImageSegmentationDataset` does the same for a folder of PNG images, treated as D=2 point
sets whose coordinates are pixel positions. The ``DATASETS`` registry builds them from config
by name: ``ScanNet``, ``S3DIS``, ``SemanticKITTI``, ``ImageFolder``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from pcseg.data.budget import Budget, Reader, load_budget
from pcseg.data.formats import (IGNORE_INDEX, LoadReport, S3DISReader, ScanNetReader, SceneReader,
                                SemanticKITTIReader)
from pcseg.data.registry import DATASETS
from pcseg.data.transforms import Sample, Transform, build_transforms
from pcseg.sparse import CoordinateOverflowError, voxelize
from pcseg.sparse.voxelize import voxel_sizes
from pcseg.utils.errors import BadArgumentError, InputError

__all__ = [
    "DatasetWrapper", "build_wrapped_base",
    "SegmentationDataset", "ImageFolderReader", "ImageSegmentationDataset",
    "ScanNet", "S3DIS", "SemanticKITTI", "ImageFolder",
]


class SegmentationDataset(torch.utils.data.Dataset):
    """Voxelized training samples from a reader of raw scenes.

    Args:
        reader: has ``scenes: list[str]`` and ``load(name) -> raw scene dict`` (docs/contracts.md).
        voxel_size: voxel edge in coord units (metres; pixels for images), scalar or one per axis.
        transforms: ``t(sample, rng) -> sample`` applied to the raw scene plus ``budget_mask``,
            e.g. :func:`pcseg.data.transforms.build_transforms`.
        budget: a :class:`Budget` or its directory; None trains on every labelled point. The
            budget's points are trained on with the reader's labels, or with the budget's own for
            kind ``annotated`` (scans without labels work).
        feature_keys: per-point arrays concatenated (in order) into the input features.
        ignore_index: label of unlabelled points.
        voxel_reduce: how point features become voxel features (``"mean"`` or ``"first"``).
        loop: repeat the scene list this many times per epoch.
        seed: with the epoch (:meth:`set_epoch`) and the index, seeds each sample's transforms.

    Item ``i`` is scene ``reader.scenes[i % len(reader.scenes)]``.
    """

    def __init__(self, reader: Reader, voxel_size: float | Sequence[float], transforms: Transform | None = None,
                 budget: Budget | str | os.PathLike | None = None, feature_keys: Sequence[str] = ("color",),
                 ignore_index: int = IGNORE_INDEX, voxel_reduce: str = "mean", loop: int = 1,
                 seed: int = 0) -> None:
        try:
            voxel_sizes(voxel_size, field="SegmentationDataset.voxel_size")
        except ValueError as err:
            raise BadArgumentError("voxel_size", str(err)) from None
        if loop < 1:
            raise BadArgumentError("loop", f"SegmentationDataset.loop: expected an int >= 1, got {loop}")
        if not feature_keys:
            raise ValueError("SegmentationDataset.feature_keys: expected at least one key, got none")
        self.reader = reader
        self.voxel_size = voxel_size
        self.transforms = transforms
        self.budget = (budget if budget is None or isinstance(budget, Budget)
                       else load_budget(budget, num_classes=reader.NUM_CLASSES))
        self.feature_keys = tuple(feature_keys)
        self.ignore_index = ignore_index
        self.voxel_reduce = voxel_reduce
        self.loop = loop
        self.seed = seed
        self.epoch = 0
        if self.budget is not None:
            missing = [s for s in reader.scenes if s not in self.budget.manifest["label_hash"]]
            if missing:
                raise ValueError(f"{self.budget.manifest_path}: {len(missing)} scene(s) of {type(reader).__name__} "
                                 f"are not in the budget, e.g. {missing[:3]}")

    @property
    def num_classes(self) -> int:
        return self.reader.NUM_CLASSES

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.reader.CLASS_NAMES

    def __len__(self) -> int:
        return len(self.reader.scenes) * self.loop

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before iterating; resumable)."""
        self.epoch = int(epoch)

    def scene_name(self, index: int) -> str:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range [0, {len(self)})")
        return self.reader.scenes[index % len(self.reader.scenes)]

    def load_scene(self, index: int) -> Sample:
        """The raw scene of item ``index`` plus ``budget_mask`` (N,) bool, before transforms.

        With a budget that carries labels (kind ``annotated``) ``segment`` (N,) int64 holds those
        labels at the budget's points (:meth:`Budget.labelled_segment`): they are what is trained on.
        """
        scene = self.reader.load(self.scene_name(index))
        segment = scene["segment"]
        if self.budget is None:
            scene["budget_mask"] = segment != self.ignore_index
        else:
            scene["budget_mask"] = self.budget.mask(scene["name"], segment)
            scene["segment"] = self.budget.labelled_segment(scene["name"], segment)
        return scene

    def rng(self, index: int) -> np.random.Generator:
        """The generator item ``index`` uses in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.load_scene(index)
        if self.transforms is not None:
            scene = self.transforms(scene, self.rng(index))
        return self.to_sample(scene)

    def features(self, scene: Sample) -> np.ndarray:
        """(N, C) float32: the ``feature_keys`` arrays side by side."""
        n = len(scene["coord"])
        columns = []
        for key in self.feature_keys:
            if key not in scene:
                raise KeyError(f"scene {scene.get('name', '?')!r}: feature key {key!r} missing; "
                               f"available: {sorted(k for k in scene if k != 'name')}")
            columns.append(np.asarray(scene[key], dtype=np.float32).reshape(n, -1))
        return np.concatenate(columns, axis=1)

    def to_sample(self, scene: Sample) -> dict[str, Any]:
        """Voxelize a (transformed) scene into the training sample of docs/contracts.md.

        Voxel labels are the majority vote of the budget's points in each voxel (ignore where a
        voxel holds none); coords are shifted so their minimum is 0 on every axis. ``load_report``
        (a dict of int counts, the fields of :class:`LoadReport`) is what the reader dropped or
        remapped when it loaded the scene (readers that keep no reports: absent); collate sums it.
        """
        coord = torch.from_numpy(np.ascontiguousarray(scene["coord"], dtype=np.float32))
        segment = np.asarray(scene["segment"], dtype=np.int64)
        train_labels = np.where(scene["budget_mask"], segment, self.ignore_index)
        try:
            vox = voxelize(coord, self.voxel_size, feats=torch.from_numpy(self.features(scene)),
                           labels=torch.from_numpy(train_labels), ignore_index=self.ignore_index,
                           reduce=self.voxel_reduce)
        except CoordinateOverflowError as err:  # coordinates too far apart for the voxel size
            raise InputError(f"{self.reader}: scene {scene['name']!r}: coord: {err}") from None
        coords = vox.coords - vox.coords.min(dim=0).values
        report = getattr(self.reader, "reports", {}).get(scene["name"])
        points = torch.zeros((len(coord), 3), dtype=torch.float32)
        points[:, : coord.shape[1]] = coord  # D=2 (images): z = 0
        return {
            "coords": coords.to(torch.int32),
            "feats": vox.feats.to(torch.float32),
            "labels": vox.labels,
            "inverse": vox.inverse,
            "point_labels": torch.from_numpy(segment),
            "points": points,
            "name": scene["name"],
            **({"load_report": dataclasses.asdict(report)} if report is not None else {}),
        }


class ImageFolderReader(SceneReader):
    """PNG images and label maps as raw D=2 scenes.

    Layout: ``root/<split>/images/<name>.png`` (RGB, RGBA or grey) and
    ``root/<split>/labels/<name>.png`` (one class id per pixel, ``ignore_label`` for unlabelled).
    A scene has one point per pixel in row-major order: ``coord`` (H*W, 2) float32 (column, row),
    ``color`` (H*W, 3) float32 in [0, 255], ``segment`` (H*W,) int64.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, ignore_label: int = 255) -> None:
        super().__init__(root, split)
        if num_classes < 1:
            raise ValueError(f"ImageFolderReader.num_classes: expected >= 1, got {num_classes}")
        self.NUM_CLASSES = num_classes
        self.CLASS_NAMES = tuple(f"class_{i}" for i in range(num_classes))
        self.ignore_label = ignore_label
        images = self.root / split / "images"
        self.scenes = sorted(p.stem for p in images.glob("*.png"))
        if not self.scenes:
            raise InputError(f"{images}: expected <name>.png images here, found none")

    def _source(self, name: str) -> str:
        return str(self.root / self.split / "images" / f"{name}.png")

    def _read(self, name: str, report: LoadReport) -> dict:
        image_path = Path(self._source(name))
        label_path = self.root / self.split / "labels" / f"{name}.png"
        if not label_path.is_file():
            raise InputError(f"{label_path}: expected the label map of {image_path}, no such file")
        with Image.open(image_path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(label_path) as im:
            raw = np.asarray(im).astype(np.int64)
        if raw.shape != image.shape[:2]:
            raise InputError(f"{label_path}: expected a single-channel {image.shape[:2]} label map "
                             f"like {image_path}, got shape {raw.shape}")
        bad = (raw != self.ignore_label) & ((raw < 0) | (raw >= self.NUM_CLASSES))
        if bad.any():
            raise InputError(f"{label_path}: labels expected in [0, {self.NUM_CLASSES}) or {self.ignore_label}, "
                             f"got {np.unique(raw[bad])[:10].tolist()}")
        rows, cols = np.indices(raw.shape)
        return {
            "coord": np.stack([cols.ravel(), rows.ravel()], axis=1),
            "color": image.reshape(-1, 3),
            "segment": np.where(raw == self.ignore_label, IGNORE_INDEX, raw).ravel(),
        }


class ImageSegmentationDataset(SegmentationDataset):
    """An :class:`ImageFolderReader` split as a D=2 dataset: one voxel per pixel, colour features.

    Sparse pixel budgets come from the same :mod:`pcseg.data.budget` code, made on the reader.
    """

    def __init__(self, root: str | Path, split: str, num_classes: int, transforms: Transform | None = None,
                 budget: Budget | str | os.PathLike | None = None, ignore_label: int = 255, loop: int = 1,
                 seed: int = 0) -> None:
        super().__init__(ImageFolderReader(root, split, num_classes, ignore_label), voxel_size=1.0,
                         transforms=transforms, budget=budget, feature_keys=("color",), loop=loop, seed=seed)


def _transforms(cfgs: Sequence[Mapping[str, Any]]) -> Transform | None:
    return build_transforms(cfgs) if cfgs else None


@DATASETS.register
def ScanNet(root: str, split: str, voxel_size: float = 0.02, transforms: Sequence[Mapping[str, Any]] = (),
            budget: str | None = None, loop: int = 1, seed: int = 0,
            instances: bool | None = None) -> SegmentationDataset:
    """ScanNet v2 from the raw layout; colour features.

    instances: whether to read the instance annotation, see :class:`ScanNetReader` (in a config:
    ``data.train.kwargs.instances: false``).
    """
    return SegmentationDataset(ScanNetReader(root, split, instances=instances), voxel_size, _transforms(transforms),
                               budget, feature_keys=("color",), loop=loop, seed=seed)


@DATASETS.register
def S3DIS(root: str, split: str, test_area: int = 5, voxel_size: float = 0.05,
          transforms: Sequence[Mapping[str, Any]] = (), budget: str | None = None, loop: int = 1,
          seed: int = 0, cache_dir: str | None = None) -> SegmentationDataset:
    """S3DIS from the raw layout, ``Area_<test_area>`` held out; colour features.

    Parsed rooms are cached in ``cache_dir`` (default: :func:`pcseg.data.formats.s3dis.default_cache_dir`).
    """
    return SegmentationDataset(S3DISReader(root, split, test_area=test_area, cache_dir=cache_dir), voxel_size,
                               _transforms(transforms), budget, feature_keys=("color",), loop=loop, seed=seed)


@DATASETS.register
def SemanticKITTI(root: str, split: str, voxel_size: float = 0.05, transforms: Sequence[Mapping[str, Any]] = (),
                  budget: str | None = None, loop: int = 1, seed: int = 0,
                  sequences: Sequence[str | int] | None = None, labels: bool = True,
                  camera: int = 2) -> SegmentationDataset:
    """SemanticKITTI from the raw layout; remission (``strength``) features.

    sequences: the split's sequences instead of the official ones (per split in a config:
    ``data.train.kwargs.sequences=[00]``); labels: False reads unlabelled scans (pre-training);
    camera: the image (2 or 3) of :meth:`SemanticKITTIReader.load_image` (see :class:`SemanticKITTIReader`).
    """
    reader = SemanticKITTIReader(root, split, sequences=sequences, labels=labels, camera=camera)
    return SegmentationDataset(reader, voxel_size, _transforms(transforms), budget, feature_keys=("strength",),
                               loop=loop, seed=seed)


@DATASETS.register
def ImageFolder(root: str, split: str, num_classes: int, ignore_label: int = 255,
                transforms: Sequence[Mapping[str, Any]] = (), budget: str | None = None, loop: int = 1,
                seed: int = 0) -> ImageSegmentationDataset:
    """PNG images + label maps (:class:`ImageFolderReader`) as a D=2 dataset."""
    return ImageSegmentationDataset(root, split, num_classes, _transforms(transforms), budget,
                                    ignore_label=ignore_label, loop=loop, seed=seed)


class DatasetWrapper(torch.utils.data.Dataset):
    """Base of datasets that add to each sample of a :class:`SegmentationDataset` (views, images).

    Delegates length, classes and the epoch's augmentation stream to ``base``.
    """

    def __init__(self, base: SegmentationDataset) -> None:
        self.base = base

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``."""
        self.base.set_epoch(epoch)


def build_wrapped_base(wrapper: str, dataset: str, spec: Mapping[str, Any], wrap: bool, examples: str) -> Any:
    """Build ``DATASETS[dataset]`` with ``spec`` as the base of the wrapper dataset ``wrapper``.

    wrap: whether this split gets wrapped; then the base must be a :class:`SegmentationDataset`.
    examples: base dataset names quoted in the error when ``dataset`` names the wrapper itself.
    """
    if dataset == wrapper:
        raise ValueError(f"dataset '{wrapper}': kwargs.dataset must name a base dataset ({examples}, …), "
                         f"not {wrapper} itself")
    base = DATASETS.build({"name": dataset, **spec})
    if wrap and not isinstance(base, SegmentationDataset):
        raise TypeError(f"dataset '{wrapper}': {dataset!r} built a {type(base).__name__}, "
                        f"expected a SegmentationDataset")
    return base
