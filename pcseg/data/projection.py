"""Pinhole cameras: the one projection module of pcseg (SLidR's LiDAR → image, 3D-OVS's posed views).

Pixel convention (OpenCV's and KITTI's): the **centre** of pixel (column ``c``, row ``r``) sits at
continuous image coordinates ``(u, v) = (c, r)``, so pixel ``c`` covers ``[c - 0.5, c + 0.5)`` and a
position ``u`` falls in pixel ``floor(u + 0.5)`` (:func:`pixel_index`; a position exactly between
two pixels goes to the right/lower one, for every pixel alike — unlike round-half-to-even, which
would give pixel 0 the closed interval [-0.5, 0.5] and pixel 1 the open (0.5, 1.5)). A W-wide image
centred on its optical axis has ``cx = (W - 1) / 2``. Layouts written with centres at ``+0.5``
(NeRF's ``transforms.json``, ScanNet resizing) are converted by their readers
(:mod:`pcseg.data.formats.posed_views`) with ``cx_ours = cx_theirs - 0.5``.

Two camera descriptions share that convention:

- KITTI calibration (:func:`project_points`): a velodyne point ``x`` goes to camera coordinates
  ``Tr @ [x, 1]`` and to the homogeneous pixel ``p = P2 @ (Tr @ [x, 1])``, ``(u, v) = (p_0 / p_2,
  p_1 / p_2)``, depth ``p_2``.
- Intrinsics ``K`` (3, 3) ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` and a camera-to-world pose
  ``c2w`` (4, 4) ``[[R, t], [0, 1]]`` with OpenCV camera axes (x right, y down, z forward):
  a world point ``p`` has camera coordinates ``R^T (p - t)`` (:func:`project`); the ray through
  ``(u, v)`` has origin ``t`` and direction ``R K^{-1} (u, v, 1)^T`` (:func:`generate_rays`): *not*
  unit length but with camera-z component 1, so the ray parameter is the z-depth a z-buffer stores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = ["Projection", "pixel_index", "project_points", "look_at", "pixel_coords", "generate_rays", "project"]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)


def pixel_index(uv: ArrayT) -> ArrayT:
    """The pixel (column, row) that continuous positions ``uv`` (..., 2) fall in: ``floor(uv + 0.5)``
    as int64 (numpy array in, numpy array out; tensor in, tensor out). Not range-checked."""
    if isinstance(uv, Tensor):
        return torch.floor(uv + 0.5).long()
    return np.floor(np.asarray(uv, dtype=np.float64) + 0.5).astype(np.int64)


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
    """Project velodyne points into camera 2 with KITTI calibration (see the module docstring).

    A point is dropped when it lies behind the camera (depth ``<= min_depth``) or its pixel
    (:func:`pixel_index`) is outside the ``width`` x ``height`` image; the two counts are reported.

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
    pixel = pixel_index(homogeneous[:, :2] / safe_depth[:, None])
    inside = (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)
    valid = in_front & inside
    pixel = np.where(valid[:, None], pixel, -1).astype(np.int64)
    return Projection(pixel, valid, depth, int((~in_front).sum()), int((in_front & ~inside).sum()))


def _check_camera(K: Tensor, c2w: Tensor) -> None:
    if K.shape != (3, 3):
        raise ValueError(f"camera: K expected shape (3, 3), got {tuple(K.shape)}")
    if c2w.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"camera: c2w expected shape (4, 4) or (3, 4), got {tuple(c2w.shape)}")


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world pose (4, 4) float32 of a camera at ``eye`` (3,) looking at ``target`` (3,).

    The camera's y axis (down in the image) points away from ``up`` (default world +z).
    """
    eye, target = torch.as_tensor(eye, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)
    up = torch.tensor([0.0, 0.0, 1.0]) if up is None else torch.as_tensor(up, dtype=torch.float32)
    z = target - eye
    if z.norm() < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    if x.norm() < 1e-6:
        raise ValueError(f"look_at: viewing direction {z.tolist()} is parallel to up {up.tolist()}")
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye
    return c2w


def pixel_coords(height: int, width: int) -> Tensor:
    """(H*W, 2) float32 pixel centres ``(u, v)``, row-major (``v`` slowest)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


def generate_rays(K: Tensor, c2w: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through pixel positions ``uv`` (R, 2) float.

    Returns:
        origins (R, 3) and directions (R, 3) float32 in world coordinates; directions have camera-z 1.
    """
    _check_camera(K, c2w)
    K, c2w, uv = K.float(), c2w.float(), uv.float()
    cam = torch.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1],
                       torch.ones(len(uv), device=uv.device)], 1)
    dirs = cam @ c2w[:3, :3].T
    return c2w[:3, 3].expand_as(dirs).clone(), dirs


def project(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points (N, 3) into the camera ``K``, ``c2w``.

    Returns:
        uv (N, 2) float32 continuous pixel positions (the pixel: :func:`pixel_index`) and z (N,)
        float32 camera z-depth (points behind the camera have z <= 0).
    """
    _check_camera(K, c2w)
    K, c2w = K.float(), c2w.float()
    cam = (points.float() - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (p - t), row-wise
    z = cam[:, 2]
    safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    uv = torch.stack([K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2]], 1)
    return uv, z
