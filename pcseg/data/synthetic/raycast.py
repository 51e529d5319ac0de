"""Vectorised ray casting against analytic primitives and the ground plane z = 0.

Primitives are boxes rotated about +z, vertical capped cylinders and axis-aligned ellipsoids. A cast
first pairs each primitive with the rays that can meet its bounding sphere (rays sorted by
azimuth, then a cone test), then intersects those (ray, primitive) pairs exactly and keeps the
nearest hit per ray.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["BOX", "CYLINDER", "ELLIPSOID", "GROUND", "MISS", "Primitives", "Hits", "cast"]

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
GROUND, MISS = -2, -1  # hit indices that are not primitives
_EPS = 1e-4


@dataclass
class Primitives:
    """A growing list of primitives with per-primitive attributes.

    After :meth:`arrays`, ``kind`` (P,) int, ``center`` (P, 3), ``half`` (P, 3) (box half sizes;
    cylinder radius, radius, half height; ellipsoid radii), ``yaw`` (P,), ``label`` (P,) int,
    ``instance`` (P,) int, ``color`` (P, 3) float, ``remission`` (P,) float.
    """

    rows: list[tuple] = field(default_factory=list)

    def add(self, kind: int, center, half, label: int, instance: int, color, remission: float,
            yaw: float = 0.0) -> None:
        self.rows.append((kind, np.asarray(center, float), np.asarray(half, float), yaw, label, instance,
                          np.asarray(color, float), remission))

    def box(self, center, size, label: int, instance: int, color, remission: float, yaw: float = 0.0) -> None:
        """Box of full ``size`` (3,) rotated by ``yaw`` about +z."""
        self.add(BOX, center, np.asarray(size, float) / 2, label, instance, color, remission, yaw)

    def cylinder(self, base, radius: float, height: float, label: int, instance: int, color,
                 remission: float) -> None:
        """Vertical cylinder standing on ``base`` (3,)."""
        center = np.asarray(base, float) + [0.0, 0.0, height / 2]
        self.add(CYLINDER, center, [radius, radius, height / 2], label, instance, color, remission)

    def ellipsoid(self, center, radii, label: int, instance: int, color, remission: float) -> None:
        self.add(ELLIPSOID, center, radii, label, instance, color, remission)

    def arrays(self) -> dict[str, np.ndarray]:
        """Column arrays of all primitives (see class docstring)."""
        names = ("kind", "center", "half", "yaw", "label", "instance", "color", "remission")
        return {n: np.array([row[i] for row in self.rows]) for i, n in enumerate(names)}


@dataclass
class Hits:
    """Nearest hit of each ray.

    Attributes:
        t: (R,) float64 distance along the unit ray; inf where missed.
        index: (R,) int64 primitive index, ``GROUND`` or ``MISS``.
        normal: (R, 3) float64 unit surface normal (zero where missed).
    """

    t: np.ndarray
    index: np.ndarray
    normal: np.ndarray


def _rotate_z(v: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each row of ``v`` (K, 3) about +z by the angle with the given (K,) cosine and sine."""
    return np.stack([cos * v[:, 0] - sin * v[:, 1], sin * v[:, 0] + cos * v[:, 1], v[:, 2]], 1)


# Pairwise intersections: origin o (3,), unit directions d (K, 3), primitive centres c (K, 3),
# half sizes h (K, 3) and yaws (K,) -> distance t (K,) (inf where missed) and unit normal (K, 3).

def _box(o, d, c, h, yaw):
    cos, sin = np.cos(yaw), np.sin(yaw)
    lo, ld = _rotate_z(o - c, cos, -sin), _rotate_z(d, cos, -sin)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-h - lo) / ld, (h - lo) / ld
    near, far = np.fmin(t1, t2), np.fmax(t1, t2)
    t_near, t_far = near.max(1), far.min(1)
    ok = (t_far >= t_near) & (t_near > _EPS)
    axis = near.argmax(1)
    n_local = np.zeros_like(lo)
    rows = np.arange(len(lo))
    n_local[rows, axis] = -np.sign(ld[rows, axis])
    return np.where(ok, t_near, np.inf), _rotate_z(n_local, cos, sin)


