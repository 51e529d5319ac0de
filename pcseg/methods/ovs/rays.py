"""Pinhole cameras, per-pixel rays and stratified samples along them.

Conventions (used by every ``pcseg.methods.ovs`` module):

- **Intrinsics** ``K`` (3, 3): ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels, OpenCV style:
  the centre of pixel (column ``u``, row ``v``) has image coordinates ``(u, v)`` (integers), so a
  W-wide image centred on its optical axis has ``cx = (W - 1) / 2``.
- **Poses** ``c2w`` (4, 4) camera-to-world, OpenCV camera axes: x right, y down, z forward (the
  viewing direction). A world point ``p`` has camera coordinates ``R^T (p - t)`` with
  ``c2w = [[R, t], [0, 1]]``.
- **Rays** have origin ``t`` and direction ``R K^{-1} (u, v, 1)^T``: *not* unit length but with
  camera-z component 1, so the ray parameter is the z-depth of a point (the depth a z-buffer stores).
  Volume rendering scales sample spacings by ``|d|`` to get metric lengths.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["look_at", "pixel_coords", "generate_rays", "project", "stratified_samples"]


def _check_camera(K: Tensor, c2w: Tensor) -> None:
    if K.shape != (3, 3):
        raise ValueError(f"rays: K expected shape (3, 3), got {tuple(K.shape)}")
    if c2w.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"rays: c2w expected shape (4, 4) or (3, 4), got {tuple(c2w.shape)}")


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> Tensor:
    """Camera-to-world pose (4, 4) float of a camera at ``eye`` (3,) looking at ``target`` (3,).

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
    cam = torch.stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1], torch.ones(len(uv))], 1)
    dirs = cam @ c2w[:3, :3].T
    return c2w[:3, 3].expand_as(dirs).clone(), dirs


def project(points: Tensor, K: Tensor, c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points (N, 3) into the camera.

    Returns:
        uv (N, 2) float32 pixel coordinates and z (N,) camera z-depth (points behind have z <= 0).
    """
    _check_camera(K, c2w)
    K, c2w = K.float(), c2w.float()
    cam = (points.float() - c2w[:3, 3]) @ c2w[:3, :3]  # R^T (p - t), row-wise
    z = cam[:, 2]
    safe = torch.where(z.abs() < 1e-9, torch.full_like(z, 1e-9), z)
    uv = torch.stack([K[0, 0] * cam[:, 0] / safe + K[0, 2], K[1, 1] * cam[:, 1] / safe + K[1, 2]], 1)
    return uv, z


def stratified_samples(num_rays: int, near: float, far: float, num_samples: int, *, perturb: bool,
                       generator: torch.Generator | None = None) -> Tensor:
    """(R, S) float32 sample depths in ``[near, far]``: one per equal bin, uniform inside it when
    ``perturb`` (training), at the bin centre otherwise (evaluation). Increasing along each ray."""
    if not 0 <= near < far:
        raise ValueError(f"stratified_samples: expected 0 <= near < far, got near={near}, far={far}")
    edges = torch.linspace(near, far, num_samples + 1)
    lo, width = edges[:-1], edges[1:] - edges[:-1]
    if perturb:
        offset = torch.rand(num_rays, num_samples, generator=generator)
    else:
        offset = torch.full((num_rays, num_samples), 0.5)
    return lo + width * offset
