"""ScanNet v2 reader for the official raw layout.

Layout read (``<root>`` is the ScanNet v2 download folder)::

    <root>/scannetv2_{train,val,test}.txt                 scene ids, one per line
    <root>/scans/<scene>/<scene>_vh_clean_2.ply            vertices x,y,z (float), red,green,blue (uchar)
    <root>/scans/<scene>/<scene>_vh_clean_2.labels.ply     vertex field ``label``: NYU40 id
    <root>/scans/<scene>/<scene>_vh_clean_2.0.010000.segs.json   ``segIndices``: segment per vertex
    <root>/scans/<scene>/<scene>.aggregation.json          ``segGroups``: objectId + its segments
    <root>/scans_test/<scene>/<scene>_vh_clean_2.ply       test scenes: no annotation files

Semantics follow the 20-class benchmark (:data:`SCANNET20_NYU40_IDS`); other NYU40 ids (and 0,
unannotated) are ignored. Ids outside 0..40 are unknown: ignored, counted and warned about.
Instance ids are the aggregation ``objectId``; vertices in no group get -1. Test scenes get
``segment`` = ignore and ``instance`` = -1 everywhere.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElementParseError

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

__all__ = ["ScanNetReader", "SCANNET20_NYU40_IDS", "SCANNET20_CLASS_NAMES", "nyu40_to_scannet20"]

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


_TRIANGLES = {"face": {"vertex_indices": 3}}


def _read_ply_vertices(path: Path, what: str) -> np.ndarray:
    """The vertex element of a PLY file as a structured (N,) array.

    Faces are memory-mapped as triangles (fast); meshes with other polygons are read the slow way.
    """
    require_file(path, what)
    try:
        ply = PlyData.read(str(path), known_list_len=_TRIANGLES)
    except PlyElementParseError:
        ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise ValueError(f"{path}: expected a 'vertex' element, got {[e.name for e in ply.elements]}")
    return ply["vertex"].data


def _field(vertices: np.ndarray, path: Path, name: str) -> np.ndarray:
    """One named vertex property, with an error naming the file if it is absent."""
    if name not in vertices.dtype.names:
        raise ValueError(f"{path}: vertex field '{name}' missing; got {list(vertices.dtype.names)}")
    return vertices[name]


class ScanNetReader(SceneReader):
    """ScanNet v2 scenes of one split, read from the raw download.

    Args:
        root: folder holding ``scans/`` (and ``scans_test/``) and the ``scannetv2_*.txt`` files.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    CLASS_NAMES = SCANNET20_CLASS_NAMES
    NUM_CLASSES = len(SCANNET20_CLASS_NAMES)

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__(root, split)
        self.scenes = read_split_file(self.root / f"scannetv2_{split}.txt")

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
            scene["instance"] = np.full(n, -1, dtype=np.int64)
            return scene

        labels_path = folder / f"{name}_vh_clean_2.labels.ply"
        nyu40 = _field(_read_ply_vertices(labels_path, "ScanNet NYU40 label mesh"), labels_path, "label")
        check_count(labels_path, "label", n, len(nyu40))
        scene["segment"], report.unknown_labels = nyu40_to_scannet20(nyu40, str(labels_path))
        scene["instance"] = self._read_instances(folder, name, n)
        return scene

    @staticmethod
    def _read_instances(folder: Path, name: str, n: int) -> np.ndarray:
        """(N,) int64 aggregation objectId per vertex, -1 for vertices in no group."""
        segs_path = require_file(folder / f"{name}_vh_clean_2.0.010000.segs.json", "ScanNet over-segmentation")
        agg_path = require_file(folder / f"{name}.aggregation.json", "ScanNet instance aggregation")
        seg_indices = np.asarray(json.loads(segs_path.read_text())["segIndices"], dtype=np.int64)
        check_count(segs_path, "segIndices", n, len(seg_indices))
        seg_ids, seg_of_vertex = np.unique(seg_indices, return_inverse=True)
        object_of_seg = np.full(len(seg_ids), -1, dtype=np.int64)
        for group in json.loads(agg_path.read_text())["segGroups"]:
            members = np.asarray(group["segments"], dtype=np.int64)
            pos = np.searchsorted(seg_ids, members).clip(max=len(seg_ids) - 1)
            known = seg_ids[pos] == members
            object_of_seg[pos[known]] = group["objectId"]
        return object_of_seg[seg_of_vertex]
