"""ScanNet v2 reader for the official raw layout.

Layout read (``<root>`` is the ScanNet v2 download folder)::

    <root>/scannetv2_{train,val,test}.txt                 optional: scene ids, one per line
    <root>/scans/<scene>/<scene>_vh_clean_2.ply            vertices x,y,z (float), red,green,blue (uchar)
    <root>/scans/<scene>/<scene>_vh_clean_2.labels.ply     vertex field ``label``: NYU40 id
    <root>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   optional: ``segIndices``, segment per vertex
    <root>/scans/<scene>/<scene>.aggregation.json          optional: ``segGroups``, objectId + its segments
    <root>/scans_test/<scene>/<scene>_vh_clean_2.ply       test scenes: no annotation files

The two ``_vh_clean_2`` PLY files per scene are all that is needed: that is what
``download-scannet.py --type _vh_clean_2.ply --type _vh_clean_2.labels.ply`` gives.

Split lists: the split files are not part of the ScanNet download (they live in the ScanNet code
repository), so pcseg ships the official lists (1201 train / 312 val / 100 test scenes) in
``pcseg/data/splits/scannet/``. A ``scannetv2_<split>.txt`` in the root wins and is taken as
written: a scene it names that is not on disk is an error when the reader is built. Without one,
the shipped list is used, filtered to the scenes on disk (a partial download); the scenes it skips
are counted in a warning, and a split none of whose official scenes is on disk is an error.

Semantics follow the 20-class benchmark (:data:`SCANNET20_NYU40_IDS`); other NYU40 ids (and 0,
unannotated) are ignored. Ids outside 0..40 are unknown: ignored, counted and warned about. A
``label`` stored as float must hold whole numbers (it is never truncated).
Instances (``instance``: the aggregation ``objectId``, -1 for vertices in no group) are read when
both JSON files exist or when asked for (``instances=True``), and are absent otherwise; test
scenes have ``segment`` = ignore everywhere and no ``instance``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ._common import (
    IGNORE_INDEX,
    LoadReport,
    SceneReader,
    check_count,
    check_nonempty,
    read_split_file,
    remap_labels,
    require_file,
)
from .ply import read_ply_vertices
from pcseg.utils.errors import BadArgumentError, InputError

__all__ = ["ScanNetReader", "SCANNET20_NYU40_IDS", "SCANNET20_CLASS_NAMES", "nyu40_to_scannet20",
           "OFFICIAL_SPLIT_DIR"]

OFFICIAL_SPLIT_DIR = Path(__file__).resolve().parents[1] / "splits" / "scannet"
"""The official ScanNet v2 split lists ``scannetv2_{train,val,test}.txt`` (1201 / 312 / 100 scenes,
from ``Tasks/Benchmark`` of github.com/ScanNet/ScanNet, commit 3830fce), shipped as package data."""

SCANNET20_NYU40_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
"""NYU40 ids of the ScanNet 20-class benchmark, in train-id order 0..19."""

SCANNET20_CLASS_NAMES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)

_NYU40_TO_TRAIN = {nyu: IGNORE_INDEX for nyu in range(41)}
_NYU40_TO_TRAIN.update({nyu: i for i, nyu in enumerate(SCANNET20_NYU40_IDS)})


def nyu40_to_scannet20(nyu40: np.ndarray, source: str = "<array>") -> tuple[np.ndarray, int]:
    """Map NYU40 ids to ScanNet-20 train ids.

    Args:
        nyu40: (N,) integer NYU40 ids (0 = unannotated, 1..40).
        source: named in the warning about unknown ids.

    Returns:
        ``(segment, n_unknown)``: (N,) int64 in 0..19 or ``IGNORE_INDEX``; ``n_unknown`` counts
        ids outside 0..40 (warned about).
    """
    return remap_labels(nyu40, _NYU40_TO_TRAIN, source, "label")


def _read_ply_vertices(path: Path, what: str) -> np.ndarray:
    """The vertex element of a PLY file as a structured (N,) array (:func:`.ply.read_ply_vertices`).

    The header is checked against the file and faces are never materialised; a truncated,
    corrupt or non-PLY file raises InputError naming it.
    """
    return read_ply_vertices(require_file(path, what))


def _field(vertices: np.ndarray, path: Path, name: str) -> np.ndarray:
    """One named vertex property, with an error naming the file if it is absent."""
    if name not in vertices.dtype.names:
        raise InputError(f"{path}: vertex field '{name}' missing; got {list(vertices.dtype.names)}")
    return vertices[name]


def _label_ids(values: np.ndarray, path: Path, field: str) -> np.ndarray:
    """(N,) int64 class ids of a per-vertex property stored as integers, or as floats holding whole
    numbers (a float that is not a whole number, or not finite, is an InputError: never truncated)."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if not np.issubdtype(values.dtype, np.floating):
        raise InputError(f"{path}: field '{field}': expected integer class ids, got dtype {values.dtype}")
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(values) & (np.abs(values) < 2**31) & (values == np.round(values)))
    if bad.any():
        examples = np.unique(values[bad])[:5].tolist()
        raise InputError(f"{path}: field '{field}': expected integer class ids, found {int(bad.sum())} of "
                         f"{len(values)} {values.dtype} values that are not whole numbers in the int32 range, "
                         f"e.g. {examples}; refusing to truncate them")
    return values.astype(np.int64)


def _json_key(path: Path, key: str) -> list:
    """The list under ``key`` of the JSON object in ``path``; errors name the file and the key."""
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))[key]
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: expected JSON, got a parse error: {err}") from None
    except (KeyError, TypeError):
        raise InputError(f"{path}: {key}: expected a JSON object with a '{key}' list, it has none") from None
    if not isinstance(value, list):
        raise InputError(f"{path}: {key}: expected a list, got {type(value).__name__}")
    return value


