"""read_scannet_frames: a tiny scene written in ScanNet's SensReader export layout.

Colour 64x48 (fx = fy = 40, centred), depth 32x24 whose camera is the colour camera at half
size shifted 2 px right (cx 17.5 instead of 15.5), so output pixel column ``a`` of the default
32x24 output reads depth column ``a + 2``. In every frame, coloured 4x4 blocks are drawn at
colour pixels ``2a-1..2a+2`` x ``2b-1..2b+2`` (output pixel ``(a, b)`` after halving) and their
3D points are back-projected by hand from that block centre; the depth png holds their true
depth at depth pixel ``(a + 2, b)``.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcseg.data.formats import IGNORE_INDEX
from pcseg.data.formats.scannet import SCANNET20_CLASS_NAMES
from pcseg.data.formats.posed_views import read_scannet_frames
from pcseg.data.projection import look_at, project
from pcseg.methods.ovs.scene import load_scene
from pcseg.utils.errors import InputError

K_COLOR = np.array([[40.0, 0, 31.5, 0], [0, 40.0, 23.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
K_DEPTH = np.array([[20.0, 0, 17.5, 0], [0, 20.0, 11.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
FRAME_IDS = (10, 2, 9, 0)  # written out of order; 10 sorts after 9
LOST_ID = 5
# (output pixel a, b, depth in m, RGB) per block; frame k shifts the blocks by k columns
BLOCKS = ((5, 4, 1.5, (255, 0, 0)), (20, 10, 2.0, (0, 255, 0)), (12, 18, 3.0, (0, 0, 255)))
BACKGROUND_MM = 4000


def _pose(k: int) -> np.ndarray:
    eye = torch.tensor([0.3 * k, 0.1 * k, 1.5])
    return look_at(eye, eye + torch.tensor([1.0, 2.0 + k, -0.3])).double().numpy()


def _blocks(k: int) -> list[tuple[int, int, float, tuple[int, int, int]]]:
    return [(a + k, b, z, rgb) for a, b, z, rgb in BLOCKS]


def _world_point(a: int, b: int, z: float, c2w: np.ndarray) -> np.ndarray:
    """The 3D point seen at colour integer coordinate (2a + 0.5, 2b + 0.5), the block's centre."""
    cam = np.array([(2 * a + 0.5 - 31.5) / 40 * z, (2 * b + 0.5 - 23.5) / 40 * z, z])
    return c2w[:3, :3] @ cam + c2w[:3, 3]


def _write_matrix(path: Path, mat: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, mat, fmt="%.9g")


def _write_scene(root: Path, labels: bool = True, with_depth: bool = True, pad: int = 0) -> None:
    """The scene; ``with_depth=False``: no depth/ and no intrinsic_depth.txt; ``pad``: file names zero-padded
    to that many digits (``00009.jpg``)."""
    for d in ("color", "depth", "pose", "intrinsic"):
        (root / d).mkdir(parents=True, exist_ok=True)
    _write_matrix(root / "intrinsic" / "intrinsic_color.txt", K_COLOR)
    _write_matrix(root / "intrinsic" / "intrinsic_depth.txt", K_DEPTH)
    for k, frame_id in enumerate(FRAME_IDS + (LOST_ID,)):
        i = f"{frame_id:0{pad}d}"
        color = np.full((48, 64, 3), 128, np.uint8)
        depth = np.full((24, 32), BACKGROUND_MM, np.uint16)
        depth[0] = 0  # unknown
        for a, b, z, rgb in _blocks(k):
            color[2 * b - 1:2 * b + 3, 2 * a - 1:2 * a + 3] = rgb
            depth[b, a + 2] = round(z * 1000)
        Image.fromarray(color).save(root / "color" / f"{i}.jpg", quality=100, subsampling=0)
        Image.fromarray(depth).save(root / "depth" / f"{i}.png")
        pose = np.full((4, 4), -np.inf) if frame_id == LOST_ID else _pose(k)
        _write_matrix(root / "pose" / f"{i}.txt", pose)
    if not with_depth:
        shutil.rmtree(root / "depth")
        (root / "intrinsic" / "intrinsic_depth.txt").unlink()
    if labels:
        (root / "label-filt").mkdir()
        nyu = np.zeros((48, 64), np.uint16)  # row 0..1: 0 (unannotated)
        nyu[2:, :31] = 1  # wall -> 0; odd boundaries: output pixel c samples colour pixel 2c + 1
        nyu[2:23, 31:] = 39  # otherfurniture -> 19
        nyu[23:, 31:] = 13  # pillow: not a benchmark class -> ignore
        for frame_id in FRAME_IDS + (LOST_ID,):
            Image.fromarray(nyu).save(root / "label-filt" / f"{frame_id:0{pad}d}.png")