def _cylinder(o, d, c, h, yaw):
    rel = o - c
    r, hh = h[:, 0], h[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (rel[:, 0] * d[:, 0] + rel[:, 1] * d[:, 1])
    disc = b * b - 4 * a * (rel[:, 0] ** 2 + rel[:, 1] ** 2 - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        t_top = (hh - rel[:, 2]) / d[:, 2]
    side_ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(rel[:, 2] + t_side * d[:, 2]) <= hh)
    top_xy = rel[:, :2] + t_top[:, None] * d[:, :2]
    top_ok = (d[:, 2] < 0) & (t_top > _EPS) & ((top_xy ** 2).sum(1) <= r * r)
    t_side, t_top = np.where(side_ok, t_side, np.inf), np.where(top_ok, t_top, np.inf)
    side_xy = rel[:, :2] + np.where(np.isfinite(t_side), t_side, 0)[:, None] * d[:, :2]
    normal = np.concatenate([side_xy / r[:, None], np.zeros((len(r), 1))], 1)
    use_top = t_top < t_side
    normal[use_top] = [0.0, 0.0, 1.0]
    return np.minimum(t_side, t_top), normal


def _ellipsoid(o, d, c, h, yaw):
    lo, ld = (o - c) / h, d / h
    a, b, cc = (ld * ld).sum(1), 2 * (lo * ld).sum(1), (lo * lo).sum(1) - 1
    disc = b * b - 4 * a * cc
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    ok = (disc >= 0) & (t > _EPS)
    normal = (lo + t[:, None] * ld) / h
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return np.where(ok, t, np.inf), normal


_INTERSECT = {BOX: _box, CYLINDER: _cylinder, ELLIPSOID: _ellipsoid}


def _azimuth_ranges(azimuth: float, half: float) -> list[tuple[float, float]]:
    """``[azimuth - half, azimuth + half]`` split where it wraps around +-pi."""
    lo, hi = azimuth - half, azimuth + half
    if lo < -np.pi:
        return [(lo + 2 * np.pi, np.pi), (-np.pi, hi)]
    if hi > np.pi:
        return [(lo, np.pi), (-np.pi, hi - 2 * np.pi)]
    return [(lo, hi)]


def _candidates(origin: np.ndarray, dirs: np.ndarray, prims: dict, max_t: float) -> tuple[np.ndarray, np.ndarray]:
    """(ray, primitive) index pairs whose ray meets the primitive's bounding sphere.

    Rays are sorted by azimuth once; each primitive looks only at the rays inside its azimuth
    interval, then keeps those inside its bounding cone.
    """
    to_center = prims["center"] - origin
    dist = np.linalg.norm(to_center, axis=1)
    radius = np.linalg.norm(prims["half"], axis=1)
    dist_xy = np.linalg.norm(to_center[:, :2], axis=1)
    azimuth = np.arctan2(dirs[:, 1], dirs[:, 0])
    order = np.argsort(azimuth)
    sorted_azimuth = azimuth[order]
    everything = np.arange(len(dirs))
    rays, prim_ids = [], []
    for p in np.flatnonzero(dist - radius <= max_t):
        if dist[p] <= radius[p]:  # origin inside the bounding sphere: every ray
            idx = everything
        else:
            idx = everything
            if dist_xy[p] > radius[p]:  # the sphere spans an azimuth interval
                center_azimuth = np.arctan2(to_center[p, 1], to_center[p, 0])
                ranges = _azimuth_ranges(center_azimuth, np.arcsin(radius[p] / dist_xy[p]))
                bounds = [(np.searchsorted(sorted_azimuth, lo), np.searchsorted(sorted_azimuth, hi, "right"))
                          for lo, hi in ranges]
                idx = np.concatenate([order[a:b] for a, b in bounds])
            cos_limit = np.sqrt(1 - (radius[p] / dist[p]) ** 2)
            idx = idx[dirs[idx] @ (to_center[p] / dist[p]) >= cos_limit - 1e-9]
        rays.append(idx)
        prim_ids.append(np.full(len(idx), p))
    if not rays:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rays), np.concatenate(prim_ids)


def cast(origin: np.ndarray, dirs: np.ndarray, prims: dict, max_t: float) -> Hits:
    """Nearest hit of rays from one ``origin`` (3,) along unit ``dirs`` (R, 3) up to ``max_t``.

    ``prims`` is :meth:`Primitives.arrays`; the ground plane z = 0 is always present.
    """
    origin = np.asarray(origin, float)
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
    best_t = np.where(t_ground <= max_t, t_ground, np.inf)
    index = np.where(np.isfinite(best_t), GROUND, MISS)
    normal = np.zeros((len(dirs), 3))
    normal[index == GROUND] = [0.0, 0.0, 1.0]
    ray, prim = _candidates(origin, dirs, prims, max_t)
    results = []
    for kind, intersect in _INTERSECT.items():
        sel = prims["kind"][prim] == kind
        r, p = ray[sel], prim[sel]
        t, nrm = intersect(origin, dirs[r], prims["center"][p], prims["half"][p], prims["yaw"][p])
        hit = t <= max_t
        results.append((r[hit], p[hit], t[hit], nrm[hit]))
        np.minimum.at(best_t, r[hit], t[hit])
    for r, p, t, nrm in results:
        win = t == best_t[r]
        index[r[win]], normal[r[win]] = p[win], nrm[win]
    return Hits(best_t, index, normal)
