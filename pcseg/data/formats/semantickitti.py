"""SemanticKITTI reader for the official raw layout (and label-free KITTI scans in the same layout).

Layout read::

    <root>/semantic-kitti.yaml                        optional; its learning_map replaces the built-in one
    <root>/sequences/<seq>/velodyne/<frame>.bin       float32 x, y, z, remission per point
    <root>/sequences/<seq>/labels/<frame>.label       uint32 per point: semantic | instance << 16
    <root>/sequences/<seq>/calib.txt                  P0..P3 and Tr (velodyne -> camera 0), or the
                                                      KITTI tracking form (P0..P3, R_rect, Tr_velo_cam)
    <root>/sequences/<seq>/image_2/<frame>.png        left colour camera image (image_3: the right one)

Raw semantic ids are mapped through ``learning_map`` to 1..19 and shifted to train ids 0..18;
learning id 0 (unlabeled, outlier, ...) is ignored. Raw ids missing from the map are ignored,
counted and warned about. ``instance`` is the full raw 32-bit label where the instance part is
non-zero (unique within a scan, as in the panoptic benchmark), else -1. Test sequences (11..21)
have no labels, and with ``labels=False`` no sequence is expected to have any (pre-training on
KITTI odometry, raw or tracking scans): ``segment`` = ignore and ``instance`` = -1.
"""
from __future__ import annotations

from pathlib import Path

import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from pcseg.utils.errors import InputError
from pcseg.utils.yaml_io import load_yaml_file

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
    "P0": "P0", "P1": "P1", "P2": "P2", "P3": "P3",
    "Tr": "Tr", "Tr_velo_to_cam": "Tr", "Tr_velo_cam": "Tr", "R0_rect": "R0", "R_rect": "R0",
}
_CALIB_SIZES = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "Tr": 12, "R0": 9}
CAMERAS = (0, 1, 2, 3)
"""KITTI cameras: 0, 1 grey (``image_0/``, ``image_1/``), 2, 3 colour (``image_2/`` left, ``image_3/`` right)."""


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) or (3, 4) matrix -> (4, 4) float64 with last row (0, 0, 0, 1)."""
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def parse_calib(path: str | Path, required: Sequence[str] = ("P2",)) -> dict[str, np.ndarray]:
    """Parse a KITTI calibration file.

    Accepts the SemanticKITTI/odometry form (``P0:`` .. ``P3:``, ``Tr:`` with 12 floats), the KITTI
    object form (``P0:`` .. ``P3:``, ``R0_rect:`` 9 floats, ``Tr_velo_to_cam:`` 12 floats) and the
    KITTI tracking form (``P0:`` .. ``P3:``, ``R_rect`` 9 floats, ``Tr_velo_cam`` 12 floats, no colon
    after those two). Other keys (``Tr_imu_velo``, ...) are ignored.

    Args:
        path: the calibration file.
        required: projection matrices (``"P0"`` .. ``"P3"``) the file must hold; ``Tr`` always is.

    Returns:
        ``{"P<k>": (3, 4) for each camera k in the file, "Tr": (4, 4)}`` float64. ``Tr`` maps
        velodyne to rectified camera-0 coordinates (``R_rect @ Tr_velo_cam`` when a rectification
        is given), so a velodyne point ``x`` lands on pixel ``P<k> @ Tr @ [x, 1]`` of camera k.

    Raises:
        InputError naming the file, line and matrix: non-numbers, a wrong count, NaN/inf, a
        matrix given twice, or a required one missing.
    """
    path = require_file(Path(path), "KITTI calibration")
    found: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").lstrip("\ufeff").splitlines(), start=1):
        key, _, values = line.replace(":", " ", 1).partition(" ")
        key = key.strip()
        canonical = _CALIB_KEYS.get(key)
        if canonical is None:
            continue
        where = f"{path}:{lineno}: {key}"
        if canonical in lines:
            raise InputError(f"{where}: expected once, already given at line {lines[canonical]}")
        try:
            numbers = np.array(values.split(), dtype=np.float64)
        except ValueError:
            raise InputError(f"{where}: expected numbers, got {values.strip()!r}") from None
        if numbers.size != _CALIB_SIZES[canonical]:
            raise InputError(f"{where}: expected {_CALIB_SIZES[canonical]} floats, got {numbers.size}")
        if not np.isfinite(numbers).all():
            bad = np.flatnonzero(~np.isfinite(numbers))
            raise InputError(f"{where}: expected finite numbers, got {numbers[bad].tolist()} at positions "
                             f"{bad.tolist()} (row-major)")
        found[canonical], lines[canonical] = numbers, lineno
    for needed in (*required, "Tr"):
        if needed not in found:
            spellings = ", ".join(k for k, c in _CALIB_KEYS.items() if c == needed)
            raise InputError(f"{path}: {needed}: expected this matrix (a line {spellings}), found only "
                             f"{', '.join(sorted(found)) or 'none'}")
    tr = _homogeneous(found["Tr"].reshape(3, 4))
    if "R0" in found:
        tr = _homogeneous(found["R0"].reshape(3, 3)) @ tr
    calib = {key: found[key].reshape(3, 4) for key in ("P0", "P1", "P2", "P3") if key in found}
    calib["Tr"] = tr
    return calib


def _read_learning_map(root: Path, num_classes: int) -> dict[int, int]:
    """``learning_map`` of ``<root>/semantic-kitti.yaml`` if present, else the built-in one.

    Raises InputError naming the file and key for duplicate keys, non-integer ids or a learning id
    outside ``0..num_classes`` (0 = ignored; learning id ``l`` is train id ``l - 1``).
    """
    path = root / "semantic-kitti.yaml"
    if not path.is_file():
        return SEMANTICKITTI_LEARNING_MAP
    content = load_yaml_file(path)
    found = content.get("learning_map") if isinstance(content, dict) else content
    if not isinstance(found, dict):
        raise InputError(f"{path}: learning_map: expected a mapping raw id -> learning id, got {found!r:.80}")
    learning_map = {}
    for key, value in content["learning_map"].items():
        if type(key) is not int or key < 0 or type(value) is not int:
            raise InputError(f"{path}: learning_map: {key!r}: expected a raw id >= 0 mapped to an integer "
                             f"learning id, got {key!r}: {value!r}")
        if not 0 <= value <= num_classes:
            raise InputError(f"{path}: learning_map: {key}: expected a learning id in 0..{num_classes} (0 = "
                             f"ignored, l = train id l-1 of the {num_classes} classes), got {value}")
        learning_map[key] = value
    return learning_map


def _sequence_name(value: object, where: str) -> str:
    """A sequence folder name: ints (as YAML reads ``00``, ``7``) zero-padded to 2 digits, strings as given."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return f"{value:02d}"
    if isinstance(value, str) and value and "/" not in value:
        return value
    raise InputError(f"{where}: expected sequence names such as 00 or '08', got {value!r}")


