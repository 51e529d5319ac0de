"""Sparse label budgets stored as files.

A budget is a directory::

    manifest.json                 kind, amount, seed, source reader + scene list, label hashes, counts
    <scene>.npy                   (K,) int64 sorted unique indices into the scene's raw points
                                  ('/' in scene names becomes '__': Area_1__office_1.npy)
    <scene>.labels.npy            kind ``annotated`` only: (K,) int64 class ids of those points, in the
                                  same order (a person's labels, :meth:`Budget.labels`)

Indices refer to the raw points in the order the reader returns them (after it dropped points with
non-finite values, ``pcseg.data.formats._common.drop_nonfinite``). Each scene's point count and label
hash (of the reader's labels, also for ``annotated`` budgets) are checked when the budget is applied
(:meth:`Budget.mask`), so a budget cannot silently be used on other data, nor on data from which the
reader now drops other points (that would shift every index); for scans without labels (every point
ignore) the hash still pins the number of points.

:func:`load_budget` validates every scene's files against the contract above (integer (K,) arrays,
indices in [0, points) sorted and unique, labels class ids or ignore) and raises
:class:`~pcseg.utils.errors.InputError` naming the file, the scene and the offending values. Kinds:

- ``ratio``: per scene and per present class c, ``max(int(n_c * amount), 1)`` points drawn
  uniformly among the points of class c.
- ``points_per_scene``: ``amount`` points per scene drawn uniformly among the labelled points
  (all labelled points if there are fewer).
- ``active``: indices chosen by a method, written with :func:`write_active_budget`.
- ``annotated``: indices plus the labels a person gave them (``tools/annotate.py``), written with
  :func:`write_annotated_budget`. Training uses these labels at the budget's points instead of the
  reader's (:meth:`Budget.labelled_segment`), so the scans themselves need no labels.

The first three kinds store indices only: the training labels of their points are the reader's.

Random draws use one generator per scene derived from (seed, scene name), so the same seed gives
byte-identical index files and adding a scene leaves the other scenes' files unchanged.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from pcseg.data.formats import IGNORE_INDEX
from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

__all__ = [
    "KINDS", "INDEX_KINDS", "LABEL_KINDS", "MANIFEST", "LABELS_SUFFIX", "Budget", "Reader", "load_budget",
    "make_budget", "write_active_budget", "write_annotated_budget", "scene_filename", "label_hash", "scene_rng",
    "sample_ratio", "sample_points_per_scene",
]

INDEX_KINDS = ("ratio", "points_per_scene", "active")  # indices only; labels from the reader
LABEL_KINDS = ("annotated",)  # indices and their labels
KINDS = INDEX_KINDS + LABEL_KINDS
MANIFEST = "manifest.json"
LABELS_SUFFIX = ".labels.npy"
FORMAT_VERSION = 1


class Reader(Protocol):
    """What a budget needs from a ``pcseg.data.formats`` reader."""

    scenes: list[str]

    def load(self, name: str) -> dict[str, Any]: ...


def scene_filename(scene: str, suffix: str = ".npy") -> str:
    """File name of a scene's indices: ``Area_1/office_1`` → ``Area_1__office_1.npy`` (other ``suffix``: labels)."""
    return scene.replace("/", "__") + suffix


def label_hash(segment: np.ndarray) -> str:
    """``"sha256:<hex>"`` of the labels (N,) as little-endian int64 (length included implicitly)."""
    data = np.ascontiguousarray(segment, dtype="<i8").tobytes()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def scene_rng(seed: int, scene: str) -> np.random.Generator:
    """Generator for one scene, independent of every other scene's."""
    words = np.frombuffer(hashlib.sha256(scene.encode("utf-8")).digest()[:16], dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words.tolist()]))


