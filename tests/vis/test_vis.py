"""pcseg.vis: palettes, PLY export and headless PNG rendering (either backend)."""
import importlib
import os
import warnings

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from pcseg.vis import (
    S3DIS13_PALETTE,
    SCANNET20_PALETTE,
    SEMANTICKITTI19_PALETTE,
    View,
    colorize,
    error_colors,
    generic_palette,
    get_palette,
    open3d_unavailable_reason,
    render,
    render_panels,
    save_ply,
)
from pcseg.vis.palette import ERROR_CORRECT_COLOR, ERROR_IGNORED_COLOR, ERROR_WRONG_COLOR, IGNORE_COLOR

render_module = importlib.import_module("pcseg.vis.render")  # the attribute pcseg.vis.render is the function
IGNORE = -100


def _room(n_per_part: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 3 m floor (label 1), two 2.5 m walls (0), a table-sized box (6), some ignored points."""
    rng = np.random.default_rng(seed)
    u = rng.random((4, n_per_part, 2))
    floor = np.c_[4 * u[0, :, 0], 3 * u[0, :, 1], np.zeros(n_per_part)]
    wall_x = np.c_[np.zeros(n_per_part), 3 * u[1, :, 0], 2.5 * u[1, :, 1]]
    wall_y = np.c_[4 * u[2, :, 0], np.full(n_per_part, 3.0), 2.5 * u[2, :, 1]]
    box = np.array([1.5, 1.0, 0.0]) + rng.random((n_per_part, 3)) * [1.0, 1.0, 0.8]
    clutter = np.c_[4 * u[3, :50, 0], 3 * u[3, :50, 1], np.full(50, 0.01)]
    points = np.concatenate([floor, wall_x, wall_y, box, clutter]).astype(np.float32)
    labels = np.repeat([1, 0, 0, 6, IGNORE], [n_per_part] * 4 + [50]).astype(np.int64)
    return points, labels


def _needs(backend: str) -> None:
    if backend == "matplotlib":
        pytest.importorskip("matplotlib")
    elif backend == "open3d" and open3d_unavailable_reason() is not None:
        pytest.skip(f"Open3D offscreen rendering unavailable: {open3d_unavailable_reason()}")
    elif backend == "auto" and open3d_unavailable_reason() is not None:
        pytest.importorskip("matplotlib")


def _foreground(path) -> np.ndarray:
    """(H, W) bool: pixels that are not the white background."""
    return (np.asarray(Image.open(path).convert("RGB")) < 250).any(axis=2)


# --- palettes ------------------------------------------------------------------------------------

def test_dataset_palettes_shapes():
    for palette, n in ((SCANNET20_PALETTE, 20), (S3DIS13_PALETTE, 13), (SEMANTICKITTI19_PALETTE, 19)):
        assert palette.shape == (n, 3) and palette.dtype == np.uint8
        assert len(np.unique(palette, axis=0)) == n
        assert not palette.flags.writeable
    assert get_palette("ScanNet") is SCANNET20_PALETTE
    with pytest.raises(KeyError, match="known: scannet, s3dis, semantickitti"):
        get_palette("nuscenes")


def test_colorize_hand_written_rows():
    labels = np.array([0, 2, IGNORE, 19, 1])
    expected = np.array([[174, 199, 232], [31, 119, 180], IGNORE_COLOR, [82, 84, 163], [152, 223, 138]])
    np.testing.assert_array_equal(colorize(labels, SCANNET20_PALETTE), expected)
    np.testing.assert_array_equal(colorize(np.array([18, 8]), SEMANTICKITTI19_PALETTE),
                                  [[255, 0, 0], [255, 0, 255]])
    np.testing.assert_array_equal(colorize(np.array([12, 0, -1]), S3DIS13_PALETTE, ignore_index=-1),
                                  [[50, 50, 50], [0, 255, 0], IGNORE_COLOR])
    assert colorize(labels, SCANNET20_PALETTE).dtype == np.uint8


def test_colorize_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"outside \[0, 13\).*e\.g\. 13"):
        colorize(np.array([0, 13]), S3DIS13_PALETTE)
    with pytest.raises(ValueError, match="integer labels"):
        colorize(np.array([0.0, 1.0]), S3DIS13_PALETTE)


def test_generic_palette_distinct_and_prefix_stable():
    big = generic_palette(40)
    assert big.shape == (40, 3) and big.dtype == np.uint8
    assert len(np.unique(big, axis=0)) == 40
    np.testing.assert_array_equal(generic_palette(7), big[:7])
    np.testing.assert_array_equal(colorize(np.array([3, 0])), generic_palette(4)[[3, 0]])


def test_error_colors_rows():
    pred = np.array([1, 2, 3, 4])
    target = np.array([1, 5, IGNORE, 4])
    np.testing.assert_array_equal(error_colors(pred, target),
                                  [ERROR_CORRECT_COLOR, ERROR_WRONG_COLOR, ERROR_IGNORED_COLOR, ERROR_CORRECT_COLOR])


# --- PLY -----------------------------------------------------------------------------------------

def test_save_ply_round_trip(tmp_path):
    points, labels = _room(200)
    colors = np.random.default_rng(1).integers(0, 256, (len(points), 3), dtype=np.uint8)
    path = save_ply(tmp_path / "out" / "scene.ply", points, colors=colors, labels=labels)
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue", "label"]
    assert v["x"].dtype == np.float32 and v["red"].dtype == np.uint8 and v["label"].dtype == np.int32
    np.testing.assert_array_equal(np.c_[v["x"], v["y"], v["z"]], points)
    np.testing.assert_array_equal(np.c_[v["red"], v["green"], v["blue"]], colors)
    np.testing.assert_array_equal(v["label"], labels)
    assert os.listdir(path.parent) == ["scene.ply"]  # the temporary file was renamed


def test_save_ply_colours_labels_with_palette(tmp_path):
    points, labels = _room(100)
    v = PlyData.read(str(save_ply(tmp_path / "s.ply", points, labels=labels, palette=SCANNET20_PALETTE)))["vertex"]
    np.testing.assert_array_equal(np.c_[v["red"], v["green"], v["blue"]], colorize(labels, SCANNET20_PALETTE))
    bare = PlyData.read(str(save_ply(tmp_path / "bare.ply", points)))["vertex"]
    assert [p.name for p in bare.properties] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="points but 3 colours"):
        save_ply(tmp_path / "bad.ply", points, colors=np.zeros((3, 3), np.uint8))
    assert not (tmp_path / "bad.ply").exists()


# --- rendering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["auto", "matplotlib"])
def test_render_writes_non_blank_png(tmp_path, backend):
    _needs(backend)
    points, labels = _room()
    path = tmp_path / "scene.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "auto" says so when it falls back
        used = render(points, labels, path, SCANNET20_PALETTE, width=320, height=240, backend=backend)
    assert used in ("open3d", "matplotlib") and (backend == "auto" or used == backend)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (240, 320, 3)
    colors = {tuple(c) for c in image.reshape(-1, 3)}
    for cls in (0, 1, 6):
        assert tuple(SCANNET20_PALETTE[cls]) in colors, f"class {cls} colour not drawn with {used}"
    ys, xs = np.nonzero(_foreground(path))
    assert xs.max() - xs.min() > 0.6 * 320 and ys.max() - ys.min() > 0.6 * 240  # camera fits the cloud


def test_backends_frame_the_cloud_alike(tmp_path):
    _needs("open3d")
    _needs("matplotlib")
    points, labels = _room()
    boxes = []
    for backend in ("open3d", "matplotlib"):
        render(points, labels, tmp_path / f"{backend}.png", width=320, height=240, backend=backend,
               view=View(azimuth=30.0, elevation=40.0))
        ys, xs = np.nonzero(_foreground(tmp_path / f"{backend}.png"))
        boxes.append(np.array([xs.min(), ys.min(), xs.max(), ys.max()]))
    assert np.abs(boxes[0] - boxes[1]).max() <= 4, boxes


def test_render_panels_layout(tmp_path):
    _needs("matplotlib")
    points, gt = _room(300)
    pred = gt.copy()
    pred[:100] = 6
    path = tmp_path / "panels.png"
    used = render_panels(points, [pred, gt, error_colors(pred, gt)], ["prediction", "ground truth", "errors"], path,
                         SCANNET20_PALETTE, width=200, height=150, backend="matplotlib")
    assert used == "matplotlib"
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (150 + 32, 3 * 200, 3)
    errors = image[32:, 400:]
    assert (errors == ERROR_WRONG_COLOR).all(axis=2).any() and (errors == ERROR_CORRECT_COLOR).all(axis=2).any()
    assert (image[:32] < 100).all(axis=2).any()  # dark title text
    with pytest.raises(ValueError, match="one title per panel"):
        render_panels(points, [pred, gt], ["prediction"], path, backend="matplotlib")


def test_fallback_when_open3d_is_forced_off(tmp_path, monkeypatch):
    _needs("matplotlib")
    points, labels = _room(300)
    monkeypatch.setattr(render_module, "open3d_unavailable_reason", lambda: "forced off by the test")
    with pytest.warns(RuntimeWarning, match="forced off by the test"):
        assert render(points, labels, tmp_path / "a.png", width=64, height=48) == "matplotlib"
    with pytest.raises(RuntimeError, match="forced off by the test"):
        render(points, labels, tmp_path / "b.png", backend="open3d")
    assert not (tmp_path / "b.png").exists()


def test_matplotlib_backend_skips_the_open3d_probe(tmp_path, monkeypatch):
    _needs("matplotlib")

    def no_probe() -> str:
        raise AssertionError("backend='matplotlib' must not probe Open3D")

    monkeypatch.setattr(render_module, "open3d_unavailable_reason", no_probe)
    points, labels = _room(300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert render(points, labels, tmp_path / "a.png", width=64, height=48, backend="matplotlib") == "matplotlib"


def test_render_checks_inputs(tmp_path):
    points, labels = _room(100)
    with pytest.raises(ValueError, match="backend 'vtk' unknown"):
        render(points, labels, tmp_path / "a.png", backend="vtk")
    with pytest.raises(ValueError, match=r"points expected \(N, 3\)"):
        render(points[:, :2], labels, tmp_path / "a.png")
    with pytest.raises(ValueError, match="colours or labels for"):
        render(points, labels[:-1], tmp_path / "a.png")
    with pytest.raises(ValueError, match="elevation"):
        View(elevation=0.0)


def test_probe_reports_why_open3d_cannot_render(monkeypatch):
    try:
        monkeypatch.setattr(render_module, "_PROBE_CODE", "import os; os.abort()")
        open3d_unavailable_reason.cache_clear()
        if render_module.importlib.util.find_spec("open3d") is not None:
            assert "killed by signal" in open3d_unavailable_reason()
        monkeypatch.setattr(render_module.importlib.util, "find_spec", lambda name: None)
        open3d_unavailable_reason.cache_clear()
        assert "open3d is not installed" in open3d_unavailable_reason()
    finally:
        open3d_unavailable_reason.cache_clear()
