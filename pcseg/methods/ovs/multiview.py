"""Posed multi-view data: synthetic renderings of an indoor room and readers for real layouts.

All cameras follow :mod:`pcseg.methods.ovs.rays` (OpenCV axes, camera-to-world poses, pixel
centres at integer coordinates).

- :func:`room_cameras` + :func:`splat_views`: render RGB, per-pixel label and z-depth images of a
  point cloud (e.g. :func:`pcseg.data.synthetic.indoor.generate_room`) by z-buffered splatting:
  every point covers a ``(2r+1)^2`` pixel square, the nearest point wins, then empty pixels take
  their nearest filled neighbour for a few passes. Pixels that stay empty are white, labelled
  ``IGNORE_INDEX``, depth 0.
- :func:`read_3dovs_scene`: the 3D-OVS dataset layout (Liu et al., NeurIPS'23)::

      scene/images/00.png …                  RGB views (png or jpg), sorted by name
      scene/poses_bounds.npy                 (N, 17) LLFF poses: 3x5 [R | t | (H, W, f)] + near, far
      scene/segmentations/classes.txt        one class description per line
      scene/segmentations/<view>/<class>.png binary mask per class of the test view <view>

  LLFF rotation columns are (down, right, backwards); they become OpenCV (right, down, forward).
  The principal point is the image centre. A test-view folder ``<view>`` must be the stem of an
  image name (``00`` for ``images/00.png``) — the layout does not say otherwise.
- :func:`read_transforms_json`: the NeRF / instant-ngp ``transforms.json`` layout
  (``frames[i].file_path``, ``frames[i].transform_matrix`` camera-to-world in OpenGL axes
  (x right, y up, z backwards); intrinsics ``fl_x, fl_y, cx, cy`` or ``camera_angle_x``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from pcseg.data.formats import IGNORE_INDEX

from .rays import look_at, project

__all__ = ["PosedViews", "room_cameras", "splat_views", "read_3dovs_scene", "read_transforms_json"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class PosedViews:
    """V posed images of one scene.

    Attributes:
        images: (V, H, W, 3) float32 RGB in [0, 1].
        K: (V, 3, 3) float32 intrinsics; c2w: (V, 4, 4) float32 OpenCV camera-to-world poses.
        names: view ids (image stems).
        labels: (V, H, W) int64 class ids or ``IGNORE_INDEX`` (unannotated views: all ignored), or None.
        depth: (V, H, W) float32 z-depth in metres, 0 where unknown, or None.
        class_names: the names/descriptions the label ids index, or None.
        near_far: (near, far) depth bounds of the scene, or None.
    """

    images: Tensor
    K: Tensor
    c2w: Tensor
    names: list[str]
    labels: Tensor | None = None
    depth: Tensor | None = None
    class_names: tuple[str, ...] | None = None
    near_far: tuple[float, float] | None = None

    def subset(self, index: list[int]) -> PosedViews:
        """The views at ``index``, in that order."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return PosedViews(self.images[index], self.K[index], self.c2w[index], [self.names[i] for i in index],
                          pick(self.labels), pick(self.depth), self.class_names, self.near_far)


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
    pix = torch.round(uv).long()
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


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: expected png/jpg images, found none")
    return files


def _read_3dovs_labels(seg_dir: Path, names: list[str], shape: tuple[int, int]) -> tuple[Tensor, tuple[str, ...]]:
    classes_file = seg_dir / "classes.txt"
    if not classes_file.is_file():
        raise FileNotFoundError(f"{classes_file}: missing (one class description per line)")
    classes = tuple(line.strip() for line in classes_file.read_text().splitlines() if line.strip())
    labels = torch.full((len(names), *shape), IGNORE_INDEX, dtype=torch.long)
    for view_dir in sorted(p for p in seg_dir.iterdir() if p.is_dir()):
        if view_dir.name not in names:
            raise ValueError(f"{view_dir}: test view {view_dir.name!r} matches no image stem; known: {names[:5]}…")
        v = names.index(view_dir.name)
        for c, name in enumerate(classes):
            mask_file = view_dir / f"{name}.png"
            if not mask_file.is_file():
                continue  # the class is absent from this view
            with Image.open(mask_file) as im:
                mask = np.asarray(im.convert("L").resize(shape[::-1], Image.NEAREST)) > 127
            labels[v][torch.from_numpy(mask)] = c
    return labels, classes


