"""Planar rectangles sampled like a scanned mesh: jittered vertex grids with triangle faces.

A rectangle is ``origin + s * u + t * v`` for ``s, t`` in [0, 1]; its normal is ``u x v``
normalised, so builders choose ``u, v`` to make the normal face the visible side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Box faces in the box's local frame (centre at 0, unit half-sizes): origin, u, v with u x v outward.
_BOX_FACES = {
    "+z": ((-1, -1, 1), (2, 0, 0), (0, 2, 0)),
    "-z": ((-1, -1, -1), (0, 2, 0), (2, 0, 0)),
    "+x": ((1, -1, -1), (0, 2, 0), (0, 0, 2)),
    "-x": ((-1, -1, -1), (0, 0, 2), (0, 2, 0)),
    "+y": ((-1, 1, -1), (0, 0, 2), (2, 0, 0)),
    "-y": ((-1, -1, -1), (2, 0, 0), (0, 0, 2)),
}


def yaw_matrix(yaw: float) -> np.ndarray:
    """(3, 3) rotation about +z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass
class Rect:
    """One sampled surface: geometry plus what it belongs to.

    ``tag`` is free per-rect metadata for the builder (e.g. which wall, which box face).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    label: int
    instance: int
    color: np.ndarray
    tag: str = ""


@dataclass
class SampledSurfaces:
    """Vertices sampled on a list of :class:`Rect`.

    Attributes:
        points: (N, 3) float64 positions (noise-free).
        normals: (N, 3) float64 unit normals.
        uv: (N, 2) float64 position inside the rectangle in metres along u and v.
        rect: (N,) int64 index of the rectangle of each vertex.
        faces: (F, 3) int64 vertex indices of triangles over each rectangle's grid.
    """

    points: np.ndarray
    normals: np.ndarray
    uv: np.ndarray
    rect: np.ndarray
    faces: np.ndarray


@dataclass
class SurfaceBuilder:
    """Collects rectangles and boxes, then samples them at a given vertex spacing."""

    rects: list[Rect] = field(default_factory=list)

    def add_rect(self, origin, u, v, label: int, instance: int, color, tag: str = "") -> None:
        """Add the rectangle ``origin + s u + t v`` (all (3,) metres); normal is ``u x v``."""
        self.rects.append(
            Rect(np.asarray(origin, float), np.asarray(u, float), np.asarray(v, float), label, instance,
                 np.asarray(color, float), tag)
        )

    def add_box(self, center, size, yaw: float, label: int, instance: int, color,
                skip: tuple[str, ...] = ()) -> None:
        """Add the faces of a box rotated by ``yaw`` about +z, except those named in ``skip``.

        Args:
            center: (3,) box centre; size: (3,) full extents along the box's local x, y, z.
            skip: face names among ``+x -x +y -y +z -z`` (local frame) left out, e.g. the bottom.
        """
        rot = yaw_matrix(yaw) * (np.asarray(size, float) / 2.0)
        for name, (o, u, v) in _BOX_FACES.items():
            if name not in skip:
                self.add_rect(center + rot @ np.array(o, float), rot @ np.array(u, float),
                              rot @ np.array(v, float), label, instance, color, tag=name)

    def total_area(self) -> float:
        """Summed area of all rectangles, m^2."""
        return float(sum(np.linalg.norm(np.cross(r.u, r.v)) for r in self.rects))

    def sample(self, spacing: float, rng: np.random.Generator) -> SampledSurfaces:
        """Sample every rectangle on a grid of step ~``spacing`` metres, jittered by a quarter step."""
        points, normals, uvs, rect_ids, faces = [], [], [], [], []
        offset = 0
        for index, r in enumerate(self.rects):
            len_u, len_v = np.linalg.norm(r.u), np.linalg.norm(r.v)
            nu = max(2, int(np.ceil(len_u / spacing)) + 1)
            nv = max(2, int(np.ceil(len_v / spacing)) + 1)
            s, t = np.meshgrid(np.linspace(0, 1, nu), np.linspace(0, 1, nv), indexing="ij")
            s = np.clip(s + rng.uniform(-0.25, 0.25, s.shape) / (nu - 1), 0, 1).ravel()
            t = np.clip(t + rng.uniform(-0.25, 0.25, t.shape) / (nv - 1), 0, 1).ravel()
            points.append(r.origin + s[:, None] * r.u + t[:, None] * r.v)
            normal = np.cross(r.u, r.v)
            normals.append(np.broadcast_to(normal / np.linalg.norm(normal), (s.size, 3)))
            uvs.append(np.stack([s * len_u, t * len_v], axis=1))
            rect_ids.append(np.full(s.size, index))
            faces.append(offset + _grid_faces(nu, nv))
            offset += s.size
        return SampledSurfaces(
            np.concatenate(points), np.concatenate(normals), np.concatenate(uvs),
            np.concatenate(rect_ids), np.concatenate(faces),
        )


def _grid_faces(nu: int, nv: int) -> np.ndarray:
    """(2 (nu-1) (nv-1), 3) triangles over an ``nu x nv`` vertex grid stored row-major in u."""
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    v00 = (i * nv + j).ravel()
    v10, v01, v11 = v00 + nv, v00 + 1, v00 + nv + 1
    return np.concatenate([np.stack([v00, v10, v11], 1), np.stack([v00, v11, v01], 1)])


def keep_faces(faces: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Faces whose three vertices are all kept, re-indexed into the kept vertices.

    Args:
        faces: (F, 3) int vertex indices; keep: (N,) bool.

    Returns:
        (F', 3) int32.
    """
    new_index = np.cumsum(keep) - 1
    whole = keep[faces].all(axis=1)
    return new_index[faces[whole]].astype(np.int32)