class ScanNetReader(SceneReader):
    """ScanNet v2 scenes of one split, read from the raw download.

    Args:
        root: folder holding ``scans/`` (and ``scans_test/``), optionally ``scannetv2_<split>.txt``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        instances: read the instance annotation (``segs.json`` + ``aggregation.json``): None when
            both files of a scene exist (if only one does, a warning names the missing one), True
            always (a missing file is an error), False never. Without it ``instance`` is absent.

    Attributes:
        split_file: the list the scenes came from: the root's split file, or the shipped official
            one (:data:`OFFICIAL_SPLIT_DIR`) when the root has none.
        missing_scenes: with the shipped list, its scenes that are not on disk (skipped, warned
            about); always empty with the root's own split file.
    """

    CLASS_NAMES = SCANNET20_CLASS_NAMES
    NUM_CLASSES = len(SCANNET20_CLASS_NAMES)

    def __init__(self, root: str | Path, split: str, instances: bool | None = None) -> None:
        if not (instances is None or isinstance(instances, bool)):
            raise BadArgumentError("instances", f"ScanNetReader: instances: expected None, True or False, "
                                                f"got {instances!r}")
        super().__init__(root, split)
        self.instances = instances
        self.split_file = self.root / f"scannetv2_{split}.txt"
        self.missing_scenes: list[str] = []
        if self.split_file.is_file():
            self.scenes = read_split_file(self.split_file)
            self.check_sources(self.split_file)
            return
        self.split_file = OFFICIAL_SPLIT_DIR / f"scannetv2_{split}.txt"
        listed = read_split_file(self.split_file)
        on_disk = [Path(self._source(name)).is_file() for name in listed]
        self.scenes = [name for name, here in zip(listed, on_disk) if here]
        self.missing_scenes = [name for name, here in zip(listed, on_disk) if not here]
        scan_dir = self._scene_dir("")
        if not self.scenes:
            raise InputError(
                f"{scan_dir}: scenes: none of the {len(listed)} scenes of the official ScanNet v2 {split} list "
                f"({self.split_file}) is on disk, and {self.root} has no scannetv2_{split}.txt; write one "
                f"naming the scenes of this split (one scene id per line)")
        if self.missing_scenes:
            warnings.warn(
                f"{self.root}: no scannetv2_{split}.txt, so the official {split} list shipped with pcseg is used: "
                f"{len(self.scenes)} of its {len(listed)} scenes are under {scan_dir}, {len(self.missing_scenes)} "
                f"are not and are skipped (e.g. {self.missing_scenes[:3]}); write scannetv2_{split}.txt in the "
                f"root to choose the scenes yourself", stacklevel=2)

    def _scene_dir(self, name: str) -> Path:
        return self.root / ("scans_test" if self.split == "test" else "scans") / name

    def _source(self, name: str) -> str:
        return str(self._scene_dir(name) / f"{name}_vh_clean_2.ply")

    def _read(self, name: str, report: LoadReport) -> dict:
        folder = self._scene_dir(name)
        mesh_path = folder / f"{name}_vh_clean_2.ply"
        vertices = _read_ply_vertices(mesh_path, "ScanNet mesh")
        fields = [_field(vertices, mesh_path, f) for f in ("x", "y", "z", "red", "green", "blue")]
        n = len(vertices)
        check_nonempty(str(mesh_path), name, n)
        scene = {"coord": np.stack(fields[:3], axis=1), "color": np.stack(fields[3:], axis=1)}
        if self.split == "test":
            scene["segment"] = np.full(n, IGNORE_INDEX, dtype=np.int64)
            return scene

        labels_path = folder / f"{name}_vh_clean_2.labels.ply"
        raw = _field(_read_ply_vertices(labels_path, "ScanNet NYU40 label mesh"), labels_path, "label")
        check_count(labels_path, "label", n, len(raw))
        nyu40 = _label_ids(raw, labels_path, "label")
        scene["segment"], report.unknown_labels = nyu40_to_scannet20(nyu40, str(labels_path))
        instance = self._read_instances(folder, name, n)
        if instance is not None:
            scene["instance"] = instance
        return scene

    def _read_instances(self, folder: Path, name: str, n: int) -> np.ndarray | None:
        """(N,) int64 aggregation objectId per vertex, -1 for vertices in no group; None when not read."""
        segs_path = folder / f"{name}_vh_clean_2.0.010000.segs.json"
        agg_path = folder / f"{name}.aggregation.json"
        if self.instances is False:
            return None
        if self.instances is None:
            present = [p for p in (segs_path, agg_path) if p.is_file()]
            if len(present) == 1:
                absent = agg_path if present[0] == segs_path else segs_path
                warnings.warn(f"{absent}: missing, so {present[0].name} is not used: scene '{name}' has no "
                              f"instance ids", stacklevel=2)
            if len(present) < 2:
                return None
        require_file(segs_path, "ScanNet over-segmentation")
        require_file(agg_path, "ScanNet instance aggregation")
        seg_indices = np.asarray(_json_key(segs_path, "segIndices"), dtype=np.int64)
        check_count(segs_path, "segIndices", n, len(seg_indices))
        seg_ids, seg_of_vertex = np.unique(seg_indices, return_inverse=True)
        object_of_seg = np.full(len(seg_ids), -1, dtype=np.int64)
        for group in _json_key(agg_path, "segGroups"):
            members = np.asarray(group["segments"], dtype=np.int64)
            pos = np.searchsorted(seg_ids, members).clip(max=len(seg_ids) - 1)
            known = seg_ids[pos] == members
            object_of_seg[pos[known]] = group["objectId"]
        return object_of_seg[seg_of_vertex]