def _read(root: Path, **kwargs):
    kwargs.setdefault("label_map", "nyu40")  # the test pngs hold NYU40 ids unless a test says otherwise
    with pytest.warns(UserWarning, match=r"dropped 1 of \d+ frames .*: 0*5\.txt$"):
        return read_scannet_frames(root, **kwargs)


def _block_centroid(image: torch.Tensor, rgb: tuple[int, int, int]) -> np.ndarray:
    """(u, v) centroid of the pixels whose colour is mostly the pure channel ``rgb`` picks."""
    c = int(np.argmax(rgb))
    others = [j for j in range(3) if j != c]
    purity = image[..., c] - image[..., others].mean(-1)
    v, u = torch.nonzero(purity > 0.7, as_tuple=True)
    assert len(u), f"no {rgb} pixels found"
    return np.array([u.float().mean().item(), v.float().mean().item()])


def test_frames_sorted_cameras_and_depth(tmp_path):
    _write_scene(tmp_path)
    views = _read(tmp_path)
    assert views.names == ["0", "2", "9", "10"]
    assert views.images.shape == (4, 24, 32, 3) and views.depth.shape == (4, 24, 32)
    torch.testing.assert_close(views.K[0], torch.tensor([[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]]))
    assert views.class_names == SCANNET20_CLASS_NAMES
    for v, name in enumerate(views.names):
        k = FRAME_IDS.index(int(name))
        np.testing.assert_allclose(views.c2w[v].numpy(), _pose(k), atol=1e-6)
        for a, b, z, rgb in _blocks(k):
            uv, depth = project(torch.tensor(_world_point(a, b, z, _pose(k))[None]), views.K[v], views.c2w[v])
            np.testing.assert_allclose(uv[0].numpy(), [a, b], atol=1e-3)  # the K/c2w oracle: drawn pixels
            np.testing.assert_allclose(_block_centroid(views.images[v], rgb), [a, b], atol=1e-6)
            assert depth.item() == pytest.approx(z, abs=1e-4)
            assert views.depth[v, b, a].item() == pytest.approx(z)  # read through the shifted depth camera
        assert (views.depth[v, 0] == 0).all()  # unknown stays unknown
        assert (views.depth[v, :, 30:] == 0).all()  # outside the depth image
        assert views.depth[v, 1, 0].item() == pytest.approx(BACKGROUND_MM / 1000)
    assert views.near_far == pytest.approx((0.8 * 4.0, 1.2 * 4.0))


def test_image_size_keeps_native_intrinsics(tmp_path):
    _write_scene(tmp_path, labels=False)
    views = _read(tmp_path, image_size=(48, 64))
    assert views.images.shape == (4, 48, 64, 3) and views.labels is None
    torch.testing.assert_close(views.K[0], torch.as_tensor(K_COLOR[:3, :3], dtype=torch.float32))
    v = views.names.index("9")
    for a, b, z, rgb in _blocks(FRAME_IDS.index(9)):
        uv, _ = project(torch.tensor(_world_point(a, b, z, _pose(FRAME_IDS.index(9)))[None]), views.K[v], views.c2w[v])
        np.testing.assert_allclose(uv[0].numpy(), [2 * a + 0.5, 2 * b + 0.5], atol=1e-3)
        np.testing.assert_allclose(_block_centroid(views.images[v], rgb), [2 * a + 0.5, 2 * b + 0.5], atol=1e-6)


