"""Synthetic posed views of a generated indoor room, for tools and tests (library code reads real layouts).

- :func:`room_cameras` + :func:`splat_views`: render RGB, per-pixel label and z-depth images of a
  point cloud (e.g. :func:`pcseg.data.synthetic.indoor.generate_room`) by z-buffered splatting:
  every point covers a ``(2r+1)^2`` pixel square (around the pixel it falls in,
  :func:`pcseg.data.projection.pixel_index`), the nearest point wins, then empty pixels take their
  nearest filled neighbour for a few passes. Pixels that stay empty are white, labelled
  ``IGNORE_INDEX``, depth 0.
- :func:`room_views`: one generated room with ``num_views + held_out`` such views and its points.
- :func:`write_room_views`: rendered views of many rooms in the image-folder layout
  (:class:`pcseg.data.datasets.ImageFolderReader`), the training data of the LSeg-style encoder
  (``configs/ovs/lseg_*.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..formats import IGNORE_INDEX
from ..formats.posed_views import PosedViews
from ..projection import look_at, pixel_index, project
from .indoor import INDOOR_CLASSES, generate_room

__all__ = ["room_cameras", "splat_views", "RoomViews", "room_views", "write_room_views"]


def _intrinsics(height: int, width: int, fov_deg: float) -> Tensor:
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    return torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]], dtype=torch.float32)


def room_cameras(coord: np.ndarray, num_views: int, height: int, width: int, fov_deg: float = 75.0,
                 seed: int = 0) -> tuple[Tensor, Tensor]:
    """Cameras inside a room (points (N, 3), z up, floor at 0): eyes 1.2–1.8 m high in the middle
    half of the floor, each looking at a random point 0.3–1.2 m high near the walls.

    Returns:
        K (V, 3, 3) and c2w (V, 4, 4) float32.
    """
    rng = np.random.default_rng(seed)
    lo, hi = coord.min(0), coord.max(0)
    size = hi - lo
    poses = []
    for _ in range(num_views):
        eye = lo + size * np.r_[rng.uniform(0.25, 0.75, 2), 0.0] + [0.0, 0.0, rng.uniform(1.2, 1.8)]
        target = lo + size * np.r_[rng.uniform(0.05, 0.95, 2), 0.0] + [0.0, 0.0, rng.uniform(0.3, 1.2)]
        while np.linalg.norm((target - eye)[:2]) < 1.0:
            target = lo + size * np.r_[rng.uniform(0.05, 0.95, 2), 0.0] + [0.0, 0.0, rng.uniform(0.3, 1.2)]
        poses.append(look_at(torch.as_tensor(eye, dtype=torch.float32), torch.as_tensor(target, dtype=torch.float32)))
    return _intrinsics(height, width, fov_deg).expand(num_views, 3, 3).clone(), torch.stack(poses)


def _splat_one(points: Tensor, K: Tensor, c2w: Tensor, height: int, width: int, radius: int,
               fill_passes: int) -> tuple[Tensor, Tensor]:
    """Index (H, W) int64 of the visible point per pixel (-1 if none) and its z-depth (H, W)."""
    uv, z = project(points, K, c2w)
    pix = pixel_index(uv)
    offsets = torch.arange(-radius, radius + 1)
    du, dv = torch.meshgrid(offsets, offsets, indexing="ij")
    u = (pix[:, None, 0] + du.reshape(1, -1)).reshape(-1)
    v = (pix[:, None, 1] + dv.reshape(1, -1)).reshape(-1)
    idx = torch.arange(len(points)).repeat_interleave(len(offsets) ** 2)
    zz = z.repeat_interleave(len(offsets) ** 2)
    ok = (zz > 1e-3) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat, zz, idx = v[ok] * width + u[ok], zz[ok], idx[ok]
    depth = torch.full((height * width,), float("inf")).scatter_reduce(0, flat, zz, "amin")
    winner = torch.full((height * width,), -1, dtype=torch.long)
    front = zz == depth[flat]
    winner[flat[front]] = idx[front]
    depth, winner = depth.view(1, 1, height, width), winner.view(1, 1, height, width).float()
    for _ in range(fill_passes):  # empty pixels take the nearest of their 3x3 neighbours
        empty = torch.isinf(depth)
        if not empty.any():
            break
        neg = F.max_pool2d(-depth, 3, stride=1, padding=1, return_indices=True)
        near_depth, where = -neg[0], neg[1]
        near_index = winner.flatten().gather(0, where.flatten()).view_as(winner)
        depth = torch.where(empty, near_depth, depth)
        winner = torch.where(empty, near_index, winner)
    winner = torch.where(torch.isinf(depth), torch.full_like(winner, -1), winner)
    return winner.view(height, width).long(), torch.where(torch.isinf(depth), 0.0, depth).view(height, width)


def splat_views(coord: np.ndarray, color: np.ndarray, semantic: np.ndarray, K: Tensor, c2w: Tensor, height: int,
                width: int, radius: int = 1, fill_passes: int = 2) -> PosedViews:
    """Render a coloured, labelled point cloud from V cameras (see the module docstring).

    Args:
        coord: (N, 3) float metres; color: (N, 3) uint8 RGB; semantic: (N,) int class ids.
        K: (V, 3, 3); c2w: (V, 4, 4).
    """
    points = torch.as_tensor(np.asarray(coord), dtype=torch.float32)
    rgb = torch.as_tensor(np.asarray(color), dtype=torch.float32) / 255.0
    sem = torch.as_tensor(np.asarray(semantic), dtype=torch.long)
    if not len(points) == len(rgb) == len(sem):
        raise ValueError(f"splat_views: coord {len(points)}, color {len(rgb)} and semantic {len(sem)} rows differ")
    images, labels, depths = [], [], []
    for k, pose in zip(K, c2w):
        winner, depth = _splat_one(points, k, pose, height, width, radius, fill_passes)
        hit = winner >= 0
        safe = winner.clamp(min=0)
        images.append(torch.where(hit[..., None], rgb[safe], torch.ones(3)))
        labels.append(torch.where(hit, sem[safe], torch.full_like(safe, IGNORE_INDEX)))
        depths.append(depth)
    return PosedViews(torch.stack(images), K.float(), c2w.float(), [f"{i:03d}" for i in range(len(K))],
                      torch.stack(labels), torch.stack(depths))


@dataclass(frozen=True)
class RoomViews:
    """A generated room seen from cameras: ``train`` views (fitted), ``held_out`` views (never
    fitted), ``points`` (N, 3) float32 with ``point_classes`` (N,) int64 indices into ``class_names``
    (the :data:`~pcseg.data.synthetic.indoor.INDOOR_CLASSES` names)."""

    train: PosedViews
    held_out: PosedViews
    points: Tensor
    point_classes: Tensor
    class_names: tuple[str, ...]


def room_views(seed: int, num_points: int = 60_000, num_views: int = 24, held_out: int = 4, height: int = 48,
               width: int = 64, fov_deg: float = 75.0) -> RoomViews:
    """Room ``generate_room(seed)`` splatted from ``num_views + held_out`` :func:`room_cameras` (seeded
    by ``seed``); the last ``held_out`` views are the held-out ones."""
    room = generate_room(seed, num_points=num_points)
    K, c2w = room_cameras(room.coord, num_views + held_out, height, width, fov_deg, seed)
    views = splat_views(room.coord, room.color, room.semantic, K, c2w, height, width)
    names = tuple(c.name for c in INDOOR_CLASSES)
    views.class_names = names
    return RoomViews(views.subset(list(range(num_views))), views.subset(list(range(num_views, len(K)))),
                     torch.as_tensor(room.coord, dtype=torch.float32), torch.as_tensor(room.semantic, dtype=torch.long),
                     names)


def write_room_views(out: str | Path, rooms: int, views_per_room: int, *, room_seed: int = 1000, val_rooms: int = 0,
                     num_points: int = 60_000, height: int = 48, width: int = 64, fov_deg: float = 75.0,
                     ignore_label: int = 255) -> list[str]:
    """Write the views of rooms ``room_seed … room_seed + rooms + val_rooms - 1`` (the last
    ``val_rooms`` to ``val``, the others to ``train``) as ``<out>/<split>/images/r<seed>_v<i>.png``
    (RGB) and ``<out>/<split>/labels/r<seed>_v<i>.png`` (uint8 :data:`INDOOR_CLASSES` index,
    ``ignore_label`` where nothing is seen); also ``<out>/classes.txt``, one class name a line.
    Returns the image names written, in order."""
    out = Path(out)
    if len(INDOOR_CLASSES) >= ignore_label or not 0 <= ignore_label <= 255:
        raise ValueError(f"write_room_views: ignore_label expected in [{len(INDOOR_CLASSES)}, 255], got {ignore_label}")
    written = []
    for i in range(rooms + val_rooms):
        seed = room_seed + i
        split = "train" if i < rooms else "val"
        views = room_views(seed, num_points, views_per_room, 0, height, width, fov_deg).train
        for folder in ("images", "labels"):
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for v in range(views_per_room):
            name = f"r{seed}_v{v:03d}"
            rgb = (views.images[v].numpy() * 255).round().astype(np.uint8)
            label = np.where(views.labels[v].numpy() >= 0, views.labels[v].numpy(), ignore_label).astype(np.uint8)
            Image.fromarray(rgb).save(out / split / "images" / f"{name}.png")
            Image.fromarray(label).save(out / split / "labels" / f"{name}.png")
            written.append(name)
    (out / "classes.txt").write_text("".join(f"{c.name}\n" for c in INDOOR_CLASSES))
    return written
