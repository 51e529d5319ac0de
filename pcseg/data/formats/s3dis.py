"""S3DIS reader for the official raw layout (``Stanford3dDataset_v1.2_Aligned_Version``).

Layout read::

    <root>/Area_<k>/<room>/Annotations/<class>_<i>.txt    "x y z r g b" per line, one object each

A room's points are its annotation files concatenated in natural order (``chair_2`` before
``chair_10``); the file's position in that order is the point's instance id. The class is the file
name before the last ``_``. ``stairs`` (not one of the 13 classes) is mapped to ``clutter``, as is
common practice; any other unknown name is mapped to ignore, counted and warned about.

Nothing is dropped silently; each of these is a warning and a count:

- a corrupt line (wrong number of values, unparsable bytes, a ``#`` comment) is skipped on its own:
  ``Area_5/office_19/Annotations/x.txt:1812: expected 6 floats, got 5; line skipped``, counted in
  ``reader.reports[name].skipped_lines``. Files are parsed whole with ``np.loadtxt`` and only fall
  back to line-by-line parsing when that fails;
- an annotation file without points loses its object: ``reports[name].empty_files``;
- a room folder without ``Annotations/`` is not a scene: the reader warns when it is built and
  lists those rooms in ``reader.skipped_rooms``.

A UTF-8 byte-order mark at the start of a file is stripped. Files are decoded as latin-1, so a
garbled byte costs only its line.

Parsed rooms are cached (DESIGN §3): ``<cache_dir>/Area_<k>/<room>.npz`` holds the parsed arrays and
the counts above, keyed by the size, modification time and SHA-256 of every annotation file (and
a format version). A later load with an equal key reads the cache instead of the text, and warns
nothing again (the counts are restored into its report); any change to a source file, an added or
removed file, or an unreadable cache file makes the room be parsed and the cache rewritten
(atomically, so concurrent data-loader workers never see a torn file). See :func:`default_cache_dir`
for where the cache goes by default.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

from ._common import IGNORE_INDEX, LoadReport, SceneReader, read_text_without_bom, require_dir

__all__ = ["S3DISReader", "S3DIS_CLASS_NAMES", "read_s3dis_txt", "default_cache_dir"]

S3DIS_CLASS_NAMES = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
    "bookcase", "board", "clutter",
)
_CLASS_ALIASES = {"stairs": "clutter"}
_COLUMNS = 6
_CACHE_VERSION = 1
"""Bump when what a parse returns changes, so old cache files are re-parsed."""
_CACHED_COUNTS = ("skipped_lines", "unknown_labels", "empty_files")
"""The :class:`LoadReport` fields a parse fills, stored with the cached room."""
_SHOWN = 5


def _natural_key(path: Path) -> list:
    """Sort key that orders ``chair_2`` before ``chair_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _parse_lines(text: str, label: str) -> tuple[np.ndarray, int]:
    """Slow path: parse line by line, skipping (and warning about) each bad line."""
    rows, skipped = [], 0
    for lineno, line in enumerate(text.splitlines(), start=1):
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
    """Read one S3DIS text file of "x y z r g b" lines (a leading UTF-8 BOM is stripped).

    Args:
        path: the file.
        label: how warnings name the file (default: ``path``).

    Returns:
        ``(rows, skipped)``: (N, 6) float32 array and the number of corrupt lines skipped (every
        line that is not 6 numbers, ``#`` comment lines included).
    """
    path = Path(path)
    text = read_text_without_bom(path, "latin-1")
    if not text or text.isspace():
        return np.zeros((0, _COLUMNS), dtype=np.float32), 0
    try:
        rows = np.loadtxt(io.StringIO(text), dtype=np.float32, ndmin=2, comments=None)
        if rows.shape[1] == _COLUMNS:
            return rows, 0
    except ValueError:
        pass
    return _parse_lines(text, label or str(path))


def _class_of(path: Path) -> str:
    """Class name of an annotation file: ``chair_12.txt`` -> ``chair``."""
    name = path.stem.rsplit("_", 1)[0]
    return _CLASS_ALIASES.get(name, name)


