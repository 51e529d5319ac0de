"""Write synthetic rooms in the S3DIS raw layout (see :mod:`pcseg.data.formats.s3dis`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .indoor import INDOOR_CLASSES, IndoorScene, generate_room

__all__ = ["S3DISRoom", "write_s3dis_room", "make_s3dis"]

_ROOM_TYPES = ("office", "conferenceRoom", "hallway", "lounge", "storage", "pantry")


def _short(row: str) -> str:
    """A truncated line: 5 of the 6 values."""
    return " ".join(row.split()[:5])


def _garbled(row: str) -> str:
    """A line with a control byte inside a number, like Area_5/office_19's."""
    parts = row.split()
    parts[1] = parts[1][:2] + "\x10" + parts[1][2:]
    return " ".join(parts)


_CORRUPTIONS = (_short, _garbled)


@dataclass
class S3DISRoom:
    """What :func:`write_s3dis_room` wrote.

    Attributes:
        name: scene name ``Area_<k>/<room>``.
        offset: (3,) float64 translation added to the scene's coordinates.
        files: annotation file name -> generator instance id.
        corrupt: ``(file label, line number)`` of each injected corrupt line, as the reader reports it.
    """

    name: str
    offset: np.ndarray
    files: dict[str, int] = field(default_factory=dict)
    corrupt: list[tuple[str, int]] = field(default_factory=list)


def _format_rows(coord: np.ndarray, color: np.ndarray) -> list[str]:
    """One "x y z r g b" line per point (mm precision, integer colours), without newlines."""
    values = np.concatenate([coord.astype(np.float64), color.astype(np.float64)], axis=1)
    return (("%.3f %.3f %.3f %d %d %d\n" * len(values)) % tuple(values.ravel())).splitlines()


def write_s3dis_room(scene: IndoorScene, root: str | Path, name: str, offset=(0.0, 0.0, 0.0),
                     corrupt_lines: int = 0, rng: np.random.Generator | None = None) -> S3DISRoom:
    """Write ``scene`` as ``<root>/<name>/Annotations/<class>_<i>.txt`` plus ``<room>.txt``.

    Args:
        scene: the room; each instance becomes one annotation file (S3DIS class names).
        name: ``Area_<k>/<room>``.
        offset: (3,) metres added to every coordinate (S3DIS rooms sit at area coordinates).
        corrupt_lines: number of extra corrupt lines (short or garbled) inserted into random
            annotation files; real points are never altered, so a reader that skips exactly the
            corrupt lines returns the scene unchanged.
        rng: picks where corrupt lines go (required when ``corrupt_lines > 0``).
    """
    if corrupt_lines and rng is None:
        raise ValueError("write_s3dis_room: corrupt_lines > 0 needs an rng")
    folder = Path(root) / name
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    room = S3DISRoom(name, np.asarray(offset, dtype=np.float64))
    coord = scene.coord.astype(np.float64) + room.offset
    counts: dict[str, int] = {}
    contents: dict[str, list[str]] = {}
    for inst in np.unique(scene.instance):
        cls = INDOOR_CLASSES[scene.instance_class[inst]].s3dis
        counts[cls] = counts.get(cls, 0) + 1
        file_name = f"{cls}_{counts[cls]}.txt"
        room.files[file_name] = int(inst)
        mask = scene.instance == inst
        contents[file_name] = _format_rows(coord[mask], scene.color[mask])
    room_lines = [line for lines in contents.values() for line in lines]
    for k in range(corrupt_lines):
        file_name = str(rng.choice(sorted(contents)))
        lines = contents[file_name]
        at = int(rng.integers(len(lines) + 1))
        lines.insert(at, _CORRUPTIONS[k % len(_CORRUPTIONS)](lines[max(at - 1, 0)]))
        label = f"{name}/Annotations/{file_name}"
        room.corrupt = [(f, n + (f == label and n > at)) for f, n in room.corrupt]
        room.corrupt.append((label, at + 1))
    for file_name, lines in contents.items():
        (folder / "Annotations" / file_name).write_bytes("".join(f"{l}\n" for l in lines).encode("latin-1"))
    (folder / f"{name.split('/')[-1]}.txt").write_text("".join(f"{l}\n" for l in room_lines))
    return room


def make_s3dis(out: str | Path, num_scenes: int, seed: int, num_points: int = 120_000,
               areas: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
               corrupt_lines: int = 0) -> dict[str, tuple[IndoorScene, S3DISRoom]]:
    """Write ``num_scenes`` rooms under ``out``; room ``i`` goes to ``Area_{areas[i % len(areas)]}``.

    Room names cycle through office, conferenceRoom, hallway, ...; each room is shifted by a random
    offset. ``corrupt_lines`` corrupt lines are inserted per room. Room ``i`` depends only on
    ``(seed, i)``.

    Returns:
        scene name -> (the generated scene, what was written for it).
    """
    out = Path(out)
    rooms: dict[str, tuple[IndoorScene, S3DISRoom]] = {}
    per_area: dict[tuple[int, str], int] = {}
    for i in range(num_scenes):
        rng = np.random.default_rng([seed, i])
        area, kind = areas[i % len(areas)], _ROOM_TYPES[(i // len(areas)) % len(_ROOM_TYPES)]
        per_area[area, kind] = per_area.get((area, kind), 0) + 1
        name = f"Area_{area}/{kind}_{per_area[area, kind]}"
        scene = generate_room(rng, num_points)
        offset = np.round(rng.uniform([-20.0, -20.0, 0.0], [20.0, 20.0, 0.5]), 3)
        rooms[name] = scene, write_s3dis_room(scene, out, name, offset, corrupt_lines, rng)
    return rooms
