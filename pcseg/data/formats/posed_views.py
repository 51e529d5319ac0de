"""Readers of posed multi-view images (:class:`PosedViews`) in the layouts real downloads have.

All cameras follow :mod:`pcseg.data.projection` (OpenCV axes, camera-to-world poses, pixel
centres at integer coordinates); layouts with centres at +0.5 are converted here.
(Synthetic rooms rendered from cameras: :mod:`pcseg.data.synthetic.posed_room`, for tools and tests.)

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
- :func:`read_scannet_frames`: one ScanNet scene's posed RGB-D frames as exported by ScanNet's
  SensReader (``reader.py --export_color_images --export_depth_images --export_poses
  --export_intrinsics``), plus the optional extracted ``<scene>_2d-label-filt.zip``::

      scene/color/<i>.jpg                    RGB frames (1296x968), i = integer frame id
      scene/depth/<i>.png                    optional: uint16 depth in mm (640x480), 0 = unknown
      scene/pose/<i>.txt                     4x4 camera-to-world, OpenCV axes; -inf = tracking lost
      scene/intrinsic/intrinsic_color.txt    4x4, K of the colour camera in the top-left 3x3
      scene/intrinsic/intrinsic_depth.txt    4x4, K of the depth camera (needed with depth/ only)
      scene/label-filt/<i>.png               optional uint16 ScanNet raw label ids, mapped through
                                             ``scannetv2-labels.combined.tsv`` (found beside the scene,
                                             or given; ``label_map="nyu40"`` for NYU40-id pngs)

  ``<i>`` is the integer id as written, with or without leading zeros (``0.jpg`` or ``00000.jpg``);
  pose, depth and label files share the colour frame's name stem. Frames are sorted by integer id
  (9 before 10). Without ``depth/`` (colour + pose + colour intrinsics, as many exports ship them)
  the views have no depth and no near/far bounds. Both K files are taken in this module's
  convention (integer pixel centres). The depth camera is assumed to share the colour camera's
  centre and orientation (ScanNet registers them), so each output pixel takes, by nearest
  neighbour, the depth pixel on the same ray through the depth intrinsics.
"""
from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pcseg.data.projection import pixel_index
from pcseg.utils.errors import InputError

from ._common import IGNORE_INDEX, remap_labels
from .scannet import SCANNET20_CLASS_NAMES, SCANNET20_NYU40_IDS, nyu40_to_scannet20

__all__ = ["PosedViews", "read_3dovs_scene", "read_transforms_json", "read_scannet_frames", "LABEL_MAP_NAME"]

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


_NEAR_FAR_MARGIN = 0.2
"""near = (1 - m) * 5th percentile, far = (1 + m) * 95th percentile of the valid depths."""


def _read_matrix(path: Path, what: str) -> np.ndarray:
    """A 4x4 float64 matrix from a whitespace-separated text file; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what}, a 4x4 matrix)")
    try:
        mat = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: {what}: expected a 4x4 matrix of numbers ({err})") from None
    if mat.shape != (4, 4):
        raise ValueError(f"{path}: {what}: expected a 4x4 matrix, got shape {mat.shape}")
    return mat


def _scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(3, 3) K for an image resized by (sx, sy), integer pixel centres before and after:
    continuous coordinates (centres at +0.5) scale, so ``c' = s (c + 0.5) - 0.5``."""
    out = K[:3, :3].astype(np.float64).copy()
    out[0, 0], out[0, 1], out[1, 1] = K[0, 0] * sx, K[0, 1] * sx, K[1, 1] * sy
    out[0, 2], out[1, 2] = sx * (K[0, 2] + 0.5) - 0.5, sy * (K[1, 2] + 0.5) - 0.5
    return out


def _read_depth_mm(path: Path) -> np.ndarray:
    """(h, w) float32 metres from a 16-bit millimetre png (0 stays 0 = unknown)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (16-bit depth png in mm for the colour frame of the same id)")
    with Image.open(path) as im:
        if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"{path}: expected a 16-bit depth png (millimetres), got PIL mode {im.mode!r}")
        return np.asarray(im, dtype=np.float32) / 1000.0


def _depth_lookup(K_out: np.ndarray, K_depth: np.ndarray, size: tuple[int, int],
                  depth_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel (H, W): the nearest depth pixel on the same ray (row, col int64) and
    whether it lies inside the depth image (bool)."""
    height, width = size
    u = (np.arange(width) - K_out[0, 2]) / K_out[0, 0] * K_depth[0, 0] + K_depth[0, 2]
    v = (np.arange(height) - K_out[1, 2]) / K_out[1, 1] * K_depth[1, 1] + K_depth[1, 2]
    col, row = pixel_index(u), pixel_index(v)
    inside = ((row >= 0) & (row < depth_size[0]))[:, None] & ((col >= 0) & (col < depth_size[1]))[None, :]
    rows = np.broadcast_to(row.clip(0, depth_size[0] - 1)[:, None], size)
    cols = np.broadcast_to(col.clip(0, depth_size[1] - 1)[None, :], size)
    return rows, cols, inside