def sample_ratio(segment: np.ndarray, ratio: float, rng: np.random.Generator,
                 ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Per present class c, ``max(int(n_c * ratio), 1)`` uniform picks among its points.

    segment: (N,) int64. Returns (K,) int64 sorted indices.
    """
    picks = [np.zeros(0, dtype=np.int64)]
    for cls in np.unique(segment[segment != ignore_index]):
        members = np.flatnonzero(segment == cls)
        picks.append(rng.choice(members, size=max(int(len(members) * ratio), 1), replace=False))
    return np.sort(np.concatenate(picks)).astype(np.int64)


def sample_points_per_scene(segment: np.ndarray, count: int, rng: np.random.Generator,
                            ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``count`` uniform picks among the labelled points (all of them if fewer).

    segment: (N,) int64. Returns (K,) int64 sorted indices.
    """
    labelled = np.flatnonzero(segment != ignore_index).astype(np.int64)
    if count >= len(labelled):
        return labelled
    return np.sort(rng.choice(labelled, size=count, replace=False))


_SHOWN = 5
"""How many offending values an error message lists."""


def _shown(values: np.ndarray) -> str:
    """The first few of (M,) ``values`` as ``[a, b, ...]`` for an error message."""
    return str(values[:_SHOWN].tolist())[:-1] + (", ...]" if len(values) > _SHOWN else "]")


class Budget:
    """A budget directory opened by :func:`load_budget`.

    manifest: the parsed ``manifest.json``; ``kind``, ``amount``, ``seed`` and ``scenes`` mirror it.
    Kind ``annotated`` also holds the labels of its points (:meth:`labels`, :meth:`labelled_segment`).
    num_classes: class count the labels of an ``annotated`` budget are checked against (None: only
    that they are >= 0 or the manifest's ``ignore_index``).
    """

    def __init__(self, root: Path, manifest: dict[str, Any], num_classes: int | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.amount: float | int = manifest["amount"]
        self.seed: int | None = manifest["seed"]
        self.scenes: list[str] = list(manifest["scenes"])
        self.num_classes = num_classes
        self.ignore_index: int = manifest.get("ignore_index", IGNORE_INDEX)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def _check_scene(self, scene: str) -> None:
        if scene not in self.manifest["label_hash"]:
            raise KeyError(f"{self.manifest_path}: scene {scene!r} is not in this budget "
                           f"({len(self.scenes)} scenes of {self.manifest['reader']})")

    def num_points(self, scene: str) -> int:
        """The number of points of ``scene`` the budget was made for (``counts.per_scene`` of the manifest)."""
        self._check_scene(scene)
        n: Any = self.manifest["counts"]
        for key in ("per_scene", scene, "points"):
            n = n.get(key) if isinstance(n, dict) else None
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"{self.manifest_path}: counts.per_scene[{scene!r}].points: expected the scene's "
                             f"point count (an int >= 0), found {n!r}")
        return n

    def _load(self, scene: str, suffix: str, what: str) -> tuple[Path, np.ndarray]:
        """The file ``scene_filename(scene, suffix)`` of ``scene`` and its (K,) integer array, as stored."""
        self._check_scene(scene)
        path = self.root / scene_filename(scene, suffix)
        if not path.is_file():
            raise FileNotFoundError(f"{self.manifest_path}: lists scene {scene!r} but {path} is missing")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"{path}: scene {scene!r}: expected a .npy file of {what}, "
                             f"found one numpy cannot read ({err})") from None
        if not isinstance(array, np.ndarray) or array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
            found = (f"shape {array.shape} dtype {array.dtype}" if isinstance(array, np.ndarray)
                     else f"a {type(array).__name__}")
            raise InputError(f"{path}: scene {scene!r}: {what} expected a (K,) integer array (int64), found {found}")
        return path, array

    def indices(self, scene: str) -> np.ndarray:
        """(K,) int64 sorted unique indices into the raw points of ``scene``.

        Raises InputError naming the file, the scene and the offending values unless they lie in
        [0, :meth:`num_points`) and are sorted ascending without repeats.
        """
        path, idx = self._load(scene, ".npy", "indices")
        n = self.num_points(scene)
        where = f"{path}: scene {scene!r}: indices"
        for bad, what in ((idx < 0, "negative"), (idx >= n, f">= {n}")):
            if bad.any():
                raise InputError(f"{where} expected in [0, {n}) (the scene's point count), "
                                 f"found {int(bad.sum())} {what}: {_shown(idx[bad])}")
        idx = idx.astype(np.int64)
        values, counts = np.unique(idx, return_counts=True)
        if (counts > 1).any():
            raise InputError(f"{where} expected unique, found {int((counts > 1).sum())} repeated: "
                             f"{_shown(values[counts > 1])}")
        descending = np.flatnonzero(np.diff(idx) < 0)
        if len(descending):
            i = int(descending[0])
            raise InputError(f"{where} expected sorted ascending, found {idx[i]} before {idx[i + 1]} "
                             f"at position {i} ({len(descending)} such places)")
        return idx

    def labels(self, scene: str) -> np.ndarray | None:
        """(K,) int64 class ids of the points :meth:`indices` (same order): kind ``annotated``; else None.

        Raises InputError naming the file, the scene and the offending values unless there is one
        label per index, each in [0, ``num_classes``) or ``ignore_index``.
        """
        if self.kind not in LABEL_KINDS:
            return None
        path, labels = self._load(scene, LABELS_SUFFIX, "class ids")
        n_indices = len(self.indices(scene))
        if len(labels) != n_indices:
            raise InputError(f"{path}: scene {scene!r}: expected one label per index of {scene_filename(scene)} "
                             f"({n_indices}), found {len(labels)} labels")
        upper = f"[0, {self.num_classes})" if self.num_classes is not None else ">= 0"
        bad = (labels != self.ignore_index) & (labels < 0)
        if self.num_classes is not None:
            bad |= labels >= self.num_classes
        if bad.any():
            raise InputError(f"{path}: scene {scene!r}: labels expected class ids {upper} or {self.ignore_index} "
                             f"(ignore), found {int(bad.sum())} others: {_shown(np.unique(labels[bad]))}")
        return labels.astype(np.int64)

    def validate(self) -> None:
        """Check the files of every scene (:meth:`indices`, :meth:`labels`); raise InputError at the first fault."""
        listed, hashed = set(self.scenes), set(self.manifest["label_hash"])
        if listed != hashed:
            raise InputError(f"{self.manifest_path}: label_hash: expected one entry per scene of 'scenes', "
                             f"found {sorted(listed ^ hashed)[:_SHOWN]} in only one of them")
        for scene in self.scenes:
            self.indices(scene)
            self.labels(scene)

    def verify(self, scene: str, segment: np.ndarray) -> None:
        """Raise InputError unless ``segment`` (N,) is the label array the budget was made from.

        A different point count is named as such: the budget's indices would point at other points
        (e.g. when the reader now drops points with non-finite coordinates or colours).
        """
        self._check_scene(scene)
        n = self.num_points(scene)
        if len(segment) != n:
            raise InputError(f"{self.manifest_path}: scene {scene!r}: the budget was made for {n} points, the "
                             f"data has {len(segment)}, so its indices would label other points (points the "
                             f"reader drops, e.g. with non-finite coordinates or colours, shift them); "
                             f"make the budget again for this data")
        expected, got = self.manifest["label_hash"][scene], label_hash(segment)
        if got != expected:
            raise InputError(f"{self.manifest_path}: labels of scene {scene!r} do not match the budget "
                             f"(expected {expected}, got {got}); it was made for "
                             f"{self.manifest['reader']} and cannot be applied to this data")

    def mask(self, scene: str, segment: np.ndarray) -> np.ndarray:
        """(N,) bool, True at the budget's points; checks the labels first (:meth:`verify`)."""
        self.verify(scene, segment)
        mask = np.zeros(len(segment), dtype=bool)
        mask[self.indices(scene)] = True
        return mask

    def labelled_segment(self, scene: str, segment: np.ndarray) -> np.ndarray:
        """(N,) int64 training labels of ``scene``: ``segment`` (N,) with the budget's own labels written at
        its points (a copy) for kind ``annotated``; ``segment`` as int64 for the other kinds.

        Checks the labels first (:meth:`verify`).
        """
        self.verify(scene, segment)
        segment = np.asarray(segment, dtype=np.int64)
        labels = self.labels(scene)
        if labels is None:
            return segment
        out = segment.copy()
        out[self.indices(scene)] = labels
        return out

    def __repr__(self) -> str:
        return f"Budget({str(self.root)!r}, kind={self.kind!r}, amount={self.amount!r}, seed={self.seed!r})"