def default_cache_dir(root: str | Path) -> Path:
    """Where :class:`S3DISReader` caches parsed rooms of ``root`` unless told otherwise.

    ``<root>/.pcseg_cache/s3dis`` when ``root`` is writable: the cache lives and goes with the data
    and is shared by everyone who reads it. Otherwise (a read-only dataset mount)
    ``$XDG_CACHE_HOME/pcseg/s3dis/<16 hex digits of SHA-256 of root's absolute path>``, with
    ``XDG_CACHE_HOME`` defaulting to ``~/.cache``.
    """
    root = Path(root)
    if os.access(root, os.W_OK):
        return root / ".pcseg_cache" / "s3dis"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pcseg" / "s3dis" / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(files: list[Path]) -> str:
    """SHA-256 over the format version and each file's name, size, mtime (ns) and content hash."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([path.name, stat.st_size, stat.st_mtime_ns, _file_sha256(path)])
    return hashlib.sha256(json.dumps([_CACHE_VERSION, entries]).encode()).hexdigest()


class S3DISReader(SceneReader):
    """S3DIS rooms of one split; Area ``test_area`` is held out.

    Args:
        root: folder holding the ``Area_<k>`` folders.
        split: ``"train"`` (every area but ``test_area``), ``"val"`` or ``"test"`` (``test_area``).
        test_area: the held-out area, 5 by convention.
        cache_dir: where parsed rooms are cached (module docstring); ``None``:
            :func:`default_cache_dir` of ``root``.

    Scene names are ``Area_<k>/<room>``. Room folders without ``Annotations/`` are listed in
    ``self.skipped_rooms`` (``Area_<k>/<room>``) and warned about.
    """

    CLASS_NAMES = S3DIS_CLASS_NAMES
    NUM_CLASSES = len(S3DIS_CLASS_NAMES)
    _CLASS_IDS = {name: i for i, name in enumerate(S3DIS_CLASS_NAMES)}

    def __init__(self, root: str | Path, split: str, test_area: int = 5,
                 cache_dir: str | Path | None = None) -> None:
        super().__init__(root, split)
        self.test_area = test_area
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(self.root)
        held_out = f"Area_{test_area}"
        areas = sorted(p for p in self.root.glob("Area_*") if p.is_dir())
        if not areas:
            raise FileNotFoundError(f"{self.root}: expected Area_<k> folders here, found none")
        chosen = [a for a in areas if (a.name == held_out) == (split != "train")]
        rooms = [room for area in chosen for room in sorted(area.iterdir(), key=_natural_key) if room.is_dir()]
        self.scenes = [f"{r.parent.name}/{r.name}" for r in rooms if (r / "Annotations").is_dir()]
        self.skipped_rooms = [f"{r.parent.name}/{r.name}" for r in rooms if not (r / "Annotations").is_dir()]
        if self.skipped_rooms:
            more = f" and {len(self.skipped_rooms) - _SHOWN} more" if len(self.skipped_rooms) > _SHOWN else ""
            warnings.warn(
                f"{self.root}: {len(self.skipped_rooms)} room folder(s) of split '{split}' have no "
                f"Annotations/ folder and are skipped: {', '.join(self.skipped_rooms[:_SHOWN])}{more}",
                stacklevel=2,
            )
        self._cache_write_failed = False

    def _read(self, name: str, report: LoadReport) -> dict:
        folder = require_dir(self.root / name / "Annotations", f"S3DIS annotations of room '{name}'")
        files = sorted(folder.glob("*.txt"), key=_natural_key)
        if not files:
            raise InputError(f"{folder}: no <class>_<i>.txt annotation files; room '{name}' is empty")
        key = _cache_key(files)
        cache_path = self.cache_dir / f"{name}.npz"
        scene = self._load_cached(cache_path, key, report)
        if scene is None:
            scene = self._parse_room(name, files, report)
            self._store(cache_path, key, scene, report)
        return scene

    def _parse_room(self, name: str, files: list[Path], report: LoadReport) -> dict:
        """Parse the annotation ``files`` of room ``name``; counts what it skips into ``report``."""
        parts, segments, instances = [], [], []
        for instance_id, path in enumerate(files):
            label = f"{name}/Annotations/{path.name}"
            rows, skipped = read_s3dis_txt(path, label)
            report.skipped_lines += skipped
            if not len(rows):
                report.empty_files += 1
                after = f" after skipping {skipped} corrupt line(s)" if skipped else ""
                warnings.warn(f"{label}: no points{after}; object '{path.stem}' (instance {instance_id}) "
                              f"is missing from the room", stacklevel=3)
            class_id = self._CLASS_IDS.get(_class_of(path), IGNORE_INDEX)
            if class_id == IGNORE_INDEX and len(rows):
                report.unknown_labels += len(rows)
                warnings.warn(
                    f"{label}: class '{_class_of(path)}' unknown, its {len(rows)} points mapped to "
                    f"ignore; known: {', '.join(S3DIS_CLASS_NAMES)}",
                    stacklevel=3,
                )
            parts.append(rows)
            segments.append(np.full(len(rows), class_id, dtype=np.int64))
            instances.append(np.full(len(rows), instance_id, dtype=np.int64))
        points = np.concatenate(parts)
        return {
            "coord": points[:, :3],
            "color": points[:, 3:],
            "segment": np.concatenate(segments),
            "instance": np.concatenate(instances),
        }

    @staticmethod
    def _load_cached(path: Path, key: str, report: LoadReport) -> dict | None:
        """The cached room at ``path`` if its key is ``key`` (counts restored into ``report``).

        None when there is no such file or it holds another key; an unreadable or inconsistent
        file is warned about and also gives None, so the room is parsed and the file rewritten.
        """
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as cached:
                if str(cached["key"]) != key:
                    return None
                coord, color = cached["coord"], cached["color"]
                segment, instance, counts = cached["segment"], cached["instance"], cached["counts"]
            n = len(coord)
            if (coord.shape != (n, 3) or color.shape != (n, 3) or segment.shape != (n,)
                    or instance.shape != (n,) or counts.shape != (len(_CACHED_COUNTS),)):
                raise ValueError("arrays of inconsistent shapes")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: unreadable S3DIS cache file ({exc}); parsing the room again", stacklevel=4)
            return None
        for field, count in zip(_CACHED_COUNTS, counts.tolist()):
            setattr(report, field, count)
        return {"coord": coord, "color": color, "segment": segment, "instance": instance}

    def _store(self, path: Path, key: str, scene: dict, report: LoadReport) -> None:
        """Write ``scene`` and ``report``'s counts to ``path`` atomically; warn once if impossible."""
        counts = np.array([getattr(report, field) for field in _CACHED_COUNTS], dtype=np.int64)
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as handle:
                np.savez(handle, key=np.array(key), counts=counts, **scene)
        except OSError as exc:
            if not self._cache_write_failed:
                self._cache_write_failed = True
                warnings.warn(f"{path}: cannot write the S3DIS cache ({exc}); rooms are parsed on every "
                              f"load. Pass a writable cache_dir.", stacklevel=4)