def _nearest_resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) array → (H, W) by nearest neighbour in continuous coordinates (pixel centres at +0.5)."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * array.shape[0] / size[0]).astype(np.int64), array.shape[0] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * array.shape[1] / size[1]).astype(np.int64), array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"


def _raw_to_scannet20(label_map: Path) -> dict[int, int]:
    """ScanNet raw label id → ScanNet-20 train id from ``scannetv2-labels.combined.tsv``
    (columns ``id`` and ``nyu40id``); 0 (unannotated) → ``IGNORE_INDEX``."""
    if not label_map.is_file():
        raise FileNotFoundError(f"{label_map}: missing (scannetv2-labels.combined.tsv with columns id, nyu40id)")
    with label_map.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or not {"id", "nyu40id"} <= set(rows[0]):
        raise ValueError(f"{label_map}: expected a tab-separated table with columns 'id' and 'nyu40id'")
    mapping = {0: IGNORE_INDEX}
    for row in rows:
        nyu = int(row["nyu40id"]) if row["nyu40id"].strip() else 0
        mapping[int(row["id"])] = SCANNET20_NYU40_IDS.index(nyu) if nyu in SCANNET20_NYU40_IDS else IGNORE_INDEX
    return mapping


def _frame_files(color_dir: Path) -> list[tuple[int, Path]]:
    """(frame id, colour file) pairs sorted by integer id; ``00012.jpg`` is frame 12."""
    files = [p for p in color_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES] if color_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{color_dir}: expected colour frames <id>.jpg, found none")
    bad = [p.name for p in files if not (p.stem.isascii() and p.stem.isdigit())]
    if bad:
        raise InputError(f"{color_dir}: expected colour frames named <integer id>.jpg, got {bad[:5]}")
    frames = sorted((int(p.stem), p) for p in files)
    clashes = [f"{a.name} and {b.name}" for (i, a), (j, b) in zip(frames, frames[1:]) if i == j]
    if clashes:
        raise InputError(f"{color_dir}: expected one colour frame per id, got {len(clashes)} ids written twice: "
                         f"{', '.join(clashes[:3])}")
    return frames


def _find_label_map(root: Path, label_dir: Path) -> Path:
    """``scannetv2-labels.combined.tsv`` in ``root``, its parent or grandparent (a download's top level)."""
    candidates = [d / LABEL_MAP_NAME for d in (root, root.parent, root.parent.parent)]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{label_dir}: label pngs need {LABEL_MAP_NAME} to map ScanNet raw ids (looked in "
                                f"{', '.join(str(c.parent) for c in candidates)}); pass label_map=<path to it>, or "
                                f"label_map='nyu40' if the pngs hold NYU40 ids")
    return found