def load_budget(path: str | os.PathLike, *, num_classes: int | None = None) -> Budget:
    """Open a budget directory written by :func:`make_budget`, :func:`write_active_budget` or
    :func:`write_annotated_budget`, and validate every scene's files (:meth:`Budget.validate`).

    num_classes: the dataset's class count, which the labels of an ``annotated`` budget must lie
    below (None: not checked against a class count). Faults raise InputError naming the file.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{root}: not a budget directory, {MANIFEST} is missing")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{manifest_path}: expected a JSON manifest, found unreadable text ({err})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{manifest_path}: expected a JSON object, found a {type(manifest).__name__}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"{manifest_path}: format_version expected {FORMAT_VERSION}, got {version!r}")
    missing = [k for k in ("kind", "amount", "seed", "reader", "scenes", "label_hash", "counts") if k not in manifest]
    if missing:
        raise InputError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    if manifest["kind"] not in KINDS:
        raise InputError(f"{manifest_path}: kind expected one of {', '.join(KINDS)}, got {manifest['kind']!r}")
    budget = Budget(root, manifest, num_classes)
    budget.validate()
    return budget


def _reader_info(reader: Reader) -> dict[str, Any]:
    return {"class": type(reader).__name__, "split": getattr(reader, "split", None)}


def _prepare_dir(out_dir: str | os.PathLike) -> Path:
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: budget output directory must be empty or absent")
    root.mkdir(parents=True, exist_ok=True)
    return root


Selection = Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray | None]]
"""``select(scene, segment (N,) int64) -> (indices (K,) int64 sorted unique, labels (K,) int64 or None)``."""


def _write(root: Path, reader: Reader, kind: str, amount: float | int | None, seed: int | None,
           select: Selection, ignore_index: int, meta: Mapping[str, Any]) -> Budget:
    """Load each reader scene, write what ``select`` returns for it and the manifest last.

    amount None: the total number of selected points. Labels (not None) go to ``<scene>.labels.npy``.
    """
    hashes, per_scene = {}, {}
    for scene in reader.scenes:
        segment = np.asarray(reader.load(scene)["segment"], dtype=np.int64)
        idx, labels = select(scene, segment)
        np.save(root / scene_filename(scene), idx)
        if labels is not None:
            np.save(root / scene_filename(scene, LABELS_SUFFIX), labels)
        hashes[scene] = label_hash(segment)
        per_scene[scene] = {"points": int(len(segment)), "labelled": int((segment != ignore_index).sum()),
                            "selected": int(len(idx))}
    total = {key: sum(c[key] for c in per_scene.values()) for key in ("points", "labelled", "selected")}
    manifest = {
        "format_version": FORMAT_VERSION, "kind": kind,
        "amount": total["selected"] if amount is None else amount, "seed": seed,
        "ignore_index": ignore_index, "reader": _reader_info(reader), "scenes": list(reader.scenes),
        "label_hash": hashes, "counts": {"total": total, "per_scene": per_scene},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "meta": dict(meta),
    }
    with atomic_path(root / MANIFEST) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    return Budget(root, manifest)


def make_budget(reader: Reader, kind: str, amount: float | int, seed: int, out_dir: str | os.PathLike,
                *, ignore_index: int = IGNORE_INDEX) -> Budget:
    """Draw a ``ratio`` or ``points_per_scene`` budget over all scenes of ``reader`` into ``out_dir``.

    amount: fraction in (0, 1] for ``ratio``; a positive int for ``points_per_scene``.
    ``out_dir`` must be empty or absent. Returns the written budget.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"make_budget: seed expected an int >= 0, got {seed!r}")
    if kind == "ratio":
        if not 0.0 < float(amount) <= 1.0:
            raise ValueError(f"make_budget: amount for kind 'ratio' expected a fraction in (0, 1], got {amount!r}")
        amount = float(amount)

        def select(scene: str, segment: np.ndarray) -> tuple[np.ndarray, None]:
            return sample_ratio(segment, amount, scene_rng(seed, scene), ignore_index), None
    elif kind == "points_per_scene":
        if isinstance(amount, bool) or not isinstance(amount, (int, np.integer)) or amount < 1:
            raise ValueError(f"make_budget: amount for kind 'points_per_scene' expected an int >= 1, got {amount!r}")
        amount = int(amount)

        def select(scene: str, segment: np.ndarray) -> tuple[np.ndarray, None]:
            return sample_points_per_scene(segment, amount, scene_rng(seed, scene), ignore_index), None
    elif kind == "active":
        raise ValueError("make_budget: kind 'active' is chosen by a method; use write_active_budget")
    elif kind == "annotated":
        raise ValueError("make_budget: kind 'annotated' holds a person's labels; use write_annotated_budget "
                         "(tools/annotate.py apply)")
    else:
        raise ValueError(f"make_budget: kind expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    return _write(_prepare_dir(out_dir), reader, kind, amount, int(seed), select, ignore_index, {})


def _check_scenes(who: str, scenes: Mapping[str, Any], reader: Reader) -> None:
    """Raise KeyError if ``scenes`` has a key that is not a scene of ``reader``."""
    unknown = sorted(set(scenes) - set(reader.scenes))
    if unknown:
        raise KeyError(f"{who}: scene(s) {', '.join(map(repr, unknown[:5]))} are not in {_reader_info(reader)}")


def _check_range(who: str, scene: str, idx: np.ndarray, n: int) -> None:
    """Raise IndexError unless the (K,) indices ``idx`` lie in [0, n)."""
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"{who}: indices of scene {scene!r} expected in [0, {n}), "
                         f"got range [{idx.min()}, {idx.max()}]")


