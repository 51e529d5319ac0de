"""Synthetic indoor rooms sampled like a mesh scan (surfaces only).

A room is a box (floor, ceiling, four walls) with a door and windows cut into the walls, pictures
and curtains on them, optional columns and beams, furniture against the walls (cabinets,
bookshelves, desks, sofas, beds, refrigerators, small furniture) and a table with chairs. Points
are the jittered vertices of each surface, with ~5 mm noise along the normal, occlusion holes
(floor under and walls behind solid furniture, hidden tops, random patches, random dropouts)
and shaded, noisy per-object colours.

Some classes differ only by shape (table, desk, cabinet and bookshelf share one wood palette;
sofa, bed and chair share one fabric palette; columns and beams take the wall colour) and some
only by colour (pictures and doors lie in the wall plane). Heights overlap across classes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .surfaces import SurfaceBuilder, keep_faces, yaw_matrix

__all__ = ["IndoorClass", "INDOOR_CLASSES", "IndoorScene", "generate_room"]


@dataclass(frozen=True)
class IndoorClass:
    """A synthetic indoor class and its label in each format."""

    name: str
    nyu40: int
    s3dis: str


INDOOR_CLASSES = (
    IndoorClass("wall", 1, "wall"),
    IndoorClass("floor", 2, "floor"),
    IndoorClass("ceiling", 22, "ceiling"),
    IndoorClass("cabinet", 3, "clutter"),
    IndoorClass("bed", 4, "clutter"),
    IndoorClass("chair", 5, "chair"),
    IndoorClass("sofa", 6, "sofa"),
    IndoorClass("table", 7, "table"),
    IndoorClass("door", 8, "door"),
    IndoorClass("window", 9, "window"),
    IndoorClass("bookshelf", 10, "bookcase"),
    IndoorClass("picture", 11, "board"),
    IndoorClass("desk", 14, "table"),
    IndoorClass("curtain", 16, "clutter"),
    IndoorClass("refrigerator", 24, "clutter"),
    IndoorClass("otherfurniture", 39, "clutter"),
    IndoorClass("column", 38, "column"),
    IndoorClass("beam", 38, "beam"),
)
_CLS = {c.name: i for i, c in enumerate(INDOOR_CLASSES)}

_WOOD = np.array([[150, 111, 70], [181, 140, 95], [110, 75, 45], [205, 170, 125], [215, 212, 205],
                  [120, 120, 125], [90, 60, 40]], float)
_FABRIC = np.array([[70, 80, 110], [120, 40, 40], [60, 90, 60], [150, 140, 130], [40, 40, 45],
                    [180, 160, 120], [100, 100, 140]], float)
_WALL = np.array([[225, 222, 210], [235, 235, 235], [210, 205, 190], [200, 210, 215], [230, 215, 200]], float)
_FLOOR = np.array([[160, 120, 80], [120, 120, 120], [90, 90, 100], [180, 160, 130], [140, 100, 70]], float)
_METAL = np.array([[170, 170, 175], [60, 60, 65], [200, 200, 200]], float)
_GLASS = np.array([150.0, 170.0, 185.0])

_NOISE_ALONG_NORMAL = 0.005  # m
_SEGMENT_CELL = 0.5  # m, over-segmentation cell size on each surface
_TALL = 1.8  # m, tops above this are mostly unseen by a hand-held scanner


@dataclass
class IndoorScene:
    """One generated room: the oracle the format writers serialise.

    Attributes:
        coord: (N, 3) float32 metres, z up, floor at z = 0.
        color: (N, 3) uint8 RGB.
        normal: (N, 3) float32 unit normals.
        semantic: (N,) int64 index into :data:`INDOOR_CLASSES`.
        instance: (N,) int64 object id 0..K-1 (every point belongs to one object).
        segment: (N,) int64 over-segmentation id (surface patches), each inside one instance.
        faces: (F, 3) int32 triangles over the vertices.
        instance_class: (K,) int64 class index of each object.
    """

    coord: np.ndarray
    color: np.ndarray
    normal: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    segment: np.ndarray
    faces: np.ndarray
    instance_class: np.ndarray


@dataclass
class _Wall:
    origin: np.ndarray  # (3,) corner at floor level
    along: np.ndarray  # (3,) unit direction along the wall
    length: float

    @property
    def inward(self) -> np.ndarray:
        return np.cross([0.0, 0.0, 1.0], self.along)

    @property
    def yaw(self) -> float:
        return float(np.arctan2(self.along[1], self.along[0]))


@dataclass
class _Footprint:
    """Oriented floor rectangle: centre (2,), yaw, half extents (2,)."""

    center: np.ndarray
    yaw: float
    half: np.ndarray

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = xy - self.center
        local = np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)
        return (np.abs(local) <= self.half + margin).all(axis=1)

    def corners(self) -> np.ndarray:
        signs = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)
        return self.center + (signs * self.half) @ yaw_matrix(self.yaw)[:2, :2].T


class _RoomLayout:
    """Builds the surfaces of one room and records what occludes what."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.size = np.array([rng.uniform(5.0, 8.0), rng.uniform(4.5, 7.0), rng.uniform(2.6, 3.2)])
        lx, ly, _ = self.size
        self.walls = [
            _Wall(np.array([0.0, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), lx),
            _Wall(np.array([lx, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), ly),
            _Wall(np.array([lx, ly, 0.0]), np.array([-1.0, 0.0, 0.0]), lx),
            _Wall(np.array([0.0, ly, 0.0]), np.array([0.0, -1.0, 0.0]), ly),
        ]
        self.builder = SurfaceBuilder()
        self.instance_class: list[int] = []
        self.wall_color = _WALL[rng.integers(len(_WALL))] * rng.uniform(0.95, 1.05)
        self.cutouts: list[tuple[int, float, float, float, float]] = []  # wall, a0, a1, z0, z1
        self.footprints: list[_Footprint] = []  # everything standing on the floor
        self.solid: list[_Footprint] = []  # floor under these is not seen
        self.tall_instances: set[int] = set()

    # -- bookkeeping -------------------------------------------------------------------------
    def new_instance(self, cls: str) -> int:
        self.instance_class.append(_CLS[cls])
        return len(self.instance_class) - 1

    def color(self, palette: np.ndarray) -> np.ndarray:
        return np.clip(palette[self.rng.integers(len(palette))] + self.rng.normal(0, 8, 3), 0, 255)

    def wall_free(self, wall: int, a0: float, a1: float, z0: float, z1: float, margin: float = 0.05) -> bool:
        if a0 < margin or a1 > self.walls[wall].length - margin:
            return False
        return all(w != wall or a1 + margin <= b0 or a0 - margin >= b1 or z1 <= c0 or z0 >= c1
                   for w, b0, b1, c0, c1 in self.cutouts)

    def floor_free(self, fp: _Footprint, margin: float = 0.05) -> bool:
        corners = fp.corners()
        if (corners < margin).any() or (corners > self.size[:2] - margin).any():
            return False
        for other in self.footprints:
            lo, hi = other.corners().min(0) - margin, other.corners().max(0) + margin
            if (corners.min(0) < hi).all() and (corners.max(0) > lo).all():
                return False
        return True

    def wall_rect(self, wall: int, a0: float, a1: float, z0: float, z1: float, off0: float,
                  off1: float, cls: str, instance: int, color, tag: str = "") -> None:
        """Rectangle from (a0, off0) to (a1, off1) along/away from ``wall``, z0..z1, facing the room."""
        w = self.walls[wall]
        origin = w.origin + a0 * w.along + off0 * w.inward + [0.0, 0.0, z0]
        self.builder.add_rect(origin, [0.0, 0.0, z1 - z0], (a1 - a0) * w.along + (off1 - off0) * w.inward,
                              _CLS[cls], instance, color, tag)

    def local_box(self, center_local, size, frame, cls: str, instance: int, color,
                  skip: tuple[str, ...] = ("-z",)) -> None:
        """Box given in an object frame ``(origin (3,), yaw)``."""
        origin, yaw = frame
        center = origin + yaw_matrix(yaw) @ np.asarray(center_local, float)
        self.builder.add_box(center, size, yaw, _CLS[cls], instance, color, skip)

    # -- structure -----------------------------------------------------------------------------
    def add_shell(self) -> None:
        lx, ly, h = self.size
        self.builder.add_rect([0, 0, 0], [lx, 0, 0], [0, ly, 0], _CLS["floor"], self.new_instance("floor"),
                              self.color(_FLOOR), "floor")
        self.builder.add_rect([0, 0, h], [0, ly, 0], [lx, 0, 0], _CLS["ceiling"], self.new_instance("ceiling"),
                              np.clip(self.wall_color * 1.05, 0, 255), "ceiling")
        for k, w in enumerate(self.walls):
            self.wall_rect(k, 0.0, w.length, 0.0, h, 0.0, 0.0, "wall", self.new_instance("wall"),
                           self.wall_color, f"wall{k}")

    def add_door(self) -> None:
        rng = self.rng
        wall = int(rng.integers(4))
        width, height = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
        a0 = rng.uniform(0.3, self.walls[wall].length - width - 0.3)
        color = self.color(_WOOD[[0, 1, 2, 3, 6]])
        inst = self.new_instance("door")
        self.wall_rect(wall, a0, a0 + width, 0.0, height, 0.02, 0.02, "door", inst, color)
        trim = np.clip(color * 0.8, 0, 255)
        for b0, b1 in ((a0 - 0.06, a0), (a0 + width, a0 + width + 0.06)):
            self.wall_rect(wall, b0, b1, 0.0, height + 0.06, 0.03, 0.03, "door", inst, trim)
        self.wall_rect(wall, a0 - 0.06, a0 + width + 0.06, height, height + 0.06, 0.03, 0.03, "door", inst, trim)
        self.cutouts.append((wall, a0 - 0.06, a0 + width + 0.06, 0.0, height + 0.06))
        w = self.walls[wall]
        center = w.origin + (a0 + width / 2) * w.along + 0.5 * w.inward
        self.footprints.append(_Footprint(center[:2], w.yaw, np.array([width / 2 + 0.1, 0.5])))

    def add_window(self, wall: int) -> bool:
        rng = self.rng
        width, sill = rng.uniform(0.9, 1.8), rng.uniform(0.8, 1.0)
        top = min(sill + rng.uniform(1.0, 1.4), self.size[2] - 0.25)
        a0 = rng.uniform(0.2, max(0.21, self.walls[wall].length - width - 0.2))
        if not self.wall_free(wall, a0 - 0.1, a0 + width + 0.1, sill - 0.1, top + 0.1):
            return False
        inst = self.new_instance("window")
        frame = self.color(_METAL[[0, 2]])
        self.wall_rect(wall, a0, a0 + width, sill, top, -0.06, -0.06, "window", inst, _GLASS, "glass")
        mid = a0 + width / 2
        for b0, b1 in ((a0, a0 + 0.05), (a0 + width - 0.05, a0 + width), (mid - 0.025, mid + 0.025)):
            self.wall_rect(wall, b0, b1, sill, top, -0.03, -0.03, "window", inst, frame)
        self.wall_rect(wall, a0 - 0.05, a0 + width + 0.05, sill - 0.03, sill, 0.0, 0.12, "window", inst, frame)
        self.cutouts.append((wall, a0, a0 + width, sill, top))
        if rng.random() < 0.5:
            self.add_curtain(wall, a0 + width + 0.05, top + 0.1)
        return True

    def add_curtain(self, wall: int, a0: float, top: float) -> None:
        """A pleated curtain hanging beside a window: zig-zag strips off the wall."""
        folds = int(self.rng.integers(4, 9))
        if not self.wall_free(wall, a0, a0 + 0.1 * folds, 0.0, top):
            return
        inst, color = self.new_instance("curtain"), self.color(_FABRIC)
        for i in range(folds):
            off0, off1 = (0.06, 0.12) if i % 2 == 0 else (0.12, 0.06)
            self.wall_rect(wall, a0 + 0.1 * i, a0 + 0.1 * (i + 1), 0.05, top, off0, off1, "curtain", inst, color)
        self.cutouts.append((wall, a0, a0 + 0.1 * folds, 0.0, top))

    def add_picture(self) -> bool:
        rng = self.rng
        wall = int(rng.integers(4))
        width, height = rng.uniform(0.4, 1.3), rng.uniform(0.3, 0.9)
        z0 = rng.uniform(1.1, min(1.7, self.size[2] - height - 0.2))
        a0 = rng.uniform(0.1, self.walls[wall].length - width - 0.1)
        if not self.wall_free(wall, a0, a0 + width, z0, z0 + height, margin=0.15):
            return False
        color = rng.uniform(0, 255, 3)
        while np.abs(color - self.wall_color).sum() < 150:
            color = rng.uniform(0, 255, 3)
        self.wall_rect(wall, a0, a0 + width, z0, z0 + height, 0.015, 0.015, "picture", self.new_instance("picture"),
                       color)
        self.cutouts.append((wall, a0, a0 + width, z0, z0 + height))
        return True

    def add_column(self) -> None:
        wall = int(self.rng.integers(4))
        width, depth = self.rng.uniform(0.3, 0.5), self.rng.uniform(0.2, 0.4)
        self.place_against_wall("column", np.array([width, depth, self.size[2]]), walls=(wall,), solid=True)

    def add_beam(self) -> None:
        lx, ly, h = self.size
        width, depth = self.rng.uniform(0.3, 0.5), self.rng.uniform(0.2, min(0.45, h - 2.35))
        along_x = bool(self.rng.random() < 0.5)
        pos = self.rng.uniform(1.0, (ly if along_x else lx) - 1.0)
        center = np.array([lx / 2, pos, h - depth / 2]) if along_x else np.array([pos, ly / 2, h - depth / 2])
        size = np.array([lx, width, depth]) if along_x else np.array([width, ly, depth])
        self.builder.add_box(center, size, 0.0, _CLS["beam"], self.new_instance("beam"), self.wall_color,
                             skip=("+z", "+x", "-x") if along_x else ("+z", "+y", "-y"))

    # -- furniture -----------------------------------------------------------------------------
    def place_against_wall(self, cls: str, size: np.ndarray, walls=(0, 1, 2, 3), solid: bool = True,
                           tries: int = 40) -> tuple[int, tuple[np.ndarray, float]] | None:
        """Find a free spot with the object's back (local -y) on a wall; return (instance, frame)."""
        for _ in range(tries):
            wall = int(self.rng.choice(walls))
            w = self.walls[wall]
            a0 = self.rng.uniform(0.05, max(0.06, w.length - size[0] - 0.05))
            if not self.wall_free(wall, a0, a0 + size[0], 0.0, size[2], margin=0.02):
                continue
            origin = w.origin + (a0 + size[0] / 2) * w.along + (size[1] / 2 + 0.01) * w.inward
            fp = _Footprint(origin[:2], w.yaw, size[:2] / 2)
            if not self.floor_free(fp, margin=0.0):
                continue
            self.footprints.append(fp)
            if solid:
                self.solid.append(fp)
                self.cutouts.append((wall, a0, a0 + size[0], 0.0, size[2]))
            inst = self.new_instance(cls)
            if cls != "column" and size[2] > _TALL:
                self.tall_instances.add(inst)
            if cls == "column":
                self.local_box([0, 0, size[2] / 2], size, (origin, w.yaw), cls, inst, self.wall_color,
                               skip=("-z", "+z", "-y"))
            return inst, (origin, w.yaw)
        return None

    def add_cabinet(self) -> None:
        size = np.array([self.rng.uniform(0.5, 1.2), self.rng.uniform(0.4, 0.6), self.rng.uniform(0.8, 2.0)])
        placed = self.place_against_wall("cabinet", size)
        if placed:
            inst, frame = placed
            self.local_box([0, 0, size[2] / 2], size, frame, "cabinet", inst, self.color(_WOOD), skip=("-z", "-y"))

    def add_bookshelf(self) -> None:
        w, d, h = self.rng.uniform(0.7, 1.4), self.rng.uniform(0.28, 0.4), self.rng.uniform(1.2, 2.2)
        placed = self.place_against_wall("bookshelf", np.array([w, d, h]))
        if not placed:
            return
        inst, frame = placed
        color, t = self.color(_WOOD), 0.03
        self.local_box([0, -d / 2 + t / 2, h / 2], [w, t, h], frame, "bookshelf", inst, color, skip=("-z", "-y"))
        for side in (-1, 1):
            self.local_box([side * (w - t) / 2, 0, h / 2], [t, d, h], frame, "bookshelf", inst, color)
        shelves = int(self.rng.integers(3, 6))
        for k in range(shelves + 1):
            z = t / 2 + k * (h - t) / shelves
            self.local_box([0, 0, z], [w - 2 * t, d - t, t], frame, "bookshelf", inst, color, skip=())
            if k < shelves:  # books: a row of boxes of random colours
                x = -w / 2 + t
                while x < w / 2 - t - 0.05:
                    bw = self.rng.uniform(0.02, 0.06)
                    bh = min(self.rng.uniform(0.15, 0.3), (h - t) / shelves - t - 0.02)
                    self.local_box([x + bw / 2, 0, z + t / 2 + bh / 2], [bw, d * 0.8, bh], frame, "bookshelf",
                                   inst, self.rng.uniform(20, 230, 3), skip=("-z", "-y"))
                    x += bw + self.rng.uniform(0, 0.02)

    def add_desk(self) -> tuple[np.ndarray, float] | None:
        w, d, h = self.rng.uniform(1.1, 1.6), self.rng.uniform(0.6, 0.8), self.rng.uniform(0.72, 0.78)
        placed = self.place_against_wall("desk", np.array([w, d, h]), solid=False)
        if not placed:
            return None
        inst, frame = placed
        color, t, ped = self.color(_WOOD), 0.03, self.rng.uniform(0.35, 0.45)
        side = float(self.rng.choice([-1.0, 1.0]))
        self.local_box([0, 0, h - t / 2], [w, d, t], frame, "desk", inst, color, skip=())
        self.local_box([side * (w - ped) / 2, 0, (h - t) / 2], [ped, d - 0.02, h - t], frame, "desk", inst, color,
                       skip=("-z", "+z"))
        self.local_box([-side * (w - t) / 2, 0, (h - t) / 2], [t, d - 0.02, h - t], frame, "desk", inst, color,
                       skip=("-z", "+z"))
        self.local_box([0, -d / 2 + 0.1, h / 2], [w - 2 * t, t, h / 2], frame, "desk", inst, color, skip=("+z",))
        origin, yaw = frame
        return origin + yaw_matrix(yaw) @ np.array([-side * 0.15, d / 2 + 0.3, 0.0]), yaw + np.pi

    def add_sofa(self) -> None:
        w, d = self.rng.uniform(1.5, 2.3), self.rng.uniform(0.8, 0.95)
        placed = self.place_against_wall("sofa", np.array([w, d, 0.85]))
        if not placed:
            return
        inst, frame = placed
        color, arm = self.color(_FABRIC), 0.18
        self.local_box([0, 0.05, 0.21], [w - 2 * arm, d - 0.1, 0.42], frame, "sofa", inst, color)
        self.local_box([0, -d / 2 + 0.1, 0.425], [w, 0.2, 0.85], frame, "sofa", inst, color, skip=("-z", "-y"))
        for side in (-1, 1):
            self.local_box([side * (w - arm) / 2, 0.05, 0.3], [arm, d - 0.1, 0.6], frame, "sofa", inst, color)

    def add_bed(self) -> None:
        w, length = self.rng.uniform(1.0, 1.8), self.rng.uniform(1.9, 2.1)
        placed = self.place_against_wall("bed", np.array([w, length, 1.0]))
        if not placed:
            return
        inst, frame = placed
        base, sheet = self.color(_FABRIC), self.color(_FABRIC)
        self.local_box([0, 0.03, 0.2], [w, length - 0.06, 0.4], frame, "bed", inst, base)
        self.local_box([0, 0.03, 0.475], [w - 0.04, length - 0.08, 0.15], frame, "bed", inst, sheet)
        self.local_box([0, -length / 2 + 0.03, 0.5], [w, 0.06, 1.0], frame, "bed", inst, base, skip=("-z", "-y"))

    def add_refrigerator(self) -> None:
        size = np.array([self.rng.uniform(0.6, 0.8), 0.7, self.rng.uniform(1.5, 1.9)])
        placed = self.place_against_wall("refrigerator", size)
        if placed:
            inst, frame = placed
            self.local_box([0, 0, size[2] / 2], size, frame, "refrigerator", inst, self.color(_METAL[[0, 2]]),
                           skip=("-z", "-y"))

    def add_small_furniture(self) -> None:
        size = self.rng.uniform([0.3, 0.3, 0.3], [0.7, 0.6, 1.0])
        placed = self.place_against_wall("otherfurniture", size)
        if placed:
            inst, frame = placed
            self.local_box([0, 0, size[2] / 2], size, frame, "otherfurniture", inst,
                           self.rng.uniform(30, 230, 3), skip=("-z", "-y"))

    def add_chair(self, origin: np.ndarray, yaw: float) -> None:
        """A chair whose seat centre is at ``origin`` (floor level), facing ``yaw`` (local +y)."""
        fp = _Footprint(origin[:2], yaw, np.array([0.25, 0.25]))
        if not self.floor_free(fp, margin=0.0):
            return
        self.footprints.append(fp)
        inst, frame = self.new_instance("chair"), (origin, yaw)
        color = self.color(_FABRIC if self.rng.random() < 0.6 else _WOOD)
        legs, s = self.color(_METAL), 0.45
        self.local_box([0, 0, 0.43], [s, s, 0.06], frame, "chair", inst, color, skip=())
        self.local_box([0, -s / 2 + 0.03, 0.7], [s, 0.05, 0.5], frame, "chair", inst, color, skip=("-z",))
        for x in (-1, 1):
            for y in (-1, 1):
                self.local_box([x * (s / 2 - 0.03), y * (s / 2 - 0.03), 0.2], [0.035, 0.035, 0.4], frame,
                               "chair", inst, legs, skip=("-z", "+z"))

    def add_table_with_chairs(self) -> bool:
        w, d, h = self.rng.uniform(1.2, 2.4), self.rng.uniform(0.7, 1.1), self.rng.uniform(0.72, 0.78)
        for _ in range(60):
            yaw = float(self.rng.choice([0.0, np.pi / 2]) + self.rng.normal(0, 0.05))
            center = np.array([*self.rng.uniform(1.0, self.size[:2] - 1.0), 0.0])
            fp = _Footprint(center[:2], yaw, np.array([w / 2, d / 2]))
            if self.floor_free(fp, margin=0.6):
                break
        else:
            return False
        inst, frame = self.new_instance("table"), (center, yaw)
        color, t = self.color(_WOOD), 0.04
        self.local_box([0, 0, h - t / 2], [w, d, t], frame, "table", inst, color, skip=())
        for x in (-1, 1):
            for y in (-1, 1):
                self.local_box([x * (w / 2 - 0.06), y * (d / 2 - 0.06), (h - t) / 2], [0.05, 0.05, h - t], frame,
                               "table", inst, color, skip=("-z", "+z"))
        rot = yaw_matrix(yaw)
        per_side = max(1, int(w // 0.6))
        for side in (-1, 1):
            for k in range(per_side):
                if self.rng.random() < 0.8:
                    x = (k + 0.5) * w / per_side - w / 2
                    seat = center + rot @ np.array([x, side * (d / 2 + 0.2), 0.0])
                    self.add_chair(seat, yaw + (0.0 if side < 0 else np.pi) + self.rng.normal(0, 0.15))
        self.footprints.append(fp)  # after the chairs, which tuck under the table top
        return True


def _build(rng: np.random.Generator) -> _RoomLayout:
    """Lay out one room: structure, openings, wall items and furniture."""
    room = _RoomLayout(rng)
    room.add_shell()
    room.add_door()
    windows = 0
    for _ in range(20):
        if windows >= max(1, int(rng.integers(1, 4))):
            break
        windows += room.add_window(int(rng.integers(4)))
    if rng.random() < 0.5:
        room.add_column()
    if rng.random() < 0.5:
        room.add_beam()
    desk_chair = room.add_desk()
    if desk_chair is not None:
        room.add_chair(*desk_chair)
    room.add_table_with_chairs()
    for add, probability in ((room.add_sofa, 1.0), (room.add_cabinet, 1.0), (room.add_bookshelf, 1.0),
                             (room.add_bed, 0.35), (room.add_refrigerator, 0.3), (room.add_cabinet, 0.5),
                             (room.add_bookshelf, 0.3)):
        if rng.random() < probability:
            add()
    for _ in range(int(rng.integers(0, 3))):
        room.add_small_furniture()
    pictures = 0
    for _ in range(30):
        if pictures >= int(rng.integers(1, 4)):
            break
        pictures += room.add_picture()
    return room


def _removed(room: _RoomLayout, sampled, rng: np.random.Generator) -> np.ndarray:
    """(N,) bool: vertices a real scan would miss (occlusion, holes, dropouts)."""
    rects = room.builder.rects
    tags = np.array([r.tag for r in rects])[sampled.rect]
    labels = np.array([r.label for r in rects])[sampled.rect]
    instances = np.array([r.instance for r in rects])[sampled.rect]
    removed = np.zeros(len(sampled.points), bool)
    for wall, a0, a1, z0, z1 in room.cutouts:  # wall uv = (z, a)
        on_wall = tags == f"wall{wall}"
        z, a = sampled.uv[:, 0], sampled.uv[:, 1]
        removed |= on_wall & (a > a0) & (a < a1) & (z > z0) & (z < z1)
    is_floor = labels == _CLS["floor"]
    for fp in room.solid:
        removed |= is_floor & fp.contains(sampled.points[:, :2], margin=-0.02)
    top = (tags == "+z") & np.isin(instances, list(room.tall_instances)) & (sampled.points[:, 2] > _TALL - 0.1)
    removed |= top & (rng.random(len(removed)) < 0.85)
    removed |= (tags == "glass") & (rng.random(len(removed)) < 0.7)
    for center in sampled.points[rng.integers(len(removed), size=int(rng.integers(4, 10)))]:
        removed |= np.linalg.norm(sampled.points - center, axis=1) < rng.uniform(0.1, 0.35)
    removed |= rng.random(len(removed)) < 0.02
    return removed


def _shade(room: _RoomLayout, sampled, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(M, 3) uint8 colours of the kept vertices: object colour x Lambert shading + noise."""
    base = np.stack([r.color for r in room.builder.rects])
    brightness = rng.uniform(0.93, 1.07, len(base))
    points, normals = sampled.points[keep], sampled.normals[keep]
    light = np.array([*room.size[:2] / 2, room.size[2] - 0.3]) + rng.normal(0, 0.5, 3)
    to_light = light - points
    dist = np.linalg.norm(to_light, axis=1, keepdims=True)
    lambert = np.abs((normals * to_light / dist).sum(1))
    shade = (0.55 + 0.45 * lambert) * (1.1 - 0.04 * dist[:, 0].clip(0, 5))
    rect = sampled.rect[keep]
    color = base[rect] * (brightness[rect] * shade)[:, None] + rng.normal(0, 6, (len(rect), 3))
    return np.clip(color, 0, 255).astype(np.uint8)


def _segments(sampled, keep: np.ndarray) -> np.ndarray:
    """(M,) int64 over-segmentation: ``_SEGMENT_CELL`` cells of each rectangle."""
    cells = np.floor(sampled.uv[keep] / _SEGMENT_CELL).astype(np.int64)
    key = (sampled.rect[keep] * 4096 + cells[:, 0]) * 4096 + cells[:, 1]
    return np.unique(key, return_inverse=True)[1].astype(np.int64)


def generate_room(seed: int | np.random.Generator, num_points: int = 120_000) -> IndoorScene:
    """Generate one room with about ``num_points`` points (exactly, unless occlusion removes more).

    Args:
        seed: integer seed or a numpy Generator; the same seed gives the same room.
        num_points: target point count (e.g. 50k-300k).
    """
    if num_points < 1000:
        raise ValueError(f"generate_room: num_points expected >= 1000, got {num_points}")
    rng = np.random.default_rng(seed)
    room = _build(rng)
    spacing = np.sqrt(room.builder.total_area() / num_points)
    for _ in range(2):  # the second pass corrects the density for what occlusion removes
        sampled = room.builder.sample(spacing, rng)
        keep = ~_removed(room, sampled, rng)
        spacing *= np.sqrt(keep.sum() / (1.03 * num_points))
    excess = int(keep.sum()) - num_points
    if excess > 0:
        keep[rng.choice(np.flatnonzero(keep), excess, replace=False)] = False
    rect = sampled.rect[keep]
    labels = np.array([r.label for r in room.builder.rects])
    instances = np.array([r.instance for r in room.builder.rects])
    normal = sampled.normals[keep]
    coord = sampled.points[keep] + normal * rng.normal(0, _NOISE_ALONG_NORMAL, (len(rect), 1))
    return IndoorScene(
        coord=coord.astype(np.float32),
        color=_shade(room, sampled, keep, rng),
        normal=normal.astype(np.float32),
        semantic=labels[rect].astype(np.int64),
        instance=instances[rect].astype(np.int64),
        segment=_segments(sampled, keep),
        faces=keep_faces(sampled.faces, keep),
        instance_class=np.array(room.instance_class, dtype=np.int64),
    )