def test_colour_pose_and_intrinsics_without_depth(tmp_path):
    _write_scene(tmp_path, with_depth=False)
    views = _read(tmp_path)
    assert views.depth is None and views.near_far is None
    assert views.names == ["0", "2", "9", "10"]
    assert views.images.shape == (4, 48, 64, 3)  # the colour frames' size: no depth frames to follow
    torch.testing.assert_close(views.K[0], torch.as_tensor(K_COLOR[:3, :3], dtype=torch.float32))
    for v, name in enumerate(views.names):
        k = FRAME_IDS.index(int(name))
        np.testing.assert_allclose(views.c2w[v].numpy(), _pose(k), atol=1e-6)
        for a, b, z, rgb in _blocks(k):
            uv, _ = project(torch.tensor(_world_point(a, b, z, _pose(k))[None]), views.K[v], views.c2w[v])
            np.testing.assert_allclose(uv[0].numpy(), [2 * a + 0.5, 2 * b + 0.5], atol=1e-3)
            np.testing.assert_allclose(_block_centroid(views.images[v], rgb), [2 * a + 0.5, 2 * b + 0.5], atol=1e-6)
    expected = torch.full((48, 64), IGNORE_INDEX)  # label pngs at their own size: no resampling
    expected[2:, :31] = SCANNET20_CLASS_NAMES.index("wall")
    expected[2:23, 31:] = SCANNET20_CLASS_NAMES.index("otherfurniture")
    assert (views.labels == expected).all()


def test_load_scene_without_depth_uses_the_default_near_far(tmp_path):
    _write_scene(tmp_path, labels=False, with_depth=False)
    cfg = {"root": str(tmp_path), "held_out": 1, "image_size": (12, 16), "batch_rays": 64}
    with pytest.warns(UserWarning, match="dropped 1"):
        scene = load_scene("ScanNetFrames", cfg)
    assert scene.train.depth is None and scene.near_far == (0.1, 10.0)


def test_zero_padded_frame_names_read_like_plain_ones(tmp_path):
    _write_scene(tmp_path / "plain")
    _write_scene(tmp_path / "padded", pad=5)
    assert sorted(p.name for p in (tmp_path / "padded" / "pose").iterdir())[:2] == ["00000.txt", "00002.txt"]
    plain, padded = _read(tmp_path / "plain"), _read(tmp_path / "padded")
    assert padded.names == ["00000", "00002", "00009", "00010"]
    for key in ("images", "K", "c2w", "depth", "labels"):
        assert torch.equal(getattr(padded, key), getattr(plain, key)), key
    assert padded.near_far == plain.near_far == pytest.approx((0.8 * 4.0, 1.2 * 4.0))


def test_frame_skip_applies_before_dropping_lost_poses(tmp_path):
    _write_scene(tmp_path, labels=False)
    views = _read(tmp_path, frame_skip=2)  # sorted 0 2 5 9 10 -> 0 5 10 -> 5 lost
    assert views.names == ["0", "10"]


def test_nyu40_labels_map_to_scannet20(tmp_path):
    _write_scene(tmp_path)
    labels = _read(tmp_path).labels
    assert labels.shape == (4, 24, 32) and labels.dtype == torch.int64
    expected = torch.full((24, 32), IGNORE_INDEX)
    expected[1:, :15] = SCANNET20_CLASS_NAMES.index("wall")
    expected[1:11, 15:] = SCANNET20_CLASS_NAMES.index("otherfurniture")
    assert (labels == expected).all()


def test_raw_labels_map_through_the_tsv(tmp_path):
    _write_scene(tmp_path)
    tsv = tmp_path / "scannetv2-labels.combined.tsv"
    tsv.write_text("id\traw_category\tcategory\tcount\tnyu40id\n1\twall\twall\t1\t1\n2\tchair\tchair\t1\t5\n"
                   "40\tpillow\tpillow\t1\t18\n")
    raw = np.zeros((48, 64), np.uint16)
    raw[:, :32], raw[:, 32:48], raw[:, 48:] = 2, 1, 40
    for i in FRAME_IDS + (LOST_ID,):
        Image.fromarray(raw).save(tmp_path / "label-filt" / f"{i}.png")
    labels = _read(tmp_path, label_map=None).labels  # found in the scene folder, as in a download
    assert torch.equal(labels, _read(tmp_path, label_map=tsv).labels)
    assert (labels[:, :, :16] == SCANNET20_CLASS_NAMES.index("chair")).all()
    assert (labels[:, :, 16:24] == SCANNET20_CLASS_NAMES.index("wall")).all()
    assert (labels[:, :, 24:] == IGNORE_INDEX).all()


def _missing_pose(root: Path) -> Path:
    (root / "pose" / "2.txt").unlink()
    return root / "pose" / "2.txt"


