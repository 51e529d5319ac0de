"""Sparse label budgets stored as files.

A budget is a directory::

    manifest.json                 kind, amount, seed, source reader + scene list, label hashes, counts
    <scene>.npy                   (K,) int64 sorted unique indices into the scene's raw points
                                  ('/' in scene names becomes '__': Area_1__office_1.npy)

Indices refer to the raw points in the order the reader returns them. Each scene's label hash is
checked when the budget is applied (:meth:`Budget.mask`), so a budget cannot silently be used on
other data. Kinds:

- ``ratio``: per scene and per present class c, ``max(int(n_c * amount), 1)`` points drawn
  uniformly among the points of class c.
- ``points_per_scene``: ``amount`` points per scene drawn uniformly among the labelled points
  (all labelled points if there are fewer).
- ``active``: indices chosen by a method, written with :func:`write_active_budget`.

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

__all__ = [
    "KINDS", "MANIFEST", "Budget", "Reader", "load_budget", "make_budget", "write_active_budget",
    "scene_filename", "label_hash", "scene_rng", "sample_ratio", "sample_points_per_scene",
]

KINDS = ("ratio", "points_per_scene", "active")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class Reader(Protocol):
    """What a budget needs from a ``pcseg.data.formats`` reader."""

    scenes: list[str]

    def load(self, name: str) -> dict[str, Any]: ...


def scene_filename(scene: str) -> str:
    """File name of a scene's indices: ``Area_1/office_1`` → ``Area_1__office_1.npy``."""
    return scene.replace("/", "__") + ".npy"


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


class Budget:
    """A budget directory opened by :func:`load_budget`.

    manifest: the parsed ``manifest.json``; ``kind``, ``amount``, ``seed`` and ``scenes`` mirror it.
    """

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = root
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.amount: float | int = manifest["amount"]
        self.seed: int | None = manifest["seed"]
        self.scenes: list[str] = list(manifest["scenes"])

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def _check_scene(self, scene: str) -> None:
        if scene not in self.manifest["label_hash"]:
            raise KeyError(f"{self.manifest_path}: scene {scene!r} is not in this budget "
                           f"({len(self.scenes)} scenes of {self.manifest['reader']})")

    def indices(self, scene: str) -> np.ndarray:
        """(K,) int64 sorted unique indices into the raw points of ``scene``."""
        self._check_scene(scene)
        path = self.root / scene_filename(scene)
        if not path.is_file():
            raise FileNotFoundError(f"{self.manifest_path}: lists scene {scene!r} but {path} is missing")
        idx = np.load(path)
        if idx.ndim != 1 or idx.dtype != np.int64:
            raise ValueError(f"{path}: expected (K,) int64 indices, got shape {idx.shape} dtype {idx.dtype}")
        return idx

    def verify(self, scene: str, segment: np.ndarray) -> None:
        """Raise ValueError unless ``segment`` (N,) is the label array the budget was made from."""
        self._check_scene(scene)
        expected, got = self.manifest["label_hash"][scene], label_hash(segment)
        if got != expected:
            raise ValueError(f"{self.manifest_path}: labels of scene {scene!r} do not match the budget "
                             f"(expected {expected}, got {got}); it was made for "
                             f"{self.manifest['reader']} and cannot be applied to this data")

    def mask(self, scene: str, segment: np.ndarray) -> np.ndarray:
        """(N,) bool, True at the budget's points; checks the labels first (:meth:`verify`)."""
        self.verify(scene, segment)
        mask = np.zeros(len(segment), dtype=bool)
        mask[self.indices(scene)] = True
        return mask

    def __repr__(self) -> str:
        return f"Budget({str(self.root)!r}, kind={self.kind!r}, amount={self.amount!r}, seed={self.seed!r})"


def load_budget(path: str | os.PathLike) -> Budget:
    """Open a budget directory written by :func:`make_budget` or :func:`write_active_budget`."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{root}: not a budget directory, {MANIFEST} is missing")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{manifest_path}: format_version expected {FORMAT_VERSION}, got {version!r}")
    missing = [k for k in ("kind", "amount", "seed", "reader", "scenes", "label_hash") if k not in manifest]
    if missing:
        raise ValueError(f"{manifest_path}: missing field(s) {', '.join(missing)}")
    if manifest["kind"] not in KINDS:
        raise ValueError(f"{manifest_path}: kind expected one of {', '.join(KINDS)}, got {manifest['kind']!r}")
    return Budget(root, manifest)


def _reader_info(reader: Reader) -> dict[str, Any]:
    return {"class": type(reader).__name__, "split": getattr(reader, "split", None)}


def _prepare_dir(out_dir: str | os.PathLike) -> Path:
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root}: budget output directory must be empty or absent")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _write(root: Path, reader: Reader, kind: str, amount: float | int | None, seed: int | None,
           select: Callable[[str, np.ndarray], np.ndarray], ignore_index: int,
           meta: Mapping[str, Any]) -> Budget:
    """Load each reader scene, write ``select(scene, segment) -> (K,) int64`` and the manifest last.

    amount None: the total number of selected points.
    """
    hashes, per_scene = {}, {}
    for scene in reader.scenes:
        segment = np.asarray(reader.load(scene)["segment"], dtype=np.int64)
        idx = select(scene, segment)
        np.save(root / scene_filename(scene), idx)
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

        def select(scene: str, segment: np.ndarray) -> np.ndarray:
            return sample_ratio(segment, amount, scene_rng(seed, scene), ignore_index)
    elif kind == "points_per_scene":
        if isinstance(amount, bool) or not isinstance(amount, (int, np.integer)) or amount < 1:
            raise ValueError(f"make_budget: amount for kind 'points_per_scene' expected an int >= 1, got {amount!r}")
        amount = int(amount)

        def select(scene: str, segment: np.ndarray) -> np.ndarray:
            return sample_points_per_scene(segment, amount, scene_rng(seed, scene), ignore_index)
    elif kind == "active":
        raise ValueError("make_budget: kind 'active' is chosen by a method; use write_active_budget")
    else:
        raise ValueError(f"make_budget: kind expected one of {', '.join(KINDS)}, got {kind!r}")
    return _write(_prepare_dir(out_dir), reader, kind, amount, int(seed), select, ignore_index, {})


def write_active_budget(out_dir: str | os.PathLike, indices: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                        *, reader: Reader, ignore_index: int = IGNORE_INDEX) -> Budget:
    """Write the points a method chose: ``indices[scene]`` (K,) int into the raw points of ``scene``.

    Scenes of ``reader`` absent from ``indices`` get no points. meta: JSON-serialisable description
    of the selection (method, round, ...), stored in the manifest. ``reader`` provides the scene
    list and the labels whose hashes guard the budget. ``out_dir`` must be empty or absent.
    """
    unknown = sorted(set(indices) - set(reader.scenes))
    if unknown:
        raise KeyError(f"write_active_budget: scene(s) {', '.join(map(repr, unknown[:5]))} are not in "
                       f"{_reader_info(reader)}")

    def select(scene: str, segment: np.ndarray) -> np.ndarray:
        idx = np.unique(np.asarray(indices.get(scene, []), dtype=np.int64))
        if len(idx) and (idx[0] < 0 or idx[-1] >= len(segment)):
            raise IndexError(f"write_active_budget: indices of scene {scene!r} expected in [0, {len(segment)}), "
                             f"got range [{idx[0]}, {idx[-1]}]")
        return idx

    return _write(_prepare_dir(out_dir), reader, "active", None, None, select, ignore_index, meta)
