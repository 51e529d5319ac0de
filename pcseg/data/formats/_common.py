"""Pieces shared by the raw-format readers.

Every reader returns the *raw scene* dict of ``docs/contracts.md``; :class:`SceneReader` holds the
steps all formats share (split check, scene list, non-finite filtering, empty-scene check, dtypes,
load report), so a format module only parses its own files.
"""
from __future__ import annotations

import codecs
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from pcseg.utils.errors import BadArgumentError, InputError

IGNORE_INDEX = -100
"""Label of points that are not trained on or evaluated."""

POINT_KEYS = ("coord", "color", "strength", "segment", "instance")
"""Keys of the raw scene dict that hold one row per point."""

_DTYPES = {
    "coord": np.float32,
    "color": np.float32,
    "strength": np.float32,
    "segment": np.int64,
    "instance": np.int64,
}


@dataclass
class LoadReport:
    """What a reader skipped, dropped or remapped while loading one scene.

    Attributes:
        skipped_lines: text lines that could not be parsed (S3DIS).
        nonfinite_points: points dropped because a coordinate, colour, remission or other float
            value was NaN or inf (:func:`drop_nonfinite`).
        unknown_labels: points whose raw class id/name is unknown to the format, mapped to ignore.
        empty_files: per-object files that hold no points, so their object is lost (S3DIS).
    """

    skipped_lines: int = 0
    nonfinite_points: int = 0
    unknown_labels: int = 0
    empty_files: int = 0


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming ``what`` was expected."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the {what} here, but there is no such file")
    return path


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise FileNotFoundError naming ``what``."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: expected the {what} here, but there is no such directory")
    return path


def check_count(path: Path | str, field: str, expected: int, got: int) -> None:
    """Raise ValueError unless a per-point field of ``path`` has ``expected`` entries."""
    if expected != got:
        raise ValueError(
            f"{path}: field '{field}' has {got} entries, expected {expected} (one per point)"
        )


def check_nonempty(source: str, name: str, num_points: int) -> None:
    """Raise ValueError naming ``source`` if scene ``name`` has no points."""
    if num_points == 0:
        raise ValueError(f"{source}: scene '{name}' has no points")


def read_text_without_bom(path: Path, encoding: str = "utf-8") -> str:
    """The text of ``path`` decoded with ``encoding``, a leading UTF-8 byte-order mark removed.

    Editors on Windows start UTF-8 files with ``EF BB BF``; kept, it would glue an invisible
    ``\ufeff`` to the first line. InputError naming the file if it is not ``encoding`` text.
    """
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: expected {encoding} text, got byte {data[exc.start]:#04x} at offset "
                         f"{exc.start}") from None


def read_split_file(path: Path) -> list[str]:
    """Read a split file: one scene id per line, blank lines ignored, a UTF-8 BOM stripped."""
    require_file(path, "split file")
    return [line.strip() for line in read_text_without_bom(path).splitlines() if line.strip()]


def remap_labels(
    raw: np.ndarray, mapping: Mapping[int, int], source: str, field: str
) -> tuple[np.ndarray, int]:
    """Map raw class ids to train ids through ``mapping``.

    Args:
        raw: (N,) integer raw ids.
        mapping: raw id -> train id (``IGNORE_INDEX`` for known ids that are not trained on).
        source, field: file and field named in the warning.

    Returns:
        ``(segment, n_unknown)``: (N,) int64 train ids; ids missing from ``mapping`` become
        ``IGNORE_INDEX``, are counted, and a warning names how many and which.
    """
    lut = np.full(max(mapping) + 1, -1, dtype=np.int64)  # -1 marks "unknown id"
    lut[list(mapping.keys())] = list(mapping.values())
    raw = np.asarray(raw, dtype=np.int64)
    in_range = (raw >= 0) & (raw < lut.size)
    segment = np.where(in_range, lut[np.clip(raw, 0, lut.size - 1)], -1)
    unknown = segment == -1
    n_unknown = int(unknown.sum())
    if n_unknown:
        ids = np.unique(raw[unknown])
        warnings.warn(
            f"{source}: field '{field}': {n_unknown} points have unknown class ids "
            f"{ids[:10].tolist()}{' ...' if ids.size > 10 else ''}; mapped to ignore ({IGNORE_INDEX})",
            stacklevel=3,
        )
        segment[unknown] = IGNORE_INDEX
    return segment, n_unknown


_NONFINITE_FIELD_NAMES = {"coord": "coordinates", "color": "colours", "strength": "remission"}
"""How the warning of :func:`drop_nonfinite` names a field; others are named by their key."""


