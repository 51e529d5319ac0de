"""SLidR's ablation without superpixels: the PPKT-style point-to-pixel InfoNCE, by hand and inside SLidR."""
import itertools
import math

import pytest
import torch

from pcseg.engine.hooks import TrainState
from pcseg.methods import build_method
from pcseg.methods.slidr import SLidR, point_info_nce
from pcseg.models import build_model
from slidr_helpers import PoolTeacher

STATE = TrainState(epoch=0, step=0, max_epochs=1, max_steps=1, iters_per_epoch=1)

# Two 2x2 feature maps (B=2, D=2): maps[b, :, row, col]
MAPS = torch.tensor([[[[1.0, 0.0], [2.0, 1.0]],     # image 0, channel 0
                      [[0.0, 1.0], [0.0, 1.0]]],    # image 0, channel 1
                     [[[0.0, 3.0], [1.0, 1.0]],     # image 1, channel 0
                      [[4.0, 0.0], [1.0, -1.0]]]])  # image 1, channel 1
POINTS = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [5.0, 5.0]])
IMAGE = torch.tensor([0, 0, 1, 1])
PIXEL = torch.tensor([[0, 1], [1, 0], [1, 0], [-1, -1]])  # (column, row); point 3 is outside its image


def _normalised(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _hand_info_nce(anchors, positives, t):
    a, p = [_normalised(v) for v in anchors], [_normalised(v) for v in positives]
    total = 0.0
    for i in range(len(a)):
        s = [sum(x * y for x, y in zip(a[i], p[j])) / t for j in range(len(p))]
        total += -s[i] + math.log(sum(math.exp(v) for v in s))
    return total / len(a)


# pixels read by hand from MAPS: point 0 -> image 0 (row 1, col 0) = (2, 0); point 1 -> image 0
# (row 0, col 1) = (0, 1); point 2 -> image 1 (row 0, col 1) = (3, 0)
HAND_PIXELS = [[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]]
HAND_POINTS = [[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]]


def test_point_info_nce_by_hand_with_four_points():
    t = 0.5
    expected = _hand_info_nce(HAND_POINTS, HAND_PIXELS, t)
    assert point_info_nce(POINTS, MAPS, IMAGE, PIXEL, t).item() == pytest.approx(expected, rel=1e-6)
    # the point outside its image does not count, whatever its feature
    moved = POINTS.clone()
    moved[3] = torch.tensor([-7.0, 2.0])
    assert point_info_nce(moved, MAPS, IMAGE, PIXEL, t).item() == pytest.approx(expected, rel=1e-6)


def test_point_info_nce_samples_num_matches_pairs_uniformly():
    t = 0.5
    by_subset = {rows: _hand_info_nce([HAND_POINTS[i] for i in rows], [HAND_PIXELS[i] for i in rows], t)
                 for rows in itertools.combinations(range(3), 2)}
    seen = set()
    for seed in range(40):
        loss = point_info_nce(POINTS, MAPS, IMAGE, PIXEL, t, num_matches=2,
                              generator=torch.Generator().manual_seed(seed)).item()
        match = [rows for rows, value in by_subset.items() if value == pytest.approx(loss, rel=1e-6)]
        assert len(match) == 1, (seed, loss, by_subset)
        seen.add(match[0])
    assert seen == set(by_subset)  # every pair of the three valid points gets drawn
    every = point_info_nce(POINTS, MAPS, IMAGE, PIXEL, t, num_matches=3)
    assert every.item() == pytest.approx(_hand_info_nce(HAND_POINTS, HAND_PIXELS, t), rel=1e-6)


def test_point_info_nce_checks_its_inputs():
    with pytest.raises(ValueError, match=r"expected image_index \(4,\) and pixel \(4, 2\)"):
        point_info_nce(POINTS, MAPS, IMAGE[:3], PIXEL)
    with pytest.raises(ValueError, match="num_matches expected >= 1 or None, got 0"):
        point_info_nce(POINTS, MAPS, IMAGE, PIXEL, num_matches=0)
    none = point_info_nce(POINTS.requires_grad_(), MAPS, IMAGE, torch.full((4, 2), -1))
    assert none.item() == 0.0 and none.requires_grad


def _camera_batch():
    """Two 8x12 images, points on a 3-D grid in two scans; each point sees a pixel of its own image or none."""
    gen = torch.Generator().manual_seed(5)
    coords = torch.cat([torch.zeros(20, 1), torch.ones(20, 1)]).to(torch.int32)
    coords = torch.unique(torch.cat([coords, torch.randint(0, 6, (40, 3), generator=gen, dtype=torch.int32)], 1), dim=0)
    inverse = torch.cat([torch.arange(len(coords)), torch.arange(len(coords))[:7]])  # 7 voxels hold 2 points
    n = len(inverse)
    pixel = torch.stack([torch.randint(0, 12, (n,), generator=gen), torch.randint(0, 8, (n,), generator=gen)], 1)
    pixel[::5] = -1
    superpixels = torch.arange(6).repeat_interleave(16).reshape(8, 12)
    return {"coords": coords, "feats": torch.rand(len(coords), 1, generator=gen), "inverse": inverse,
            "pixel": pixel, "point_superpixel": torch.zeros(n, dtype=torch.int64),
            "images": torch.randint(0, 256, (2, 3, 8, 12), generator=gen, dtype=torch.uint8),
            "superpixels": torch.stack([superpixels, superpixels + 6]), "num_superpixels": 12,
            "P": torch.zeros(2, 3, 4), "Tr": torch.zeros(2, 4, 4)}


def test_slidr_point_pooling_is_the_info_nce_of_each_points_pixel():
    torch.manual_seed(0)
    backbone = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3})
    method = SLidR(teacher=PoolTeacher(), projection_dim=8, pooling="point", num_matches=None)
    model = method.wrap(backbone)
    batch = _camera_batch()
    loss = method.losses(model, batch, STATE)["nce"]

    points, pixels = model(batch)
    rows = [i for i in range(len(batch["inverse"])) if batch["pixel"][i, 0] >= 0]
    k = torch.stack([points[i] for i in rows])
    q = torch.stack([pixels[int(batch["coords"][batch["inverse"][i], 0]), :, int(batch["pixel"][i, 1]),
                            int(batch["pixel"][i, 0])] for i in rows])
    logits = k @ q.T / 0.07  # both already unit length
    expected = torch.stack([torch.logsumexp(logits[i], 0) - logits[i, i] for i in range(len(rows))]).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert backbone.stem[0].weight.grad is not None and all(p.grad is not None for p in model.heads.parameters())

    superpixel = SLidR(teacher=PoolTeacher(), projection_dim=8)
    other = superpixel.wrap(backbone)
    other.heads.load_state_dict(model.heads.state_dict())
    other.teacher.network.load_state_dict(model.teacher.network.state_dict())
    assert not torch.allclose(superpixel.losses(other, batch, STATE)["nce"], loss)  # the option changes the loss


def test_pooling_is_chosen_in_yaml_and_checked():
    method = build_method({"name": "SLidR", "teacher": {"name": "ResNet50"}, "pooling": "point", "num_matches": 64})
    assert (method.pooling, method.num_matches) == ("point", 64)
    assert build_method({"name": "SLidR", "teacher": {"name": "ResNet50"}}).pooling == "superpixel"
    with pytest.raises(ValueError, match="SLidR.pooling: expected 'superpixel' or 'point', got 'voxel'"):
        SLidR(teacher=PoolTeacher(), pooling="voxel")
    with pytest.raises(ValueError, match="SLidR.num_matches: expected >= 1 or None, got 0"):
        SLidR(teacher=PoolTeacher(), num_matches=0)