def write_active_budget(out_dir: str | os.PathLike, indices: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                        *, reader: Reader, ignore_index: int = IGNORE_INDEX) -> Budget:
    """Write the points a method chose: ``indices[scene]`` (K,) int into the raw points of ``scene``.

    Scenes of ``reader`` absent from ``indices`` get no points. meta: JSON-serialisable description
    of the selection (method, round, ...), stored in the manifest. ``reader`` provides the scene
    list and the labels whose hashes guard the budget. ``out_dir`` must be empty or absent.
    """
    _check_scenes("write_active_budget", indices, reader)

    def select(scene: str, segment: np.ndarray) -> tuple[np.ndarray, None]:
        idx = np.unique(np.asarray(indices.get(scene, []), dtype=np.int64))
        _check_range("write_active_budget", scene, idx, len(segment))
        return idx, None

    return _write(_prepare_dir(out_dir), reader, "active", None, None, select, ignore_index, meta)


def write_annotated_budget(out_dir: str | os.PathLike, indices: Mapping[str, np.ndarray],
                           labels: Mapping[str, np.ndarray], meta: Mapping[str, Any], *, reader: Reader,
                           previous: Budget | None = None, ignore_index: int = IGNORE_INDEX) -> Budget:
    """Write the points a person labelled: ``indices[scene]`` (K,) int into the raw points of ``scene``
    and ``labels[scene]`` (K,) int their class ids, in the same order.

    previous: a budget of the same data whose points are kept with their training labels
    (:meth:`Budget.labelled_segment`: its person's labels, or the reader's for the other kinds).
    A point may appear once: twice in ``indices``, or in both ``indices`` and ``previous``, is a
    ValueError. Scenes absent from ``indices`` get no new points. meta, reader, ``out_dir``: as for
    :func:`write_active_budget`.
    """
    who = "write_annotated_budget"
    _check_scenes(who, indices, reader)
    if set(labels) != set(indices):
        raise KeyError(f"{who}: labels and indices expected the same scenes, got "
                       f"{sorted(set(labels) ^ set(indices))[:5]} in only one of them")

    def select(scene: str, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(indices.get(scene, np.zeros(0)), dtype=np.int64)
        lab = np.asarray(labels.get(scene, np.zeros(0)), dtype=np.int64)
        if idx.ndim != 1 or lab.shape != idx.shape:
            raise ValueError(f"{who}: scene {scene!r} expected (K,) indices and (K,) labels, "
                             f"got shapes {idx.shape} and {lab.shape}")
        _check_range(who, scene, idx, len(segment))
        if previous is not None:
            kept = previous.indices(scene)
            idx = np.concatenate([kept, idx])
            lab = np.concatenate([previous.labelled_segment(scene, segment)[kept], lab])
        order = np.argsort(idx, kind="stable")
        idx, lab = idx[order], lab[order]
        repeated = idx[1:][np.diff(idx) == 0]
        if len(repeated):
            raise ValueError(f"{who}: scene {scene!r}: point(s) {repeated[:5].tolist()} given more than once "
                             f"(twice in indices, or in indices and in the previous budget)")
        return idx, lab

    return _write(_prepare_dir(out_dir), reader, "annotated", None, None, select, ignore_index, meta)
