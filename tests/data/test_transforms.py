import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pcseg.data.transforms import (
    ChromaticAutoContrast, ChromaticJitter, ChromaticTranslation, Compose, CropPoints,
    ElasticDistortion, Jitter, NormalizeColor, RandomDropout, RandomFlip, RandomRotateZ,
    RandomScale, build_transforms, num_points,
)
from pcseg.utils.registry import UnknownNameError


def _scene(n: int = 500, seed: int = 0) -> dict:
    """A scene whose every per-point array is derived from a unique point id (= instance)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    return {
        "coord": rng.uniform(-2, 2, (n, 3)).astype(np.float32),
        "color": np.stack([ids % 256, (ids * 7) % 256, (ids * 13) % 256], 1).astype(np.float32),
        "strength": (ids[:, None] / n).astype(np.float32),
        "segment": ids % 5,
        "instance": ids,
        "budget_mask": ids % 10 == 0,
        "name": "scene0000_00",
    }


def _assert_aligned(out: dict, src: dict, keys=("color", "strength", "segment", "budget_mask")) -> None:
    ids = out["instance"]
    for key in keys:
        np.testing.assert_array_equal(out[key], src[key][ids], err_msg=key)


def test_rotate_z_quarter_turn_is_the_hand_matrix():
    pts = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 2, 3]], np.float32)
    out = RandomRotateZ(angle=(np.pi / 2, np.pi / 2))({"coord": pts}, np.random.default_rng(0))["coord"]
    expected = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1], [-2, 1, 3]], np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32
    out2d = RandomRotateZ(angle=(np.pi / 2, np.pi / 2))({"coord": pts[:, :2]}, np.random.default_rng(0))["coord"]
    np.testing.assert_allclose(out2d, expected[:, :2], atol=1e-6)


def test_rotate_with_tilt_matches_scipy_intrinsic_zyx():
    pts = _scene(50)["coord"]
    t = RandomRotateZ(angle=(-1.0, 1.0), tilt=0.1)
    out = t({"coord": pts}, np.random.default_rng(3))["coord"]
    draws = np.random.default_rng(3)
    theta = draws.uniform(-1.0, 1.0)
    tilt_x, tilt_y = draws.uniform(-0.1, 0.1, 2)
    rot = Rotation.from_euler("ZYX", [theta, tilt_y, tilt_x]).as_matrix()
    np.testing.assert_allclose(out, pts @ rot.T, atol=1e-5)
    with pytest.raises(ValueError, match="needs D=3"):
        t({"coord": pts[:, :2]}, np.random.default_rng(0))


def test_scale_and_flip_against_hand_values():
    pts = np.array([[1, -2, 3]], np.float32)
    assert RandomScale(scale=(2, 2))({"coord": pts}, np.random.default_rng(0))["coord"].tolist() == [[2, -4, 6]]
    aniso = RandomScale(scale=(0.5, 1.5), anisotropic=True)({"coord": np.ones((1, 3), np.float32)},
                                                            np.random.default_rng(0))["coord"][0]
    np.testing.assert_allclose(aniso, np.random.default_rng(0).uniform(0.5, 1.5, 3), rtol=1e-6)
    assert RandomFlip(p=1.0)({"coord": pts}, np.random.default_rng(0))["coord"].tolist() == [[-1, 2, 3]]
    assert RandomFlip(p=1.0, axes=(2,))({"coord": pts}, np.random.default_rng(0))["coord"].tolist() == [[1, -2, -3]]
    assert RandomFlip(p=0.0)({"coord": pts}, np.random.default_rng(0))["coord"].tolist() == [[1, -2, 3]]


def test_jitter_is_clipped_and_leaves_other_arrays():
    src = _scene()
    out = Jitter(sigma=1.0, clip=0.05)(src, np.random.default_rng(0))
    delta = out["coord"] - src["coord"]
    assert np.abs(delta).max() <= 0.05 + 1e-6 and np.abs(delta).max() > 0.04
    _assert_aligned(out, src)


def test_elastic_keeps_points_is_seeded_and_smooth():
    src = _scene(2000)
    before = src["coord"].copy()
    t = ElasticDistortion(params=((0.2, 0.4), (0.8, 1.6)))
    a = t(src, np.random.default_rng(1))
    b = t(src, np.random.default_rng(1))
    c = t(src, np.random.default_rng(2))
    np.testing.assert_array_equal(src["coord"], before)  # input not modified
    assert a["coord"].shape == src["coord"].shape and a["coord"].dtype == np.float32
    np.testing.assert_array_equal(a["coord"], b["coord"])
    assert not np.allclose(a["coord"], c["coord"])
    _assert_aligned(a, src)
    # smooth field: two points 1 mm apart move almost identically, far points do not
    pair = np.array([[0.3, 0.3, 0.3], [0.301, 0.3, 0.3], [-1.7, 1.5, -1.2]], np.float32)
    moved = t({"coord": np.concatenate([src["coord"], pair])}, np.random.default_rng(5))["coord"][-3:] - pair
    assert np.abs(moved[0] - moved[1]).max() < 0.02
    assert np.abs(moved[0] - moved[2]).max() > 0.02


def test_crop_keeps_the_nearest_points_and_their_labels():
    src = _scene(1000)
    out = CropPoints(max_points=300)(src, np.random.default_rng(4))
    assert num_points(out) == 300
    _assert_aligned(out, src)
    np.testing.assert_array_equal(out["coord"], src["coord"][out["instance"]])
    assert (np.diff(out["instance"]) > 0).all()  # original order kept
    centre = src["coord"][np.random.default_rng(4).integers(1000)]
    dist = np.linalg.norm(src["coord"] - centre, axis=1)
    dropped = np.setdiff1d(np.arange(1000), out["instance"])
    assert dist[out["instance"]].max() <= dist[dropped].min()
    assert CropPoints(max_points=5000)(src, np.random.default_rng(0)) is src


def test_dropout_never_drops_budget_points():
    src = _scene(1000)
    out = RandomDropout(ratio=0.5, p=1.0)(src, np.random.default_rng(0))
    assert num_points(out) == 500
    _assert_aligned(out, src)
    assert set(np.flatnonzero(src["budget_mask"])) <= set(out["instance"])
    everything_labelled = dict(src, budget_mask=np.ones(1000, bool))
    assert num_points(RandomDropout(ratio=0.5, p=1.0)(everything_labelled, np.random.default_rng(0))) == 1000
    assert num_points(RandomDropout(ratio=0.5, p=1.0, keep_budget=False)(everything_labelled,
                                                                         np.random.default_rng(0))) == 500
    assert RandomDropout(ratio=0.5, p=0.0)(src, np.random.default_rng(0)) is src


def test_chromatic_transforms():
    src = _scene(300)
    src["color"] = src["color"] * 0.5 + 40  # in [40, 167.5]
    stretched = ChromaticAutoContrast(p=1.0, blend_factor=1.0)(src, np.random.default_rng(0))["color"]
    np.testing.assert_allclose(stretched.min(0), 0, atol=1e-4)
    np.testing.assert_allclose(stretched.max(0), 255, atol=1e-3)
    shifted = ChromaticTranslation(p=1.0, ratio=0.1)(src, np.random.default_rng(0))["color"] - src["color"]
    np.testing.assert_allclose(shifted, np.broadcast_to(shifted[0], shifted.shape), atol=1e-4)
    assert np.abs(shifted[0]).max() <= 25.5
    jittered = ChromaticJitter(p=1.0, std=0.05)(src, np.random.default_rng(0))["color"]
    assert jittered.min() >= 0 and jittered.max() <= 255 and not np.allclose(jittered, src["color"])
    assert ChromaticJitter(p=0.0)(src, np.random.default_rng(0)) is src
    with pytest.raises(KeyError, match="ChromaticJitter: sample 'x' has no 'color'"):
        ChromaticJitter(p=1.0)({"coord": src["coord"], "name": "x"}, np.random.default_rng(0))


def test_normalize_color():
    sample = {"color": np.array([[0, 127.5, 255]], np.float32)}
    assert NormalizeColor()(sample, np.random.default_rng(0))["color"].tolist() == [[-1, 0, 1]]
    assert NormalizeColor(low=0.0)(sample, np.random.default_rng(0))["color"].tolist() == [[0, 0.5, 1]]


def test_build_transforms_and_global_rng_untouched():
    pipeline = build_transforms([
        {"name": "RandomRotateZ", "tilt": 0.05}, {"name": "RandomScale"}, {"name": "RandomFlip"},
        {"name": "ElasticDistortion"}, {"name": "ChromaticAutoContrast"}, {"name": "ChromaticTranslation"},
        {"name": "ChromaticJitter"}, {"name": "NormalizeColor"}, {"name": "RandomDropout", "p": 1.0},
        {"name": "CropPoints", "max_points": 400},
    ])
    assert isinstance(pipeline, Compose) and len(pipeline.transforms) == 10
    src = _scene(1000)
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    a = pipeline(src, np.random.default_rng(9))
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    b = pipeline(src, np.random.default_rng(9))
    for key in ("coord", "color", "segment", "instance"):
        np.testing.assert_array_equal(a[key], b[key])
    assert num_points(a) == 400 and -1 <= a["color"].min() and a["color"].max() <= 1
    _assert_aligned(a, src, keys=("strength", "segment", "budget_mask"))


def test_build_transforms_errors_name_the_entry():
    with pytest.raises(UnknownNameError, match=r"transforms\[1\]: transform 'RandomRotate' unknown; known: .*RandomRotateZ"):
        build_transforms([{"name": "Jitter"}, {"name": "RandomRotate"}])
    with pytest.raises(TypeError, match=r"transforms\[0\]: transform 'Jitter': unknown key\(s\) sigmaa"):
        build_transforms([{"name": "Jitter", "sigmaa": 0.1}])
    with pytest.raises(ValueError, match=r"transforms\[0\]: RandomFlip.p: expected a probability"):
        build_transforms([{"name": "RandomFlip", "p": 2}])


def test_num_points_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="'segment' has 2 rows, expected 3"):
        num_points({"coord": np.zeros((3, 3)), "segment": np.zeros(2), "name": "s"})
