"""Synthetic streets seen by a spinning 64-beam LiDAR and a front camera.

A street runs along +x: a two-lane road, parking strips, raised sidewalks with a curb, terrain,
building facades (with window texture in the camera), fences, trees (trunk + crown), bushes,
poles, traffic signs, parked cars and trucks, and pedestrians. The sensor drives along the right
lane; each frame ray-casts one LiDAR sweep (vertical FOV +2 to -24.8 degrees, range noise,
dropouts, 80 m range) and renders the camera image by per-pixel ray casting with class colours,
Lambert shading and texture noise. Labels are raw SemanticKITTI ids; things carry instance ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .raycast import GROUND, MISS, Primitives, cast

__all__ = ["Street", "LidarSweep", "generate_street", "lidar_sweep", "render_camera", "render_camera_labels",
           "kitti_calibration", "image_size", "SENSOR_HEIGHT", "IMAGE_SIZE"]

SENSOR_HEIGHT = 1.73  # m, velodyne above the road
IMAGE_SIZE = (1241, 376)  # KITTI colour camera (width, height) at scale 1
_FOCAL, _CX, _CY, _BASELINE = 718.856, 607.1928, 185.2157, 0.06  # KITTI-like camera 2
_MAX_RANGE = 80.0
_ELEVATIONS = np.deg2rad(np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)]))

# raw SemanticKITTI ids
CAR, TRUCK, PERSON, ROAD, PARKING, SIDEWALK = 10, 18, 30, 40, 44, 48
BUILDING, FENCE, VEGETATION, TRUNK, TERRAIN, POLE, SIGN = 50, 51, 70, 71, 72, 80, 81

_GROUND_STYLE = {ROAD: ((80, 80, 85), 0.15), PARKING: ((110, 105, 100), 0.2), TERRAIN: ((110, 135, 65), 0.4)}
_BUILDING_COLORS = np.array([[180, 150, 120], [200, 190, 170], [150, 90, 70], [210, 210, 200], [120, 110, 100]], float)
_CAR_COLORS = np.array([[200, 30, 30], [30, 30, 30], [220, 220, 220], [40, 60, 150], [150, 150, 160], [90, 90, 60]],
                       float)
_SKY_TOP, _SKY_HORIZON = np.array([110, 160, 220.0]), np.array([200, 220, 240.0])
_SUN = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])


@dataclass
class Street:
    """One street: primitives (see :class:`~pcseg.data.synthetic.raycast.Primitives`) and ground zones.

    Attributes:
        prims: primitive column arrays.
        road_half: half width of the road, m; parking: width of the parking strips (0 = none), m.
        lane_y: y of the driving lane the sensor follows.
    """

    prims: dict
    road_half: float
    parking: float
    lane_y: float

    def ground_label(self, xy: np.ndarray) -> np.ndarray:
        """(N,) raw label of ground hits at ``xy`` (N, 2): road, parking or terrain."""
        ay = np.abs(xy[:, 1])
        return np.where(ay < self.road_half, ROAD, np.where(ay < self.road_half + self.parking, PARKING, TERRAIN))


@dataclass
class LidarSweep:
    """One sweep in the sensor frame (x forward, y left, z up; origin at the sensor).

    Attributes:
        points: (N, 3) float32; remission: (N,) float32 in [0, 1];
        label: (N,) uint32 raw SemanticKITTI semantic id; instance: (N,) uint32 (0 = none).
    """

    points: np.ndarray
    remission: np.ndarray
    label: np.ndarray
    instance: np.ndarray


class _StreetBuilder:
    def __init__(self, rng: np.random.Generator, length: float) -> None:
        self.rng, self.prims, self.next_instance = rng, Primitives(), 1
        self.x0, self.x1 = -_MAX_RANGE, length + _MAX_RANGE
        self.road_half = rng.uniform(3.5, 5.0)
        self.parking = rng.uniform(2.0, 2.5) if rng.random() < 0.7 else 0.0
        self.curb = self.road_half + self.parking
        self.walk = rng.uniform(2.0, 4.0)

    def instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def jitter(self, color, amount: float = 12) -> np.ndarray:
        return np.clip(np.asarray(color, float) + self.rng.normal(0, amount, 3), 0, 255)

    def xs(self, spacing: float) -> np.ndarray:
        """Random positions along the street with mean gap ``spacing``."""
        return np.cumsum(self.rng.exponential(spacing, int((self.x1 - self.x0) / spacing) + 1)) + self.x0

    def sidewalks(self) -> None:
        for side in (-1, 1):
            for x in np.arange(self.x0, self.x1, 20.0):  # 20 m slabs cull better than one long box
                y = side * (self.curb + self.walk / 2)
                self.prims.box([x + 10, y, 0.06], [20.0, self.walk, 0.12], SIDEWALK, 0,
                               self.jitter((170, 165, 160), 5), 0.28)

    def buildings_and_fences(self, side: int) -> None:
        x, setback = self.x0, self.curb + self.walk + self.rng.uniform(1.0, 5.0)
        while x < self.x1:
            width = self.rng.uniform(8.0, 25.0)
            if self.rng.random() < 0.75:
                depth, height = self.rng.uniform(8, 15), self.rng.uniform(6, 20)
                color = _BUILDING_COLORS[self.rng.integers(len(_BUILDING_COLORS))]
                self.prims.box([x + width / 2, side * (setback + depth / 2), height / 2], [width, depth, height],
                               BUILDING, 0, self.jitter(color), self.rng.uniform(0.15, 0.45))
            elif self.rng.random() < 0.6:
                height = self.rng.uniform(1.0, 2.0)
                self.prims.box([x + width / 2, side * setback, height / 2], [width, 0.06, height], FENCE, 0,
                               self.jitter((140, 120, 90)), 0.3)
            x += width + self.rng.uniform(0.0, 4.0)

    def vegetation(self, side: int) -> None:
        edge = self.curb + self.walk
        for x in self.xs(12.0):  # trees at the sidewalk's outer edge
            base = [x, side * (edge - 0.5), 0.12]
            trunk_h, crown = self.rng.uniform(2.0, 4.0), self.rng.uniform([1.3, 1.3, 1.2], [2.8, 2.8, 2.4])
            self.prims.cylinder(base, self.rng.uniform(0.1, 0.25), trunk_h, TRUNK, 0, self.jitter((90, 60, 35)), 0.25)
            self.prims.ellipsoid([x, base[1], 0.12 + trunk_h + 0.7 * crown[2]], crown, VEGETATION, 0,
                                 self.jitter((50, 110, 40), 15), self.rng.uniform(0.3, 0.45))
        for x in self.xs(6.0):  # bushes on the terrain behind the sidewalk
            radii = self.rng.uniform([0.4, 0.4, 0.3], [1.2, 1.0, 0.8])
            self.prims.ellipsoid([x, side * (edge + radii[1] + 0.2), 0.2 * radii[2]], radii, VEGETATION, 0,
                                 self.jitter((60, 120, 45), 15), self.rng.uniform(0.3, 0.45))

    def street_furniture(self, side: int) -> None:
        y = side * (self.curb + 0.4)
        for x in self.xs(25.0):
            height = self.rng.uniform(4.0, 8.0)
            self.prims.cylinder([x, y, 0.12], self.rng.uniform(0.08, 0.15), height, POLE, 0,
                                self.jitter((150, 150, 150)), 0.3)
        for x in self.xs(40.0):
            self.prims.cylinder([x, y, 0.12], 0.04, 2.2, POLE, 0, self.jitter((160, 160, 160)), 0.3)
            color = ((30, 80, 200), (200, 30, 30), (230, 200, 40))[self.rng.integers(3)]
            self.prims.box([x, y, 2.5], [0.04, 0.6, 0.6], SIGN, 0, self.jitter(color, 5), 0.9)
        for x in self.xs(15.0):
            self.person([x, side * (self.curb + self.rng.uniform(0.8, self.walk - 0.3)), 0.12])

    def person(self, base) -> None:
        inst, clothes = self.instance(), self.rng.uniform(20, 200, 3)
        x, y, z = base
        for dy in (-0.1, 0.1):
            self.prims.cylinder([x, y + dy, z], 0.07, 0.85, PERSON, inst, clothes * 0.6, 0.2)
        self.prims.ellipsoid([x, y, z + 1.2], [0.16, 0.24, 0.38], PERSON, inst, clothes, 0.25)
        self.prims.ellipsoid([x, y, z + 1.68], [0.1, 0.1, 0.12], PERSON, inst, (200, 160, 130), 0.2)

    def vehicle(self, x: float, y: float, truck: bool) -> None:
        rng = self.rng
        length, width = (rng.uniform(6.0, 9.0), 2.4) if truck else (rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9))
        body_h = rng.uniform(2.2, 3.0) if truck else 0.75
        yaw, label, inst = rng.normal(0, 0.03), TRUCK if truck else CAR, self.instance()
        color, remission = _CAR_COLORS[rng.integers(len(_CAR_COLORS))], rng.uniform(0.05, 0.7)
        cos, sin = np.cos(yaw), np.sin(yaw)

        def part(dx, dy, z, size, tint):
            self.prims.box([x + cos * dx - sin * dy, y + sin * dx + cos * dy, z], size, label, inst,
                           self.jitter(color * tint, 4), remission, yaw)

        part(0.0, 0.0, 0.3 + body_h / 2, [length, width, body_h], 1.0)
        if truck:
            part(length / 2 + 0.9, 0.0, 1.3, [1.8, width, 2.0], 0.8)
        else:
            part(-0.05 * length, 0.0, 1.3, [0.55 * length, 0.9 * width, 0.5], 0.35)
        for dx in (-1, 1):
            for dy in (-1, 1):
                part(dx * (length / 2 - 0.8), dy * (width / 2 - 0.1), 0.33, [0.66, 0.22, 0.66], 0.15)

    def vehicles(self, lane_y: float) -> None:
        for side in (-1, 1):
            if self.parking:
                for x in self.xs(9.0):
                    self.vehicle(x, side * (self.road_half + self.parking / 2), self.rng.random() < 0.1)
        for x in self.xs(30.0):  # oncoming lane, parked in traffic
            self.vehicle(x, -lane_y, self.rng.random() < 0.2)


def generate_street(seed: int | np.random.Generator, length: float = 100.0) -> Street:
    """Lay out a street whose driven part spans x in [0, ``length``] (objects extend 80 m beyond)."""
    rng = np.random.default_rng(seed)
    b = _StreetBuilder(rng, length)
    lane_y = -b.road_half / 2
    b.sidewalks()
    for side in (-1, 1):
        b.buildings_and_fences(side)
        b.vegetation(side)
        b.street_furniture(side)
    b.vehicles(lane_y)
    return Street(b.prims.arrays(), b.road_half, b.parking, lane_y)


def _hit_attributes(street: Street, points: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, ...]:
    """Raw label, instance, colour (N, 3) and remission of hits (``index`` >= 0 or ``GROUND``)."""
    prims, prim = street.prims, np.maximum(index, 0)
    ground = index == GROUND
    label = np.where(ground, street.ground_label(points[:, :2]), prims["label"][prim])
    instance = np.where(ground, 0, prims["instance"][prim])
    color, remission = prims["color"][prim], prims["remission"][prim]
    for zone, (zone_color, zone_remission) in _GROUND_STYLE.items():
        sel = ground & (label == zone)
        color[sel], remission[sel] = zone_color, zone_remission
    return label, instance, color, remission


def lidar_sweep(street: Street, x: float, rng: np.random.Generator, azimuth_steps: int = 2048) -> LidarSweep:
    """Ray-cast one 360-degree sweep of a 64-beam sensor at ``(x, lane_y, SENSOR_HEIGHT)``."""
    azimuth = np.linspace(np.pi, -np.pi, azimuth_steps, endpoint=False)
    az, el = np.meshgrid(azimuth, _ELEVATIONS, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    origin = np.array([x, street.lane_y, SENSOR_HEIGHT])
    hits = cast(origin, dirs, street.prims, _MAX_RANGE)
    keep = (hits.index != MISS) & (rng.random(len(dirs)) > 0.02)
    dirs, t, index, normal = dirs[keep], hits.t[keep], hits.index[keep], hits.normal[keep]
    t = t + rng.normal(0, 0.02, len(t))
    points = dirs * t[:, None]
    label, instance, _, remission = _hit_attributes(street, points + origin, index)
    incidence = np.abs((normal * dirs).sum(1))
    remission = np.clip(remission * (0.6 + 0.4 * incidence) + rng.normal(0, 0.03, len(t)), 0, 0.99)
    return LidarSweep(points.astype(np.float32), remission.astype(np.float32),
                      label.astype(np.uint32), instance.astype(np.uint32))


def kitti_calibration(image_scale: float = 1.0) -> dict[str, np.ndarray]:
    """KITTI-like ``P2`` (3, 4) and velodyne->camera ``Tr`` (4, 4), float64.

    ``Tr``: x_cam = -y_velo, y_cam = -z_velo, z_cam = x_velo, plus a small offset. ``P2`` is the
    camera-2 projection for an image of ``IMAGE_SIZE`` scaled by ``image_scale`` (pixel centres kept).
    """
    tr = np.eye(4)
    tr[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    tr[:3, 3] = [-0.004, -0.076, -0.272]
    f = _FOCAL * image_scale
    cx, cy = (_CX + 0.5) * image_scale - 0.5, (_CY + 0.5) * image_scale - 0.5
    p2 = np.array([[f, 0.0, cx, f * _BASELINE], [0.0, f, cy, 0.0], [0.0, 0.0, 1.0, 0.0]])
    return {"P2": p2, "Tr": tr}


def image_size(image_scale: float) -> tuple[int, int]:
    """(width, height) of the camera image at ``image_scale``."""
    return round(IMAGE_SIZE[0] * image_scale), round(IMAGE_SIZE[1] * image_scale)


def render_camera(street: Street, x: float, calib: dict[str, np.ndarray], size: tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
    """Render camera 2 of the sensor at ``x`` by ray casting: (H, W, 3) uint8.

    Pixel ``(u, v)`` sees along the ray that ``P2 @ Tr`` projects onto it, so LiDAR points
    projected with the same calibration land on the pixels that show their surface.
    """
    return render_camera_labels(street, x, calib, size, rng)[0]


def render_camera_labels(street: Street, x: float, calib: dict[str, np.ndarray], size: tuple[int, int],
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_camera` plus what each pixel shows.

    Returns:
        image (H, W, 3) uint8 and label (H, W) uint32: the raw SemanticKITTI id of the surface
        each pixel sees, 0 (``unlabeled``) where the ray hits nothing (sky).
    """
    width, height = size
    projection = calib["P2"] @ calib["Tr"]  # (3, 4): velodyne frame -> pixels
    m_inv = np.linalg.inv(projection[:, :3])
    center = -m_inv @ projection[:, 3] + [x, street.lane_y, SENSOR_HEIGHT]
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    dirs = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1) @ m_inv.T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    hits = cast(center, dirs, street.prims, 4 * _MAX_RANGE)
    hit = hits.index != MISS
    points = center + dirs * np.where(hit, hits.t, 0)[:, None]
    label, _, color, _ = _hit_attributes(street, points, hits.index)
    normal = np.where(((hits.normal * dirs).sum(1) > 0)[:, None], -hits.normal, hits.normal)
    light = 0.45 + 0.55 * np.clip(normal @ _SUN, 0, 1)
    cell = np.floor(points / 0.25).astype(np.int64) @ np.array([73856093, 19349663, 83492791])
    texture = 0.9 + 0.2 * ((cell % 1009) / 1009.0)
    facade = (label == BUILDING) & (np.mod(points[:, 0], 3.0) > 0.7) & (np.mod(points[:, 0], 3.0) < 2.2) \
        & (np.mod(points[:, 2], 3.2) > 1.0) & (np.mod(points[:, 2], 3.2) < 2.4)
    texture[facade] *= 0.45
    shaded = color * (light * texture)[:, None] + rng.normal(0, 5, (len(dirs), 3))
    sky = _SKY_HORIZON + (_SKY_TOP - _SKY_HORIZON) * np.clip(dirs[:, 2:3] * 3, 0, 1)
    image = np.where(hit[:, None], shaded, sky)
    label = np.where(hit, label, 0).astype(np.uint32).reshape(height, width)
    return np.clip(image, 0, 255).astype(np.uint8).reshape(height, width, 3), label
