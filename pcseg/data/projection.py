"""LiDAR → camera projection with KITTI calibration (``P2`` and ``Tr``).

A point ``x`` in the velodyne frame goes to camera coordinates ``c = Tr @ [x, 1]`` and to the
homogeneous pixel ``p = P2 @ c``; its image position is ``(u, v) = (p_0 / p_2, p_1 / p_2)`` with
pixel centres at integer ``(u, v)`` (KITTI's convention), so the pixel it falls in is
``(round(u), round(v))`` (halves rounded up). A point is dropped when it lies behind the camera
(depth ``p_2 <= min_depth``) or when its pixel is outside the ``width`` x ``height`` image; the
two counts are reported separately.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Projection", "project_points"]


@dataclass(frozen=True)
class Projection:
    """Where each of N points lands in one image.

    Attributes:
        pixel: (N, 2) int64 (column, row) of the pixel each point falls in; (-1, -1) where dropped.
        valid: (N,) bool, True where the point is in front of the camera and inside the image.
        depth: (N,) float64 depth along the optical axis (``p_2``), also for dropped points.
        num_behind: points with depth <= ``min_depth``.
        num_outside: points in front of the camera whose pixel is outside the image.
    """

    pixel: np.ndarray
    valid: np.ndarray
    depth: np.ndarray
    num_behind: int
    num_outside: int


def _check_matrix(name: str, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != shape:
        raise ValueError(f"project_points: calibration '{name}' expected shape {shape}, got {matrix.shape}")
    return matrix


def project_points(points: np.ndarray, P2: np.ndarray, Tr: np.ndarray, image_size: tuple[int, int],
                   min_depth: float = 0.0) -> Projection:
    """Project velodyne points into camera 2 (see the module docstring).

    Args:
        points: (N, 3) float velodyne coordinates, metres (extra columns are rejected).
        P2: (3, 4) camera-2 projection matrix; Tr: (4, 4) velodyne → rectified camera-0 transform,
            as returned by :meth:`pcseg.data.SemanticKITTIReader.load_calib`.
        image_size: (width, height) in pixels.
        min_depth: points with depth <= this (metres) count as behind the camera.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"project_points: points expected shape (N, 3), got {points.shape}")
    width, height = image_size
    if width < 1 or height < 1:
        raise ValueError(f"project_points: image_size expected (width, height) >= 1, got {image_size}")
    projection = _check_matrix("P2", P2, (3, 4)) @ _check_matrix("Tr", Tr, (4, 4))
    homogeneous = points @ projection[:, :3].T + projection[:, 3]
    depth = homogeneous[:, 2]
    in_front = depth > min_depth
    safe_depth = np.where(in_front, depth, 1.0)
    pixel = np.floor(homogeneous[:, :2] / safe_depth[:, None] + 0.5)
    inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
    valid = in_front & inside
    pixel = np.where(valid[:, None], pixel, -1).astype(np.int64)
    return Projection(pixel, valid, depth, int((~in_front).sum()), int((in_front & ~inside).sum()))
