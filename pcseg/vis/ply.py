"""Coloured point clouds as binary PLY files (open them in Open3D, MeshLab or CloudCompare).

Files are written next to their destination and renamed over it (``os.replace``), so a reader never
sees a half-written file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from ..utils.atomic import atomic_path
from .palette import colorize, to_colors

__all__ = ["save_ply"]


def save_ply(path: str | Path, points: object, colors: object | None = None, labels: object | None = None,
             palette: np.ndarray | None = None, ignore_index: int = -100) -> Path:
    """Write a binary little-endian PLY point cloud.

    Args:
        path: output ``.ply`` file; parent folders are created.
        points: (N, 3) float coordinates, stored as float32 ``x, y, z``.
        colors: (N, 3) uint8 RGB (or floats in [0, 1]) stored as uchar ``red, green, blue``.
        labels: (N,) integer class ids stored as int32 ``label``; when ``colors`` is ``None`` they
            also give the colours, through ``palette`` (see :func:`pcseg.vis.palette.colorize`).
        palette: (C, 3) uint8 class colours; ``None`` takes a generic palette.
        ignore_index: label drawn grey.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"save_ply({path}): points expected (N, 3), got shape {points.shape}")
    n = len(points)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    columns = [points[:, 0], points[:, 1], points[:, 2]]
    if colors is None and labels is not None:
        rgb = colorize(labels, palette, ignore_index)
    else:
        rgb = None if colors is None else to_colors(colors)
    if rgb is not None:
        if len(rgb) != n:
            raise ValueError(f"save_ply({path}): {n} points but {len(rgb)} colours")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        columns += [rgb[:, 0], rgb[:, 1], rgb[:, 2]]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"save_ply({path}): labels expected ({n},) integers, "
                             f"got shape {labels.shape} dtype {labels.dtype}")
        fields.append(("label", "<i4"))
        columns.append(labels)
    vertex = np.empty(n, dtype=fields)
    for (name, _), column in zip(fields, columns):
        vertex[name] = column
    path = Path(path)
    with atomic_path(path) as tmp:
        PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<").write(str(tmp))
    return path