def drop_nonfinite(scene: dict, source: str) -> int:
    """Drop, in place, every point where a floating per-point array is NaN or infinite.

    Checked are the float arrays among ``POINT_KEYS`` (coordinates ``coord`` (N, 3), colours
    ``color`` (N, 3), remission ``strength`` (N, 1), and labels a reader left as floats), each in
    the dtype the reader returns it in (``_DTYPES``): a float64 value beyond float32's range would
    become inf and counts as non-finite. A dropped point loses its row in every per-point array
    (labels and instance ids too), so the arrays stay aligned; indices into the points, such as
    budgets, refer to the points after dropping.

    Returns the number of dropped points; when it is non-zero, warns with ``source``, how many
    points each field made bad and the (raw) index of the first one.
    """
    n = len(scene["coord"])
    keep = np.ones(n, dtype=bool)
    parts = []
    for key in POINT_KEYS:
        values = scene.get(key)
        if values is None or not np.issubdtype(np.asarray(values).dtype, np.floating):
            continue
        values = np.asarray(values)
        if np.issubdtype(_DTYPES[key], np.floating):
            with np.errstate(over="ignore"):
                values = values.astype(_DTYPES[key], copy=False)
        finite = np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
        n_field = int(n - finite.sum())
        if n_field:
            name = _NONFINITE_FIELD_NAMES.get(key, f"'{key}' values")
            parts.append(f"{name} ({n_field} point{'s' if n_field > 1 else ''})")
            keep &= finite
    n_bad = int(n - keep.sum())
    if n_bad:
        warnings.warn(
            f"{source}: dropped {n_bad} of {n} points with non-finite {', '.join(parts)}; "
            f"first at point {int(np.argmin(keep))}",
            stacklevel=3,
        )
        for key in POINT_KEYS:
            if key in scene:
                scene[key] = scene[key][keep]
    return n_bad


class SceneReader:
    """Base of the format readers: a split's scene list and a checked :meth:`load`.

    Subclasses set ``CLASS_NAMES``, fill ``self.scenes`` in ``__init__`` and implement
    :meth:`_read`. After each :meth:`load`, ``self.reports[name]`` holds its :class:`LoadReport`.
    """

    CLASS_NAMES: tuple[str, ...] = ()
    NUM_CLASSES: int = 0
    SPLITS: tuple[str, ...] = ("train", "val", "test")

    def __init__(self, root: str | Path, split: str) -> None:
        if split not in self.SPLITS:
            raise BadArgumentError(
                "split", f"{type(self).__name__}: split '{split}' unknown; known: {', '.join(self.SPLITS)}")
        self.root = Path(root)
        require_dir(self.root, f"{type(self).__name__} dataset root")
        self.split = split
        self.scenes: list[str] = []
        self.reports: dict[str, LoadReport] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root='{self.root}', split='{self.split}', scenes={len(self)})"

    def check_sources(self, listed_in: str | Path, shown: int = 5) -> None:
        """Raise InputError if the source (:meth:`_source`) of a scene in ``self.scenes`` is missing.

        For readers whose scene list comes from a file ``listed_in`` (a split file) rather than
        from what is on disk: call it once ``self.scenes`` is set, so a listed scene that is not on
        disk is found when the dataset is built, not mid-epoch. The message names the split file,
        how many scenes are missing, the first ``shown`` of them and where the first was expected.
        """
        missing = [name for name in self.scenes if not Path(self._source(name)).exists()]
        if missing:
            more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
            raise InputError(
                f"{listed_in}: {len(missing)} of the {len(self.scenes)} scenes listed are not on disk: "
                f"{', '.join(missing[:shown])}{more} (expected e.g. {self._source(missing[0])})"
            )

    def load(self, name: str) -> dict:
        """Load scene ``name`` as the raw scene dict of ``docs/contracts.md``.

        Points with non-finite coordinates, colours or remission are dropped with a warning
        (:func:`drop_nonfinite`); an empty scene raises ValueError. What was dropped or remapped is
        in ``self.reports[name]``.
        """
        report = LoadReport()
        scene = self._read(name, report)
        check_nonempty(self._source(name), name, len(scene["coord"]))
        report.nonfinite_points = drop_nonfinite(scene, self._source(name))
        check_nonempty(self._source(name), name, len(scene["coord"]))
        for key, dtype in _DTYPES.items():
            if key in scene:
                scene[key] = np.ascontiguousarray(scene[key], dtype=dtype)
        scene["name"] = name
        self.reports[name] = report
        return scene

    def _read(self, name: str, report: LoadReport) -> dict:
        """Parse scene ``name`` into per-point arrays (any numeric dtypes); fill ``report``."""
        raise NotImplementedError

    def _source(self, name: str) -> str:
        """The file or folder that warnings and errors about scene ``name`` should name."""
        return str(self.root / name)
