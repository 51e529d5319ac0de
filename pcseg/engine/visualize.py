"""Pictures of saved point predictions on a config's validation scenes (``pcseg-visualize``, ``pcseg-demo``).

:func:`render_scenes` writes ``<out>/<scene>.png`` (prediction | ground truth | errors, with a legend
of the classes present) and ``<scene>_pred.ply`` / ``<scene>_gt.ply``, coloured with the palette of
the benchmark the dataset reads (ScanNet, S3DIS and SemanticKITTI have their own; other data a
generic one of its class count). Open3D renders offscreen; without it, matplotlib does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pcseg.data.datasets import DatasetWrapper
from pcseg.data.formats import S3DISReader, ScanNetReader, SemanticKITTIReader
from pcseg.utils.errors import InputError
from pcseg.vis import get_palette, save_prediction_views

from .build import build_dataset
from .config import Config

__all__ = ["dataset_palette", "render_scenes"]

_READER_PALETTES = ((ScanNetReader, "scannet"), (S3DISReader, "s3dis"), (SemanticKITTIReader, "semantickitti"))
"""Reader type -> name of its dataset palette in ``pcseg.vis.PALETTES``."""


def dataset_palette(dataset: Any) -> np.ndarray:
    """(C, 3) uint8: the palette of the benchmark ``dataset`` reads (through any wrappers), else a
    generic one of its class count."""
    base = dataset
    while isinstance(base, DatasetWrapper):
        base = base.base
    reader = getattr(base, "reader", None)
    for reader_type, name in _READER_PALETTES:
        if isinstance(reader, reader_type):
            return get_palette(name)
    return get_palette(dataset.num_classes)


def render_scenes(cfg: Config, prediction_dir: Path, scenes: Sequence[str], out: Path) -> list[Path]:
    """Render saved point predictions (``<prediction_dir>/<scene>.npy``, (N,) int per raw point) of
    validation scenes; returns the PNG paths. Raises InputError for a scene not in the validation split
    or without its saved predictions."""
    dataset = build_dataset(cfg, cfg.data.val, train=False)
    palette = dataset_palette(dataset)
    index = {dataset.scene_name(i): i for i in range(len(dataset))}
    written = []
    for name in scenes:
        if name not in index:
            raise InputError(f"scene {name!r}: expected a scene of the validation split "
                             f"{cfg.data.val.split!r}, first ones: {list(index)[:5]}")
        sample = dataset[index[name]]
        saved = prediction_dir / f"{name}.npy"
        if not saved.is_file():
            raise InputError(f"{saved}: expected the saved point predictions of scene {name!r}, no such file")
        pred = np.load(saved)
        paths = save_prediction_views(sample["points"].numpy(), pred, sample["point_labels"].numpy(), out, name,
                                      palette, class_names=dataset.class_names)
        written.append(paths["png"])
    return written