def _pose_3x4(root: Path) -> Path:
    _write_matrix(root / "pose" / "2.txt", np.eye(4)[:3])
    return root / "pose" / "2.txt"


def _missing_intrinsics(root: Path) -> Path:
    (root / "intrinsic" / "intrinsic_color.txt").unlink()
    return root / "intrinsic" / "intrinsic_color.txt"


def _no_frames(root: Path) -> Path:
    for f in (root / "color").iterdir():
        f.unlink()
    return root / "color"


def _missing_depth(root: Path) -> Path:
    (root / "depth" / "9.png").unlink()
    return root / "depth" / "9.png"


def _missing_label(root: Path) -> Path:
    (root / "label-filt" / "10.png").unlink()
    return root / "label-filt" / "10.png"


def _missing_depth_intrinsics(root: Path) -> Path:
    (root / "intrinsic" / "intrinsic_depth.txt").unlink()  # depth/ is there, so its camera is needed
    return root / "intrinsic" / "intrinsic_depth.txt"


def _same_id_twice(root: Path) -> Path:
    (root / "color" / "9.jpg").rename(root / "color" / "009.jpg")
    shutil.copy(root / "color" / "009.jpg", root / "color" / "9.jpg")
    return root / "color"


def _all_lost(root: Path) -> Path:
    for i in FRAME_IDS:
        _write_matrix(root / "pose" / f"{i}.txt", np.full((4, 4), -np.inf))
    return root / "pose"


@pytest.mark.parametrize("breaker, error, what", [
    (_missing_pose, FileNotFoundError, "missing"), (_pose_3x4, ValueError, "4x4"),
    (_missing_intrinsics, FileNotFoundError, "missing"), (_no_frames, FileNotFoundError, "found none"),
    (_missing_depth, FileNotFoundError, "missing"), (_missing_label, FileNotFoundError, "missing"),
    (_all_lost, ValueError, "no frame has a finite pose"),
    (_missing_depth_intrinsics, FileNotFoundError, "missing"),
    (_same_id_twice, InputError, "1 ids written twice: 009.jpg and 9.jpg"),
])
@pytest.mark.filterwarnings("ignore:.*dropped 4 of 4 frames:UserWarning")
def test_bad_inputs_name_the_file(tmp_path, breaker, error, what):
    _write_scene(tmp_path)
    (tmp_path / "color" / f"{LOST_ID}.jpg").unlink()  # no colour, so the lost frame is never read
    path = breaker(tmp_path)
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + what):
        read_scannet_frames(tmp_path, label_map="nyu40")


def test_load_scene_holds_out_the_last_frames(tmp_path):
    _write_scene(tmp_path)
    cfg = {"root": str(tmp_path), "held_out": 1, "image_size": [12, 16], "label_map": "nyu40"}
    with pytest.warns(UserWarning, match="dropped 1"):
        scene = load_scene("ScanNetFrames", cfg)
    assert scene.train.names == ["0", "2", "9"] and scene.held_out.names == ["10"]
    assert scene.train.images.shape == (3, 12, 16, 3) and scene.held_out.labels.shape == (1, 12, 16)
    assert scene.class_names == SCANNET20_CLASS_NAMES and scene.points is None
    assert scene.near_far == pytest.approx((3.2, 4.8))
    with pytest.raises(InputError, match=r"data.kwargs.held_out: expected 0 <= held_out < 4 .*got 4"), \
            pytest.warns(UserWarning, match="dropped 1"):
        load_scene("ScanNetFrames", {**cfg, "held_out": 4})
    with pytest.raises(InputError, match="data.kwargs.frame_skp: unknown for ScanNetFrames"):
        load_scene("ScanNetFrames", {**cfg, "frame_skp": 2})
    with pytest.raises(InputError, match="data.kwargs.root: required for OVSScene3D"):
        load_scene("OVSScene3D", {})
    with pytest.raises(InputError, match="SyntheticRoom scenes are rendered by the tools"):
        load_scene("SyntheticRoom", {})


def test_label_pngs_without_a_label_map_are_an_error_not_a_guess(tmp_path):
    _write_scene(tmp_path / "scene0000_00")
    with pytest.raises(FileNotFoundError, match=r"label-filt: label pngs need scannetv2-labels\.combined\.tsv"):
        _read(tmp_path / "scene0000_00", label_map=None)
