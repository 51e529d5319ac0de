"""Points with NaN/inf colours or remission: dropped on load, counted, warned about with the file named.

Each reader is given a file built by hand in the real on-disk layout (a ScanNet PLY with float
colours, an S3DIS annotation text file, a KITTI velodyne .bin); the expected arrays are written out
by hand. A budget made before such a point appeared is refused, since its indices would shift.
"""
import json
import re
import warnings

import numpy as np
import pytest
from plyfile import PlyData, PlyElement

from pcseg.data.budget import make_budget
from pcseg.data.datasets import SegmentationDataset
from pcseg.data.formats import IGNORE_INDEX, S3DISReader, ScanNetReader, SemanticKITTIReader
from pcseg.data.formats._common import drop_nonfinite
from pcseg.utils.errors import InputError

NAN, INF = float("nan"), float("inf")
# six vertices: NYU40 labels wall, floor, chair, cabinet, otherfurniture, unannotated
SCANNET_XYZ = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], np.float32)
SCANNET_NYU40 = np.array([1, 2, 5, 3, 39, 0], np.uint16)
SCANNET_TRAIN_IDS = np.array([0, 1, 4, 2, 19, IGNORE_INDEX])  # ScanNet-20 ids of SCANNET_NYU40, by hand


def _write_scannet_room(root, rgb: np.ndarray) -> str:
    """``root`` holding one ScanNet train scene: mesh (float32 colours ``rgb`` (6, 3)), label mesh,
    over-segmentation and aggregation (vertices 0-2 object 7, 3-5 object 9). Returns the mesh path."""
    folder = root / "scans" / "scene0000_00"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "scannetv2_train.txt").write_text("scene0000_00\n")
    faces = np.array([([0, 1, 2],), ([1, 3, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    mesh = np.empty(6, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                              ("red", "<f4"), ("green", "<f4"), ("blue", "<f4")])
    for i, axis in enumerate("xyz"):
        mesh[axis] = SCANNET_XYZ[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        mesh[channel] = rgb[:, i]
    PlyData([PlyElement.describe(mesh, "vertex"), PlyElement.describe(faces, "face")],
            text=False).write(str(folder / "scene0000_00_vh_clean_2.ply"))
    labels = np.empty(6, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u2")])
    for i, axis in enumerate("xyz"):
        labels[axis] = SCANNET_XYZ[:, i]
    labels["label"] = SCANNET_NYU40
    PlyData([PlyElement.describe(labels, "vertex"), PlyElement.describe(faces, "face")],
            text=False).write(str(folder / "scene0000_00_vh_clean_2.labels.ply"))
    (folder / "scene0000_00_vh_clean_2.0.010000.segs.json").write_text(
        json.dumps({"sceneId": "scene0000_00", "segIndices": [4, 4, 4, 8, 8, 8]}))
    (folder / "scene0000_00.aggregation.json").write_text(json.dumps({"sceneId": "scene0000_00", "segGroups": [
        {"id": 0, "objectId": 7, "segments": [4], "label": "chair"},
        {"id": 1, "objectId": 9, "segments": [8], "label": "cabinet"}]}))
    return str(folder / "scene0000_00_vh_clean_2.ply")


def _load(reader, name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = reader.load(name)
    return scene, [str(w.message) for w in caught]


def test_scannet_nan_and_inf_colours_are_dropped_with_their_labels_and_counted(tmp_path):
    rgb = np.array([[10, 20, 30], [40, 50, 60], [NAN, 1, 2], [70, 80, 90], [3, 4, INF], [100, 110, 120]], np.float32)
    mesh = _write_scannet_room(tmp_path, rgb)
    reader = ScanNetReader(tmp_path, "train")
    scene, messages = _load(reader, "scene0000_00")
    assert f"{mesh}: dropped 2 of 6 points with non-finite colours (2 points); first at point 2" in messages
    keep = [0, 1, 3, 5]
    np.testing.assert_array_equal(scene["coord"], SCANNET_XYZ[keep])
    np.testing.assert_array_equal(scene["color"], [[10, 20, 30], [40, 50, 60], [70, 80, 90], [100, 110, 120]])
    np.testing.assert_array_equal(scene["segment"], SCANNET_TRAIN_IDS[keep])  # wall, floor, cabinet, ignore
    np.testing.assert_array_equal(scene["instance"], [7, 7, 9, 9])
    assert reader.reports["scene0000_00"].nonfinite_points == 2


def test_s3dis_nan_colour_and_coordinate_lines_are_dropped_and_counted(tmp_path):
    folder = tmp_path / "Area_1" / "office_1" / "Annotations"
    folder.mkdir(parents=True)
    (folder / "chair_1.txt").write_text("1 2 3 10 20 30\n4 5 6 nan 20 30\n7 8 9 40 50 60\n")
    (folder / "table_1.txt").write_text("1 1 nan 1 1 1\n2 2 2 -inf 5 5\n3 3 3 70 80 90\n")
    reader = S3DISReader(tmp_path, "train")
    scene, messages = _load(reader, "Area_1/office_1")
    expected = (f"{tmp_path / 'Area_1' / 'office_1'}: dropped 3 of 6 points with non-finite coordinates (1 point), "
                f"colours (2 points); first at point 1")
    assert expected in messages, messages
    np.testing.assert_array_equal(scene["coord"], [[1, 2, 3], [7, 8, 9], [3, 3, 3]])
    np.testing.assert_array_equal(scene["color"], [[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    chair, table = 8, 7  # S3DIS class ids, by hand
    np.testing.assert_array_equal(scene["segment"], [chair, chair, table])
    np.testing.assert_array_equal(scene["instance"], [0, 0, 1])
    assert reader.reports["Area_1/office_1"].nonfinite_points == 3


def test_kitti_nan_remission_is_dropped_with_its_label_and_counted(tmp_path):
    folder = tmp_path / "sequences" / "08"
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    scan = np.array([[1, 0, 0, 0.5], [2, 0, 0, NAN], [3, 0, 0, 0.25], [4, 0, 0, INF]], "<f4")
    scan.tofile(folder / "velodyne" / "000000.bin")
    np.array([10, 40, 50 | (3 << 16), 70], "<u4").tofile(folder / "labels" / "000000.label")  # car road building veg.
    reader = SemanticKITTIReader(tmp_path, "val")
    scene, messages = _load(reader, "08/000000")
    source = folder / "velodyne" / "000000.bin"
    assert f"{source}: dropped 2 of 4 points with non-finite remission (2 points); first at point 1" in messages
    np.testing.assert_array_equal(scene["coord"], [[1, 0, 0], [3, 0, 0]])
    np.testing.assert_array_equal(scene["strength"], [[0.5], [0.25]])
    np.testing.assert_array_equal(scene["segment"], [0, 12])  # car, building (train ids 1, 13 minus one)
    np.testing.assert_array_equal(scene["instance"], [-1, 50 | (3 << 16)])
    assert reader.reports["08/000000"].nonfinite_points == 2


def test_float_values_that_overflow_float32_and_float_labels_count_as_nonfinite():
    scene = {"coord": np.zeros((4, 3)), "color": np.array([[1, 2, 3], [1e39, 0, 0], [4, 5, 6], [7, 8, 9]]),
             "segment": np.array([0.0, 1.0, NAN, 3.0]), "instance": np.array([5, 6, 7, 8])}
    with pytest.warns(UserWarning, match=re.escape("s.txt: dropped 2 of 4 points with non-finite colours (1 point), "
                                                   "'segment' values (1 point); first at point 1")):
        assert drop_nonfinite(scene, "s.txt") == 2
    np.testing.assert_array_equal(scene["color"], [[1, 2, 3], [7, 8, 9]])
    np.testing.assert_array_equal(scene["segment"], [0.0, 3.0])
    np.testing.assert_array_equal(scene["instance"], [5, 8])
    clean = {"coord": np.zeros((2, 3), np.float32), "color": np.full((2, 3), 255.0), "segment": np.array([1, 2])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert drop_nonfinite(clean, "c.txt") == 0


def test_a_budget_whose_points_the_reader_now_drops_is_refused(tmp_path):
    rgb = np.tile(np.float32([10, 20, 30]), (6, 1))
    _write_scannet_room(tmp_path / "data", rgb)
    make_budget(ScanNetReader(tmp_path / "data", "train"), "points_per_scene", 3, seed=0, out_dir=tmp_path / "b")
    rgb[1, 0] = NAN  # the colour of point 1 becomes NaN: every later index would move down by one
    _write_scannet_room(tmp_path / "data", rgb)
    dataset = SegmentationDataset(ScanNetReader(tmp_path / "data", "train"), voxel_size=0.1, budget=tmp_path / "b")
    with pytest.warns(UserWarning, match="dropped 1 of 6 points with non-finite colours"), \
            pytest.raises(InputError, match=re.escape(f"{tmp_path / 'b' / 'manifest.json'}: scene 'scene0000_00': "
                                                      "the budget was made for 6 points, the data has 5")):
        dataset.load_scene(0)
