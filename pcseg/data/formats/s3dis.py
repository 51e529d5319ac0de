"""S3DIS reader for the official raw layout (``Stanford3dDataset_v1.2_Aligned_Version``).

Layout read::

    <root>/Area_<k>/<room>/Annotations/<class>_<i>.txt    "x y z r g b" per line, one object each

A room's points are its annotation files concatenated in natural order (``chair_2`` before
``chair_10``); the file's position in that order is the point's instance id. The class is the file
name before the last ``_``. ``stairs`` (not one of the 13 classes) is mapped to ``clutter``, as is
common practice; any other unknown name is mapped to ignore, counted and warned about.

Corrupt lines (wrong number of values, unparsable bytes) are skipped one by one with a warning
``Area_5/office_19/Annotations/x.txt:1812: expected 6 floats, got 5; line skipped``; the count is in
``reader.reports[name].skipped_lines``. Files are parsed whole with ``np.loadtxt`` and only fall back
to line-by-line parsing when that fails.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ._common import IGNORE_INDEX, LoadReport, SceneReader, require_dir

__all__ = ["S3DISReader", "S3DIS_CLASS_NAMES", "read_s3dis_txt"]

S3DIS_CLASS_NAMES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
    "bookcase", "board", "clutter",
)
_CLASS_ALIASES = {"stairs": "clutter"}
_COLUMNS = 6


def _natural_key(path: Path) -> list:
    """Sort key that orders ``chair_2`` before ``chair_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _parse_lines(path: Path, label: str) -> tuple[np.ndarray, int]:
    """Slow path: parse line by line, skipping (and warning about) each bad line."""
    rows, skipped = [], 0
    with open(path, encoding="latin-1") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            problem = None
            if len(parts) != _COLUMNS:
                problem = f"expected {_COLUMNS} floats, got {len(parts)}"
            else:
                try:
                    rows.append([float(p) for p in parts])
                except ValueError:
                    problem = f"expected {_COLUMNS} floats, got unparsable {line.strip()!r}"
            if problem:
                skipped += 1
                warnings.warn(f"{label}:{lineno}: {problem}; line skipped", stacklevel=4)
    return np.asarray(rows, dtype=np.float32).reshape(-1, _COLUMNS), skipped


def read_s3dis_txt(path: str | Path, label: str | None = None) -> tuple[np.ndarray, int]:
    """Read one S3DIS text file of "x y z r g b" lines.

    Args:
        path: the file.
        label: how warnings name the file (default: ``path``).

    Returns:
        ``(rows, skipped)``: (N, 6) float32 array and the number of corrupt lines skipped.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return np.zeros((0, _COLUMNS), dtype=np.float32), 0
    try:
        rows = np.loadtxt(path, dtype=np.float32, ndmin=2, encoding="latin-1")
        if rows.shape[1] == _COLUMNS or rows.size == 0:
            return rows.reshape(-1, _COLUMNS), 0
    except ValueError:
        pass
    return _parse_lines(path, label or str(path))


def _class_of(path: Path) -> str:
    """Class name of an annotation file: ``chair_12.txt`` -> ``chair``."""
    name = path.stem.rsplit("_", 1)[0]
    return _CLASS_ALIASES.get(name, name)


class S3DISReader(SceneReader):
    """S3DIS rooms of one split; Area ``test_area`` is held out.

    Args:
        root: folder holding the ``Area_<k>`` folders.
        split: ``"train"`` (every area but ``test_area``), ``"val"`` or ``"test"`` (``test_area``).
        test_area: the held-out area, 5 by convention.

    Scene names are ``Area_<k>/<room>``.
    """

    CLASS_NAMES = S3DIS_CLASS_NAMES
    NUM_CLASSES = len(S3DIS_CLASS_NAMES)
    _CLASS_IDS = {name: i for i, name in enumerate(S3DIS_CLASS_NAMES)}

    def __init__(self, root: str | Path, split: str, test_area: int = 5) -> None:
        super().__init__(root, split)
        self.test_area = test_area
        held_out = f"Area_{test_area}"
        areas = sorted(p for p in self.root.glob("Area_*") if p.is_dir())
        if not areas:
            raise FileNotFoundError(f"{self.root}: expected Area_<k> folders here, found none")
        chosen = [a for a in areas if (a.name == held_out) == (split != "train")]
        self.scenes = [
            f"{area.name}/{room.name}"
            for area in chosen
            for room in sorted(area.iterdir(), key=_natural_key)
            if (room / "Annotations").is_dir()
        ]

    def _read(self, name: str, report: LoadReport) -> dict:
        folder = require_dir(self.root / name / "Annotations", f"S3DIS annotations of room '{name}'")
        files = sorted(folder.glob("*.txt"), key=_natural_key)
        parts, segments, instances = [], [], []
        for instance_id, path in enumerate(files):
            rows, skipped = read_s3dis_txt(path, f"{name}/Annotations/{path.name}")
            report.skipped_lines += skipped
            class_id = self._CLASS_IDS.get(_class_of(path), IGNORE_INDEX)
            if class_id == IGNORE_INDEX and len(rows):
                report.unknown_labels += len(rows)
                warnings.warn(
                    f"{name}/Annotations/{path.name}: class '{_class_of(path)}' unknown, its "
                    f"{len(rows)} points mapped to ignore; known: {', '.join(S3DIS_CLASS_NAMES)}",
                    stacklevel=3,
                )
            parts.append(rows)
            segments.append(np.full(len(rows), class_id, dtype=np.int64))
            instances.append(np.full(len(rows), instance_id, dtype=np.int64))
        if not files:
            raise ValueError(f"{folder}: no <class>_<i>.txt annotation files; room '{name}' is empty")
        points = np.concatenate(parts)
        return {
            "coord": points[:, :3],
            "color": points[:, 3:],
            "segment": np.concatenate(segments),
            "instance": np.concatenate(instances),
        }
