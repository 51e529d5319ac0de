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
    legend_entries,
    open3d_unavailable_reason,
    render,
    render_panels,
    save_ply,
)
from pcseg.data.formats import S3DIS_CLASS_NAMES, SCANNET20_CLASS_NAMES, SCANNET20_NYU40_IDS
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


# create_color_palette() of the ScanNet repository's BenchmarkScripts/util.py: RGB per NYU40 id 0..40
SCANNET_NYU40_COLORS = [
    (0, 0, 0), (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
    (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
    (178, 76, 76), (247, 182, 210), (66, 188, 102), (219, 219, 141), (140, 57, 197), (202, 185, 52),
    (51, 176, 203), (200, 54, 131), (92, 193, 61), (78, 71, 183), (172, 114, 82), (255, 127, 14), (91, 163, 138),
    (153, 98, 156), (140, 153, 101), (158, 218, 229), (100, 125, 154), (178, 127, 135), (120, 185, 128),
    (146, 111, 194), (44, 160, 44), (112, 128, 144), (96, 207, 209), (227, 119, 194), (213, 92, 176),
    (94, 106, 211), (82, 84, 163), (100, 85, 144),
]
# semantic-kitti.yaml (semantic-kitti-api): color_map (BGR!) per raw id, and learning_map_inv 1..19 -> raw id
SEMANTICKITTI_COLOR_MAP_BGR = {
    10: (245, 150, 100), 11: (245, 230, 100), 15: (150, 60, 30), 18: (180, 30, 80), 20: (255, 0, 0),
    30: (30, 30, 255), 31: (200, 40, 255), 32: (90, 30, 150), 40: (255, 0, 255), 44: (255, 150, 255),
    48: (75, 0, 75), 49: (75, 0, 175), 50: (0, 200, 255), 51: (50, 120, 255), 70: (0, 175, 0), 71: (0, 60, 135),
    72: (80, 240, 150), 80: (150, 240, 255), 81: (0, 0, 255),
}
SEMANTICKITTI_LEARNING_MAP_INV = [10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]
# the S3DIS palette of MMDetection3D's S3DIS dataset (and others), ceiling .. clutter
S3DIS_COMMON_PALETTE = [
    (0, 255, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 255), (100, 100, 255), (200, 200, 100),
    (170, 120, 200), (255, 0, 0), (200, 100, 100), (10, 200, 100), (200, 200, 200), (50, 50, 50),
]


def test_dataset_palettes_equal_the_official_ones():
    np.testing.assert_array_equal(SCANNET20_PALETTE, [SCANNET_NYU40_COLORS[i] for i in SCANNET20_NYU40_IDS])
    np.testing.assert_array_equal(SEMANTICKITTI19_PALETTE,
                                  [SEMANTICKITTI_COLOR_MAP_BGR[raw][::-1] for raw in SEMANTICKITTI_LEARNING_MAP_INV])
    np.testing.assert_array_equal(S3DIS13_PALETTE, S3DIS_COMMON_PALETTE)


def test_scannet_floor_and_bookshelf_are_far_apart():
    floor, bookshelf = SCANNET20_CLASS_NAMES.index("floor"), SCANNET20_CLASS_NAMES.index("bookshelf")
    distance = np.linalg.norm(SCANNET20_PALETTE[floor].astype(float) - SCANNET20_PALETTE[bookshelf])
    assert distance > 100, distance  # (152, 223, 138) green vs (148, 103, 189) purple: 130 apart


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


def test_legend_entries_are_the_classes_present_in_id_order():
    names = list(S3DIS_CLASS_NAMES)
    pred, target = np.array([8, 8, 1, 12]), np.array([1, IGNORE, 0, 8])
    assert legend_entries([pred, target], names, S3DIS13_PALETTE) == [
        ("ceiling", (0, 255, 0)), ("floor", (0, 0, 255)), ("chair", (255, 0, 0)), ("clutter", (50, 50, 50)),
        ("ignored", IGNORE_COLOR)]
    assert legend_entries([np.array([2])], names, S3DIS13_PALETTE) == [("wall", (0, 255, 255))]
    with pytest.raises(ValueError, match=r"labels outside \[0, 13\).*e\.g\. 13"):
        legend_entries([np.array([13])], names, S3DIS13_PALETTE)
    with pytest.raises(ValueError, match="12 class names for a palette of 13 colours"):
        legend_entries([pred], names[:12], S3DIS13_PALETTE)


def _has_block(image: np.ndarray, color, side: int = 10) -> list[tuple[int, int]]:
    """Top-left (row, col) of every side x side block of ``image`` (H, W, 3) made only of ``color``."""
    mask = (image == np.asarray(color, dtype=image.dtype)).all(axis=2).astype(np.int64)
    sums = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    window = sums[side:, side:] - sums[:-side, side:] - sums[side:, :-side] + sums[:-side, :-side]
    return [tuple(rc) for rc in np.argwhere(window == side * side)]


@pytest.mark.parametrize("backend", ["open3d", "matplotlib"])
def test_legend_swatches_hold_the_palette_colours_of_present_classes_only(tmp_path, backend):
    _needs(backend)
    points, gt = _room(300)  # floor (1), walls (0), table (6), ignored
    pred = gt.copy()
    pred[gt == 6] = 9  # the table predicted as bookshelf
    legend = legend_entries([pred, gt], SCANNET20_CLASS_NAMES, SCANNET20_PALETTE)
    assert [name for name, _ in legend] == ["wall", "floor", "table", "bookshelf", "ignored"]
    path = tmp_path / "panels.png"
    render_panels(points, [pred, gt, error_colors(pred, gt)], ["prediction", "ground truth", "errors"], path,
                  SCANNET20_PALETTE, width=200, height=150, backend=backend, legend=legend)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] == 600 and image.shape[0] > 32 + 150
    strip = image[32 + 150:]  # the legend, below the panels
    lefts = []
    for cls in range(20):
        blocks = _has_block(strip, SCANNET20_PALETTE[cls])
        assert bool(blocks) == (cls in (0, 1, 6, 9)), f"class {cls} ({SCANNET20_CLASS_NAMES[cls]})"
        if blocks:
            lefts.append(min(col for _, col in blocks))
    ignored = _has_block(strip, IGNORE_COLOR)
    assert ignored and lefts == sorted(lefts) and max(lefts) < min(col for _, col in ignored)  # id order, one row
    assert (strip < 60).all(axis=2).sum() > 50  # dark text of the names
    plain = tmp_path / "plain.png"
    render(points, gt, plain, SCANNET20_PALETTE, width=200, height=150, backend=backend)
    assert np.asarray(Image.open(plain)).shape[0] == 150  # no legend asked: no strip
    with_legend = tmp_path / "legend.png"
    render(points, gt, with_legend, SCANNET20_PALETTE, width=200, height=150, backend=backend,
           legend=legend_entries([gt], SCANNET20_CLASS_NAMES, SCANNET20_PALETTE))
    image = np.asarray(Image.open(with_legend).convert("RGB"))
    assert image.shape[0] > 150 and _has_block(image[150:], SCANNET20_PALETTE[6])
    assert not _has_block(image[150:], SCANNET20_PALETTE[9])


def test_legend_wraps_into_rows_and_checks_colours(tmp_path):
    _needs("matplotlib")
    points, gt = _room(100)
    legend = [(name, tuple(SCANNET20_PALETTE[c])) for c, name in enumerate(SCANNET20_CLASS_NAMES)]
    path = tmp_path / "all.png"
    render(points, gt, path, SCANNET20_PALETTE, width=300, height=100, backend="matplotlib", legend=legend)
    strip = np.asarray(Image.open(path).convert("RGB"))[100:]
    tops = {}
    for cls in range(20):
        blocks = _has_block(strip, SCANNET20_PALETTE[cls])
        assert blocks, SCANNET20_CLASS_NAMES[cls]
        tops[cls] = blocks[0][0]
    assert len(set(tops.values())) > 3  # 20 names do not fit one 300-pixel row
    with pytest.raises(ValueError, match=r"legend entry 'x': colour expected 3 ints in \[0, 255\]"):
        render(points, gt, tmp_path / "bad.png", backend="matplotlib", legend=[("x", (0, 300, 0))])


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


# --- tools/visualize.py --------------------------------------------------------------------------

def test_visualize_tool_uses_the_scannet_palette_and_a_legend_of_present_classes(tmp_path):
    _needs("auto")
    import runpy
    from pathlib import Path

    from pcseg.data.synthetic import make_scannet
    from pcseg.engine.config import load_config

    repo = Path(__file__).resolve().parents[2]
    tool = runpy.run_path(str(repo / "tools" / "visualize.py"))
    make_scannet(tmp_path / "data", num_scenes=2, seed=0, num_points=6000)  # val: scene0001_00
    cfg = load_config(str(repo / "configs" / "scannet" / "sparse_0.1pct.yaml"),
                      [f"data.kwargs.root={tmp_path / 'data'}"])
    gt = np.asarray(PlyData.read(str(tmp_path / "data" / "scans" / "scene0001_00" /
                                     "scene0001_00_vh_clean_2.labels.ply"))["vertex"]["label"])
    floor, bookshelf = SCANNET20_CLASS_NAMES.index("floor"), SCANNET20_CLASS_NAMES.index("bookshelf")
    pred = np.full(len(gt), floor, dtype=np.int64)
    pred[::7] = bookshelf
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "pred" / "scene0001_00.npy", pred)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "auto" says so when it falls back
        [png] = tool["render_scenes"](cfg, tmp_path / "pred", ["scene0001_00"], tmp_path / "vis")
    # the oracle: classes of the pictured points (the PNG leaves out the top 0.3 m), from the written PLY
    v = PlyData.read(str(tmp_path / "vis" / "scene0001_00_gt.ply"))["vertex"]
    shown = v["z"] < v["z"].max() - 0.3
    present = set(v["label"][shown].tolist()) | {floor, bookshelf}
    present.discard(IGNORE)
    strip = np.asarray(Image.open(png).convert("RGB"))[32 + 480:]
    for cls in range(20):
        assert bool(_has_block(strip, SCANNET20_PALETTE[cls])) == (cls in present), SCANNET20_CLASS_NAMES[cls]
    generic = generic_palette(20)
    assert not _has_block(strip, generic[floor]) and not _has_block(strip, generic[bookshelf])
    np.testing.assert_array_equal(np.c_[v["red"], v["green"], v["blue"]][v["label"] == floor],
                                  np.broadcast_to(SCANNET20_PALETTE[floor], ((v["label"] == floor).sum(), 3)))