class SemanticKITTIReader(SceneReader):
    """SemanticKITTI (or unlabelled KITTI) scans of one split.

    Args:
        root: folder holding ``sequences/`` (and optionally ``semantic-kitti.yaml``).
        split: ``"train"`` (00-07, 09, 10), ``"val"`` (08) or ``"test"`` (11-21).
        sequences: the sequences to read instead of the split's official ones, e.g. ``("00",)``
            or ``[0]`` (ints are zero-padded: YAML reads ``[00]`` as ``[0]``); any folder name under
            ``sequences/`` works. Each must be on disk, else InputError listing those that are.
        labels: read ``labels/<frame>.label`` of sequences 00-10 (and of any other named sequence
            outside 11-21). False reads no labels anywhere (label-free pre-training):
            ``segment`` = ignore, ``instance`` = -1.
        camera: KITTI camera whose ``image_<camera>/`` :meth:`load_image` reads and whose
            ``P<camera>`` :meth:`load_calib` returns (2: left colour, 3: right colour).

    Without ``sequences``, official sequences of the split that are not on disk are skipped with a
    warning naming them; none at all is an InputError. Scene names are ``<seq>/<frame>``, e.g.
    ``08/000123``.
    """

    CLASS_NAMES = SEMANTICKITTI_CLASS_NAMES
    NUM_CLASSES = len(SEMANTICKITTI_CLASS_NAMES)

    def __init__(self, root: str | Path, split: str, sequences: Sequence[str | int] | None = None,
                 labels: bool = True, camera: int = 2) -> None:
        super().__init__(root, split)
        if camera not in CAMERAS:
            raise InputError(f"SemanticKITTIReader: camera: expected one of {CAMERAS}, got {camera!r}")
        self.labels = bool(labels)
        self.camera = camera
        folder = self.root / "sequences"
        on_disk = sorted(p.parent.name for p in folder.glob("*/velodyne") if p.is_dir())
        listing = f"on disk: {', '.join(on_disk) or 'none'}"
        if sequences is None:
            self.sequences = tuple(s for s in SEMANTICKITTI_SPLITS[split] if s in on_disk)
            absent = [s for s in SEMANTICKITTI_SPLITS[split] if s not in on_disk]
            if not self.sequences:
                raise InputError(f"{folder}: split '{split}': expected <seq>/velodyne/ for its sequences "
                                 f"{', '.join(absent)}, found none of them ({listing}); name the sequences to "
                                 f"read (config: data.{split}.kwargs.sequences=[...])")
            if absent:
                warnings.warn(f"{folder}: split '{split}': {len(absent)} of its {len(absent) + len(self.sequences)} "
                              f"sequences are not on disk ({', '.join(absent)}); reading {', '.join(self.sequences)}",
                              stacklevel=2)
        else:
            if isinstance(sequences, (str, int)):
                raise InputError(f"{folder}: sequences: expected a list such as [00, 01], got {sequences!r}")
            self.sequences = tuple(_sequence_name(s, f"{folder}: sequences") for s in sequences)
            repeated = sorted({s for s in self.sequences if self.sequences.count(s) > 1})
            if not self.sequences or repeated:
                raise InputError(f"{folder}: sequences: expected distinct sequence names, got "
                                 f"{list(self.sequences)}")
            missing = [s for s in self.sequences if s not in on_disk]
            if missing:
                raise InputError(f"{folder}: sequences: expected <seq>/velodyne/ for {', '.join(missing)} "
                                 f"(split '{split}'), not found; {listing}")
        self.scenes = []
        for seq in self.sequences:
            scans = sorted((folder / seq / "velodyne").glob("*.bin"))
            if not scans:
                raise InputError(f"{folder / seq / 'velodyne'}: expected <frame>.bin scans, found none")
            self.scenes += [f"{seq}/{path.stem}" for path in scans]
        learning_map = _read_learning_map(self.root, self.NUM_CLASSES)
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
            raise InputError(
                f"{bin_path}: size {size} bytes is not a multiple of 16 (4 float32 x, y, z, "
                "remission per point); the file is truncated or not a velodyne scan"
            )
        scan = np.fromfile(bin_path, dtype="<f4").reshape(-1, 4)
        scene = {"coord": scan[:, :3], "strength": scan[:, 3:4]}
        if not self.labels or self._split_name(name)[0] in SEMANTICKITTI_SPLITS["test"]:
            scene["segment"] = np.full(len(scan), IGNORE_INDEX, dtype=np.int64)
            scene["instance"] = np.full(len(scan), -1, dtype=np.int64)
            return scene
        label_path = self._path(name, "labels", ".label")
        if not label_path.is_file():
            raise InputError(f"{label_path}: expected the SemanticKITTI labels of {bin_path.name} here, no such "
                             f"file; scans without labels (pre-training) are read with labels: false")
        if label_path.stat().st_size % 4:
            raise InputError(f"{label_path}: size {label_path.stat().st_size} bytes is not a multiple of 4 (uint32)")
        raw = np.fromfile(label_path, dtype="<u4")
        check_count(label_path, "label", len(scan), len(raw))
        scene["segment"], report.unknown_labels = remap_labels(raw & 0xFFFF, self._to_train, str(label_path), "label")
        scene["instance"] = np.where(raw >> 16 > 0, raw.astype(np.int64), -1)
        return scene

    def load_image(self, name: str) -> np.ndarray:
        """The image ``image_<camera>/<frame>.png`` of scan ``name``: (H, W, 3) uint8 RGB."""
        path = require_file(self._path(name, f"image_{self.camera}", ".png"), f"camera {self.camera} image")
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def load_calib(self, name: str) -> dict[str, np.ndarray]:
        """``{"P": (3, 4), "Tr": (4, 4)}`` float64 of scan ``name``'s sequence (see :func:`parse_calib`):
        ``P`` is ``P<camera>``, the projection of the image :meth:`load_image` reads.

        A point ``x`` (velodyne frame) projects to pixel ``P @ Tr @ [x, 1]`` (homogeneous).
        """
        seq = self._split_name(name)[0]
        key = f"P{self.camera}"
        if seq not in self._calib:
            self._calib[seq] = parse_calib(self.root / "sequences" / seq / "calib.txt", required=(key,))
        return {"P": self._calib[seq][key].copy(), "Tr": self._calib[seq]["Tr"].copy()}
