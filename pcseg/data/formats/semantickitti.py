"""SemanticKITTI reader for the official raw layout.

Layout read::

    <root>/semantic-kitti.yaml                        optional; its learning_map replaces the built-in one
    <root>/sequences/<seq>/velodyne/<frame>.bin       float32 x, y, z, remission per point
    <root>/sequences/<seq>/labels/<frame>.label       uint32 per point: semantic | instance << 16
    <root>/sequences/<seq>/calib.txt                  P0..P3 and Tr (velodyne -> camera 0)
    <root>/sequences/<seq>/image_2/<frame>.png        left colour camera image

Raw semantic ids are mapped through ``learning_map`` to 1..19 and shifted to train ids 0..18;
learning id 0 (unlabeled, outlier, ...) is ignored. Raw ids missing from the map are ignored,
counted and warned about. ``instance`` is the full raw 32-bit label where the instance part is
non-zero (unique within a scan, as in the panoptic benchmark), else -1. Test sequences (11..21)
have no labels: ``segment`` = ignore and ``instance`` = -1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ._common import IGNORE_INDEX, LoadReport, SceneReader, check_count, remap_labels, require_file

__all__ = [
    "SemanticKITTIReader",
    "SEMANTICKITTI_CLASS_NAMES",
    "SEMANTICKITTI_LABELS",
    "SEMANTICKITTI_LEARNING_MAP",
    "SEMANTICKITTI_LEARNING_MAP_INV",
    "SEMANTICKITTI_SPLITS",
    "parse_calib",
]

SEMANTICKITTI_LABELS = {
    0: "unlabeled", 1: "outlier", 10: "car", 11: "bicycle", 13: "bus", 15: "motorcycle",
    16: "on-rails", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist",
    32: "motorcyclist", 40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground",
    50: "building", 51: "fence", 52: "other-structure", 60: "lane-marking", 70: "vegetation",
    71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign", 99: "other-object",
    252: "moving-car", 253: "moving-bicyclist", 254: "moving-person", 255: "moving-motorcyclist",
    256: "moving-on-rails", 257: "moving-bus", 258: "moving-truck", 259: "moving-other-vehicle",
}
"""Raw SemanticKITTI class ids and names (``labels`` of ``semantic-kitti.yaml``)."""

SEMANTICKITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9,
    44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19,
    99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
"""Raw id -> learning id (0 = ignored, 1..19 = classes), as in ``semantic-kitti.yaml``."""

SEMANTICKITTI_LEARNING_MAP_INV = {
    0: 0, 1: 10, 2: 11, 3: 15, 4: 18, 5: 20, 6: 30, 7: 31, 8: 32, 9: 40, 10: 44, 11: 48, 12: 49,
    13: 50, 14: 51, 15: 70, 16: 71, 17: 72, 18: 80, 19: 81,
}
"""Learning id -> representative raw id."""

SEMANTICKITTI_CLASS_NAMES = tuple(
    SEMANTICKITTI_LABELS[SEMANTICKITTI_LEARNING_MAP_INV[i]] for i in range(1, 20)
)
"""The 19 classes in train-id order 0..18 (car ... traffic-sign)."""

SEMANTICKITTI_SPLITS = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{s:02d}" for s in range(11, 22)),
}

_CALIB_KEYS = {  # accepted spellings -> canonical key
    "P2": "P2", "Tr": "Tr", "Tr_velo_to_cam": "Tr", "Tr_velo_cam": "Tr", "R0_rect": "R0", "R_rect": "R0",
}
_CALIB_SIZES = {"P2": 12, "Tr": 12, "R0": 9}


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) or (3, 4) matrix -> (4, 4) float64 with last row (0, 0, 0, 1)."""
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def parse_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a KITTI calibration file.

    Accepts the SemanticKITTI/odometry form (``P0:`` .. ``P3:``, ``Tr:`` with 12 floats) and the
    raw KITTI object/tracking form (``P2:``, ``R0_rect:``/``R_rect`` 9 floats,
    ``Tr_velo_to_cam:``/``Tr_velo_cam`` 12 floats). Other keys are ignored.

    Returns:
        ``{"P2": (3, 4), "Tr": (4, 4)}`` float64. ``Tr`` maps velodyne to rectified camera
        coordinates: ``R0_rect @ Tr_velo_to_cam`` when ``R0_rect`` is present.
    """
    path = require_file(Path(path), "KITTI calibration")
    found: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        key, _, values = line.replace(":", " ", 1).partition(" ")
        canonical = _CALIB_KEYS.get(key.strip())
        if canonical is None:
            continue
        try:
            numbers = np.array(values.split(), dtype=np.float64)
        except ValueError:
            raise ValueError(f"{path}:{lineno}: '{key}' expected numbers, got {values.strip()!r}") from None
        if numbers.size != _CALIB_SIZES[canonical]:
            raise ValueError(
                f"{path}:{lineno}: '{key}' expected {_CALIB_SIZES[canonical]} floats, got {numbers.size}"
            )
        found[canonical] = numbers
    for needed in ("P2", "Tr"):
        if needed not in found:
            raise ValueError(f"{path}: calibration '{needed}' missing; got keys {sorted(found)}")
    tr = _homogeneous(found["Tr"].reshape(3, 4))
    if "R0" in found:
        tr = _homogeneous(found["R0"].reshape(3, 3)) @ tr
    return {"P2": found["P2"].reshape(3, 4), "Tr": tr}


def _read_learning_map(root: Path) -> dict[int, int]:
    """``learning_map`` of ``<root>/semantic-kitti.yaml`` if present, else the built-in one."""
    path = root / "semantic-kitti.yaml"
    if not path.is_file():
        return SEMANTICKITTI_LEARNING_MAP
    content = yaml.safe_load(path.read_text())
    if not isinstance(content, dict) or not isinstance(content.get("learning_map"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'learning_map' mapping")
    return {int(k): int(v) for k, v in content["learning_map"].items()}


class SemanticKITTIReader(SceneReader):
    """SemanticKITTI scans of one split.

    Args:
        root: folder holding ``sequences/`` (and optionally ``semantic-kitti.yaml``).
        split: ``"train"`` (00-07, 09, 10), ``"val"`` (08) or ``"test"`` (11-21).
        sequences: override the split's sequences (e.g. ``("00",)``).

    Sequences of the split that are not on disk are skipped; none at all raises
    FileNotFoundError. Scene names are ``<seq>/<frame>``, e.g. ``08/000123``.
    """

    CLASS_NAMES = SEMANTICKITTI_CLASS_NAMES
    NUM_CLASSES = len(SEMANTICKITTI_CLASS_NAMES)

    def __init__(self, root: str | Path, split: str, sequences: tuple[str, ...] | None = None) -> None:
        super().__init__(root, split)
        self.sequences = tuple(sequences) if sequences is not None else SEMANTICKITTI_SPLITS[split]
        present = [s for s in self.sequences if (self.root / "sequences" / s / "velodyne").is_dir()]
        if not present:
            raise FileNotFoundError(
                f"{self.root / 'sequences'}: expected <seq>/velodyne/ for sequences "
                f"{', '.join(self.sequences)} of split '{split}', found none"
            )
        self.scenes = [
            f"{seq}/{path.stem}"
            for seq in present
            for path in sorted((self.root / "sequences" / seq / "velodyne").glob("*.bin"))
        ]
        learning_map = _read_learning_map(self.root)
        self._to_train = {raw: (lid - 1 if lid > 0 else IGNORE_INDEX) for raw, lid in learning_map.items()}
        self._calib: dict[str, dict[str, np.ndarray]] = {}

    def _path(self, name: str, folder: str, suffix: str) -> Path:
        seq, frame = self._split_name(name)
        return self.root / "sequences" / seq / folder / f"{frame}{suffix}"

    @staticmethod
    def _split_name(name: str) -> tuple[str, str]:
        seq, sep, frame = name.partition("/")
        if not sep or not seq or not frame:
            raise ValueError(f"SemanticKITTI scene name '{name}': expected '<seq>/<frame>', e.g. '08/000123'")
        return seq, frame

    def _source(self, name: str) -> str:
        return str(self._path(name, "velodyne", ".bin"))

    def _read(self, name: str, report: LoadReport) -> dict:
        bin_path = require_file(self._path(name, "velodyne", ".bin"), "velodyne scan")
        size = bin_path.stat().st_size
        if size % 16:
            raise ValueError(
                f"{bin_path}: size {size} bytes is not a multiple of 16 (4 float32 x, y, z, "
                "remission per point); the file is truncated or not a velodyne scan"
            )
        scan = np.fromfile(bin_path, dtype="<f4").reshape(-1, 4)
        scene = {"coord": scan[:, :3], "strength": scan[:, 3:4]}
        if self._split_name(name)[0] in SEMANTICKITTI_SPLITS["test"]:
            scene["segment"] = np.full(len(scan), IGNORE_INDEX, dtype=np.int64)
            scene["instance"] = np.full(len(scan), -1, dtype=np.int64)
            return scene
        label_path = require_file(self._path(name, "labels", ".label"), "SemanticKITTI labels")
        if label_path.stat().st_size % 4:
            raise ValueError(f"{label_path}: size {label_path.stat().st_size} bytes is not a multiple of 4 (uint32)")
        raw = np.fromfile(label_path, dtype="<u4")
        check_count(label_path, "label", len(scan), len(raw))
        scene["segment"], report.unknown_labels = remap_labels(raw & 0xFFFF, self._to_train, str(label_path), "label")
        scene["instance"] = np.where(raw >> 16 > 0, raw.astype(np.int64), -1)
        return scene

    def load_image(self, name: str) -> np.ndarray:
        """The left colour image ``image_2/<frame>.png`` of scan ``name``: (H, W, 3) uint8."""
        path = require_file(self._path(name, "image_2", ".png"), "camera image")
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def load_calib(self, name: str) -> dict[str, np.ndarray]:
        """``{"P2": (3, 4), "Tr": (4, 4)}`` float64 of scan ``name``'s sequence (see :func:`parse_calib`).

        A point ``x`` (velodyne frame) projects to pixel ``P2 @ Tr @ [x, 1]`` (homogeneous).
        """
        seq = self._split_name(name)[0]
        if seq not in self._calib:
            self._calib[seq] = parse_calib(self.root / "sequences" / seq / "calib.txt")
        return {k: v.copy() for k, v in self._calib[seq].items()}
