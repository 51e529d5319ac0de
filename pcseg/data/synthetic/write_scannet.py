"""Write synthetic rooms in the ScanNet v2 raw layout (see :mod:`pcseg.data.formats.scannet`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from plyfile import PlyData, PlyElement

from .indoor import INDOOR_CLASSES, IndoorScene, generate_room

__all__ = ["write_scannet_scene", "make_scannet"]

_NYU40 = np.array([c.nyu40 for c in INDOOR_CLASSES], dtype=np.uint16)


def _write_mesh(path: Path, scene: IndoorScene, color: np.ndarray, label: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: vertex x,y,z float, red,green,blue,alpha uchar (+ label ushort), faces."""
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("alpha", "u1")]
    if label is not None:
        fields.append(("label", "u2"))
    vertex = np.empty(len(scene.coord), dtype=fields)
    for i, axis in enumerate("xyz"):
        vertex[axis] = scene.coord[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = color[:, i]
    vertex["alpha"] = 255
    if label is not None:
        vertex["label"] = label
    face = np.empty(len(scene.faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = scene.faces
    PlyData([
        PlyElement.describe(vertex, "vertex"),
        PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"}),
    ]).write(str(path))


def write_scannet_scene(scene: IndoorScene, root: str | Path, name: str) -> None:
    """Write ``scene`` as ``<root>/scans/<name>/`` with the four ScanNet files.

    The labels mesh has NYU40 ids; ``segIndices`` holds, for each vertex, the smallest vertex index
    of its segment (ScanNet also uses vertex ids as segment ids); every instance with points gets
    a ``segGroup`` whose ``objectId`` is the generator's instance id.
    """
    folder = Path(root) / "scans" / name
    folder.mkdir(parents=True, exist_ok=True)
    nyu40 = _NYU40[scene.semantic]
    _write_mesh(folder / f"{name}_vh_clean_2.ply", scene, scene.color)
    label_color = ((nyu40[:, None].astype(np.int64) * [67, 131, 199]) % 256).astype(np.uint8)
    _write_mesh(folder / f"{name}_vh_clean_2.labels.ply", scene, label_color, nyu40)

    first_vertex = np.full(scene.segment.max() + 1, len(scene.segment), dtype=np.int64)
    np.minimum.at(first_vertex, scene.segment, np.arange(len(scene.segment)))
    seg_indices = first_vertex[scene.segment]
    segs_name = f"{name}_vh_clean_2.0.010000.segs.json"
    (folder / segs_name).write_text(json.dumps({"sceneId": name, "segIndices": seg_indices.tolist()}))

    groups = []
    for object_id in np.unique(scene.instance):
        members = np.unique(seg_indices[scene.instance == object_id])
        cls = INDOOR_CLASSES[scene.instance_class[object_id]]
        groups.append({"id": int(object_id), "objectId": int(object_id), "label": cls.name,
                       "segments": members.tolist()})
    aggregation = {"sceneId": f"scannet.{name}", "appId": "pcseg.synthetic", "segGroups": groups,
                   "segmentsFile": f"scannet.{segs_name}"}
    (folder / f"{name}.aggregation.json").write_text(json.dumps(aggregation))


def make_scannet(out: str | Path, num_scenes: int, seed: int, num_points: int = 120_000) -> dict[str, IndoorScene]:
    """Write ``num_scenes`` rooms ``scene0000_00``... under ``out`` with split files.

    The last quarter of the scenes (at least one when there are two or more) form the val split;
    ``scannetv2_test.txt`` is empty. Scene ``i`` depends only on ``(seed, i)``.

    Returns:
        scene name -> the generated :class:`IndoorScene` (the oracle of what was written).
    """
    out = Path(out)
    scenes = {}
    for i in range(num_scenes):
        name = f"scene{i:04d}_00"
        scenes[name] = generate_room(np.random.default_rng([seed, i]), num_points)
        write_scannet_scene(scenes[name], out, name)
    names = list(scenes)
    num_val = (num_scenes + 3) // 4 if num_scenes > 1 else 0
    splits = {"train": names[: num_scenes - num_val], "val": names[num_scenes - num_val:], "test": []}
    for split, members in splits.items():
        (out / f"scannetv2_{split}.txt").write_text("".join(f"{m}\n" for m in members))
    return scenes