def read_3dovs_scene(root: str | Path, image_dir: str = "images") -> PosedViews:
    """Read one 3D-OVS scene folder (layout in the module docstring); intrinsics follow the actual
    image size when ``image_dir`` holds downscaled images."""
    root = Path(root)
    files = _image_files(root / image_dir)
    poses_file = root / "poses_bounds.npy"
    if not poses_file.is_file():
        raise FileNotFoundError(f"{poses_file}: missing (LLFF (N, 17) poses and bounds)")
    raw = np.load(poses_file)
    if raw.ndim != 2 or raw.shape[1] != 17 or len(raw) != len(files):
        raise ValueError(f"{poses_file}: expected ({len(files)}, 17) for {len(files)} images, got {raw.shape}")
    images = np.stack([_load_rgb(f) for f in files])
    height, width = images.shape[1:3]
    mats = raw[:, :15].reshape(-1, 3, 5)
    scale = width / mats[0, 1, 4]
    c2w = np.tile(np.eye(4), (len(files), 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2] = mats[:, :, 1], mats[:, :, 0], -mats[:, :, 2]
    c2w[:, :3, 3] = mats[:, :, 3]
    focal = mats[:, 2, 4] * scale
    K = np.zeros((len(files), 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = focal, focal, width / 2 - 0.5, height / 2 - 0.5, 1.0
    names = [f.stem for f in files]
    labels, classes = None, None
    if (root / "segmentations").is_dir():
        labels, classes = _read_3dovs_labels(root / "segmentations", names, (height, width))
    return PosedViews(torch.from_numpy(images), torch.as_tensor(K, dtype=torch.float32),
                      torch.as_tensor(c2w, dtype=torch.float32), names, labels, None, classes,
                      (float(raw[:, 15].min()), float(raw[:, 16].max())))


def read_transforms_json(path: str | Path) -> PosedViews:
    """Read a NeRF / instant-ngp ``transforms.json`` (layout in the module docstring)."""
    path = Path(path)
    meta = json.loads(path.read_text())
    frames = meta.get("frames")
    if not frames:
        raise ValueError(f"{path}: 'frames' expected a non-empty list, got {frames!r}")
    files = []
    for i, frame in enumerate(frames):
        f = path.parent / frame["file_path"]
        if not f.is_file():
            f = next((f.with_name(f.name + s) for s in _IMAGE_SUFFIXES if f.with_name(f.name + s).is_file()), f)
        if not f.is_file():
            raise FileNotFoundError(f"{path}: frames[{i}].file_path {frame['file_path']!r} not found")
        files.append(f)
    images = np.stack([_load_rgb(f) for f in files])
    height, width = images.shape[1:3]
    if "fl_x" in meta:
        sx, sy = width / meta.get("w", width), height / meta.get("h", height)
        fx, fy = meta["fl_x"] * sx, meta.get("fl_y", meta["fl_x"]) * sy
        cx = meta.get("cx", meta.get("w", width) / 2) * sx - 0.5  # continuous -> integer pixel centres
        cy = meta.get("cy", meta.get("h", height) / 2) * sy - 0.5
    elif "camera_angle_x" in meta:
        fx = fy = 0.5 * width / np.tan(meta["camera_angle_x"] / 2)
        cx, cy = width / 2 - 0.5, height / 2 - 0.5
    else:
        raise ValueError(f"{path}: intrinsics expected 'fl_x' (and 'fl_y', 'cx', 'cy') or 'camera_angle_x'")
    gl_to_cv = np.diag([1.0, -1.0, -1.0, 1.0])
    c2w = np.stack([np.asarray(fr["transform_matrix"], float) @ gl_to_cv for fr in frames])
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32).expand(len(files), 3, 3)
    return PosedViews(torch.from_numpy(images), K.clone(), torch.as_tensor(c2w, dtype=torch.float32),
                      [f.stem for f in files])