def read_scannet_frames(root: str | Path, frame_skip: int = 1, image_size: tuple[int, int] | None = None,
                        label_map: str | Path | None = None) -> PosedViews:
    """Read one ScanNet scene's exported frames (layout in the module docstring).

    Args:
        root: the scene folder holding ``color/``, ``pose/``, ``intrinsic/`` (and optionally
            ``depth/`` and ``label-filt/``).
        frame_skip: keep every ``frame_skip``-th frame of the id-sorted colour frames (before frames
            with a non-finite pose are dropped, so the kept ids do not shift).
        image_size: output ``(H, W)``; default the depth frames' size (640x480 in ScanNet), or the
            colour frames' size without ``depth/``.
        label_map: how the label pngs' ids are read: the path of ``scannetv2-labels.combined.tsv``
            (ScanNet raw ids, what ``label-filt`` holds in a download); ``"nyu40"`` (the pngs hold
            NYU40 ids); None looks for the tsv in ``root``, its parent and grandparent and raises
            FileNotFoundError if none is there (never a silent guess). Either way the ids become the
            20 benchmark classes (:data:`~pcseg.data.formats.scannet.SCANNET20_CLASS_NAMES`), other
            ids ``IGNORE_INDEX``.

    Returns:
        :class:`PosedViews`: images (V, H, W, 3) float32 (bilinear resize); K (V, 3, 3) the colour
        intrinsics scaled to (H, W); c2w (V, 4, 4); names the colour frames' name stems; depth
        (V, H, W) float32 metres (nearest, 0 = unknown), or None without ``depth/``; labels
        (V, H, W) int64 (nearest) or None without ``label-filt/``; class_names the 20 ScanNet
        classes; near_far from the valid depths: ``(0.8 * 5th percentile, 1.2 * 95th percentile)``,
        or None without ``depth/``.

    Frames whose pose is not finite (ScanNet writes ``-inf`` where tracking was lost) are dropped
    with a warning naming them. Missing or malformed files raise errors naming the file.
    """
    root = Path(root)
    if frame_skip < 1:
        raise ValueError(f"read_scannet_frames: frame_skip expected >= 1, got {frame_skip}")
    frames = _frame_files(root / "color")[::frame_skip]
    K_color = _read_matrix(root / "intrinsic" / "intrinsic_color.txt", "colour intrinsics")
    depth_dir = root / "depth"
    has_depth = depth_dir.is_dir()
    K_depth = _read_matrix(root / "intrinsic" / "intrinsic_depth.txt", "depth intrinsics") if has_depth else None
    poses, lost = [], []
    for _, color_file in frames:
        pose_file = root / "pose" / f"{color_file.stem}.txt"
        if not pose_file.is_file():
            raise FileNotFoundError(f"{pose_file}: missing (4x4 camera-to-world pose of {color_file})")
        pose = _read_matrix(pose_file, "camera-to-world pose")
        (poses if np.isfinite(pose).all() else lost).append((color_file, pose_file, pose))
    if lost:
        warnings.warn(f"{root / 'pose'}: dropped {len(lost)} of {len(frames)} frames whose pose is not finite "
                      f"(tracking lost): {', '.join(p.name for _, p, _ in lost)}", stacklevel=2)
    if not poses:
        raise ValueError(f"{root / 'pose'}: no frame has a finite pose ({len(frames)} read)")

    with Image.open(poses[0][0]) as im:
        color_size = im.size
    first_depth = _read_depth_mm(depth_dir / f"{poses[0][0].stem}.png") if has_depth else None
    if image_size is not None:
        size = tuple(image_size)
    else:
        size = first_depth.shape if has_depth else color_size[::-1]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"read_scannet_frames: image_size expected (H, W) > 0, got {image_size}")
    height, width = int(size[0]), int(size[1])
    label_dir = root / "label-filt"
    images, depths, raw_labels = [], [], []
    for color_file, _, _ in poses:
        with Image.open(color_file) as im:
            if im.size != color_size:
                raise ValueError(f"{color_file}: expected {color_size[0]}x{color_size[1]} like the first colour "
                                 f"frame (one intrinsic_color.txt), got {im.size[0]}x{im.size[1]}")
            rgb = im.convert("RGB").resize((width, height), Image.BILINEAR)
        images.append(np.asarray(rgb, dtype=np.float32) / 255.0)
        if has_depth:
            depths.append(first_depth if not depths else _read_depth_mm(depth_dir / f"{color_file.stem}.png"))
        if label_dir.is_dir():
            label_file = label_dir / f"{color_file.stem}.png"
            if not label_file.is_file():
                raise FileNotFoundError(f"{label_file}: missing (uint16 label png of {color_file})")
            with Image.open(label_file) as im:
                raw_labels.append(_nearest_resize(np.asarray(im, dtype=np.int64), (height, width)))
    K = _scale_intrinsics(K_color, width / color_size[0], height / color_size[1])
    depth_out, near_far = None, None
    if has_depth:
        depth_out, near_far = _register_depth(depths, [c.stem for c, _, _ in poses], depth_dir, K, K_depth,
                                              (height, width))

    labels = None
    if raw_labels:
        stacked = np.stack(raw_labels)
        if label_map == "nyu40":
            mapped, _ = nyu40_to_scannet20(stacked.reshape(-1), str(label_dir))
        else:
            tsv = Path(label_map) if label_map is not None else _find_label_map(root, label_dir)
            mapped, _ = remap_labels(stacked.reshape(-1), _raw_to_scannet20(tsv), str(label_dir), "label")
        labels = torch.from_numpy(mapped.reshape(stacked.shape))
    c2w = torch.as_tensor(np.stack([pose for _, _, pose in poses]), dtype=torch.float32)
    K_all = torch.as_tensor(K, dtype=torch.float32).expand(len(poses), 3, 3).clone()
    return PosedViews(torch.from_numpy(np.stack(images)), K_all, c2w, [c.stem for c, _, _ in poses], labels,
                      depth_out, SCANNET20_CLASS_NAMES, near_far)


def _register_depth(depths: list[np.ndarray], stems: list[str], depth_dir: Path, K: np.ndarray,
                    K_depth: np.ndarray, size: tuple[int, int]) -> tuple[Tensor, tuple[float, float]]:
    """Depth frames (each (h, w) float32 metres, one depth camera ``K_depth``) seen through the
    output camera ``K`` (3, 3) at ``size`` (H, W): (V, H, W) float32 metres (0 = unknown) and the
    scene's near/far bounds from the valid depths (``_NEAR_FAR_MARGIN``)."""
    rows, cols, inside = _depth_lookup(K, K_depth, size, depths[0].shape)
    depth_out = np.zeros((len(depths), *size), dtype=np.float32)
    for v, (d, stem) in enumerate(zip(depths, stems)):
        if d.shape != depths[0].shape:
            raise ValueError(f"{depth_dir / f'{stem}.png'}: expected {depths[0].shape[1]}x{depths[0].shape[0]} "
                             f"like the first depth frame (one intrinsic_depth.txt), got {d.shape[1]}x{d.shape[0]}")
        depth_out[v] = np.where(inside, d[rows, cols], 0.0)
    valid = depth_out[depth_out > 0]
    if valid.size == 0:
        raise ValueError(f"{depth_dir}: no valid (non-zero) depth in the {len(depths)} frames read")
    p5, p95 = np.percentile(valid, [5, 95])
    near_far = (float((1 - _NEAR_FAR_MARGIN) * p5), float((1 + _NEAR_FAR_MARGIN) * p95))
    return torch.from_numpy(depth_out), near_far
