import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pcseg.data.formats import S3DIS_CLASS_NAMES, S3DISReader, nyu40_to_scannet20
from pcseg.data.synthetic import INDOOR_CLASSES, generate_room, generate_street, lidar_sweep

NYU40 = np.array([c.nyu40 for c in INDOOR_CLASSES])
S3DIS_ID = np.array([S3DIS_CLASS_NAMES.index(c.s3dis) for c in INDOOR_CLASSES])
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rooms():
    return [generate_room(seed, num_points=60_000) for seed in range(3)]


def test_rooms_have_ten_classes_and_the_requested_point_count(rooms):
    for room in rooms:
        assert len(room.coord) == 60_000
        scannet20 = np.unique(nyu40_to_scannet20(NYU40[room.semantic])[0])
        assert len(scannet20[scannet20 >= 0]) >= 10
        assert len(np.unique(S3DIS_ID[room.semantic])) >= 10


def test_room_arrays_are_consistent(rooms):
    for room in rooms:
        n = len(room.coord)
        assert room.coord.dtype == np.float32 and room.color.dtype == np.uint8
        assert room.faces.min() >= 0 and room.faces.max() < n and len(room.faces) > n
        np.testing.assert_allclose(np.linalg.norm(room.normal, axis=1), 1, atol=1e-5)
        assert (room.instance_class[room.instance] == room.semantic).all()
        pairs = np.unique(np.c_[room.segment, room.instance], axis=0)
        assert len(pairs) == len(np.unique(room.segment))  # each segment lies in one instance
        assert room.coord[:, 2].min() > -0.05  # nothing below the floor


def test_room_generation_is_deterministic_and_seed_dependent():
    a, b, c = generate_room(7, 20_000), generate_room(7, 20_000), generate_room(8, 20_000)
    for field in ("coord", "color", "semantic", "instance", "segment", "faces"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.coord.shape != c.coord.shape or not np.array_equal(a.coord, c.coord)


def test_room_point_count_is_a_parameter():
    assert len(generate_room(3, 200_000).coord) == 200_000
    with pytest.raises(ValueError, match="num_points expected >= 1000, got 10"):
        generate_room(3, 10)


def test_lidar_sweep_geometry_and_labels():
    street = generate_street(5, length=20.0)
    sweep = lidar_sweep(street, 5.0, np.random.default_rng(0), azimuth_steps=1024)
    again = lidar_sweep(street, 5.0, np.random.default_rng(0), azimuth_steps=1024)
    np.testing.assert_array_equal(sweep.points, again.points)
    assert 30_000 < len(sweep.points) <= 1024 * 64
    distance = np.linalg.norm(sweep.points, axis=1)
    assert distance.max() < 80.2
    elevation = np.degrees(np.arcsin((sweep.points[:, 2]) / distance))
    assert elevation.max() < 2.5 and elevation.min() > -25.5
    assert {40, 48, 50, 70, 10}.issubset(set(np.unique(sweep.label).tolist()))
    things = np.isin(sweep.label, [10, 18, 30])
    assert (sweep.instance[things] > 0).all() and (sweep.instance[~things] == 0).all()
    assert ((sweep.remission >= 0) & (sweep.remission < 1)).all()


def test_make_synthetic_tool_writes_a_readable_dataset(tmp_path):
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "tools" / "make_synthetic.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(["--kind", "s3dis", "--out", str(tmp_path), "--scenes", "2", "--seed", "3", "--points", "5000",
               "--areas", "1,5"])
    assert S3DISReader(tmp_path, "val").scenes == ["Area_5/office_1"]
    assert (tmp_path / "Area_1" / "office_1" / "office_1.txt").is_file()
