"""SLidR: pooling against a loop, InfoNCE by hand, the ResNet-50 teacher's checkpoints, the losses, linear probing."""
import math
import sys

import pytest
import torch
from torch import nn

from pcseg.engine.hooks import Supervised, TrainState
from pcseg.methods import METHODS, build_method
from pcseg.methods.slidr import (CachedTeacher, ResNet50Trunk, SLidR, SLidRModel, build_teacher, pool_image_features,
                                 info_nce, superpixel_pool)
from pcseg.methods.slidr import teacher as teacher_module
from pcseg.models import build_model
from pcseg.sparse import SparseTensor
from slidr_helpers import PoolTeacher

STATE = TrainState(epoch=0, step=0, max_epochs=1, max_steps=1, iters_per_epoch=1)


def test_superpixel_pool_equals_a_loop_over_superpixels():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 5, generator=gen)
    ids = torch.randint(-1, 7, (200,), generator=gen)
    ids[ids == 4] = 5  # superpixel 4 has no row; 7 and 8 exist beyond the largest id
    means, counts = superpixel_pool(feats, ids, 9)
    for s in range(9):
        rows = feats[ids == s]
        assert counts[s] == len(rows)
        expected = rows.mean(0) if len(rows) else torch.zeros(5)
        torch.testing.assert_close(means[s], expected)


def test_image_pooling_reads_pixels_of_each_image():
    gen = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 4, 6, generator=gen)
    superpixels = torch.randint(0, 5, (2, 4, 6), generator=gen)
    superpixels[1] += 5
    superpixels[1, 3] = -1  # padding
    means, counts = pool_image_features(maps, superpixels, 10)
    for s in range(10):
        b, r, c = torch.nonzero(superpixels == s, as_tuple=True)
        assert counts[s] == len(b)
        if len(b):
            torch.testing.assert_close(means[s], maps[b, :, r, c].mean(0))


def test_info_nce_by_hand():
    points = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    pixels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 5.0]])
    t = 0.5
    k = [[3 / 3, 0.0], [0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]
    q = [[1.0, 0.0], [1 / math.sqrt(2), 1 / math.sqrt(2)], [0.0, 1.0]]
    total = 0.0
    for i in range(3):
        s = [sum(a * b for a, b in zip(k[i], q[j])) / t for j in range(3)]
        total += -s[i] + math.log(sum(math.exp(v) for v in s))
    assert info_nce(points, pixels, t).item() == pytest.approx(total / 3, rel=1e-6)
    empty = info_nce(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, 2), t)
    assert empty.item() == 0.0 and empty.requires_grad


# torchvision's resnet50: 25,557,032 parameters, of which fc (2048 x 1000 + 1000) = 2,049,000
TORCHVISION_KEYS = {"conv1.weight": (64, 3, 7, 7), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                    "layer2.0.conv2.weight": (128, 128, 3, 3), "layer3.5.bn3.running_var": (1024,),
                    "layer4.2.conv3.weight": (2048, 512, 1, 1), "layer4.0.downsample.1.bias": (2048,)}


@pytest.fixture(scope="module")
def resnet_checkpoints(tmp_path_factory):
    """The same random ResNet-50 written in torchvision naming (with fc) and as a MoCo-v2 checkpoint."""
    torch.manual_seed(0)
    trunk = ResNet50Trunk()
    for module in trunk.modules():  # non-default statistics so that a skipped buffer would show
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = trunk.state_dict()
    folder = tmp_path_factory.mktemp("resnet")
    torchvision_file, moco_file = folder / "resnet50.pth", folder / "moco_v2.pth.tar"
    torch.save({**state, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}, torchvision_file)
    moco = {f"module.encoder_q.{k}": v for k, v in state.items()}
    moco.update({"module.encoder_q.fc.0.weight": torch.zeros(2048, 2048), "module.encoder_q.fc.2.weight":
                 torch.zeros(128, 2048), "module.encoder_k.conv1.weight": torch.zeros(64, 3, 7, 7),
                 "module.queue": torch.zeros(128, 16)})
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": moco}, moco_file)
    return state, torchvision_file, moco_file


def test_resnet50_has_torchvision_names_and_size():
    state = ResNet50Trunk().state_dict()
    for key, shape in TORCHVISION_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in ResNet50Trunk().parameters()) == 25_557_032 - 2_049_000


def test_resnet50_teacher_loads_torchvision_and_moco_checkpoints(resnet_checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # the default install: pcseg's own layout
    state, torchvision_file, moco_file = resnet_checkpoints
    images = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    maps = []
    for path in (torchvision_file, moco_file):
        teacher = build_teacher({"name": "ResNet50", "weights": str(path)})
        assert isinstance(teacher.network.net, ResNet50Trunk) and teacher.out_channels == 2048
        loaded = teacher.network.net.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())
        assert not any(p.requires_grad for p in teacher.parameters())
        maps.append(teacher(images))
    assert maps[0].shape == (1, 2048, 2, 3)  # stride 32
    torch.testing.assert_close(maps[0], maps[1])
    dilated = build_teacher({"name": "ResNet50", "weights": str(moco_file), "dilation": [False, True, True]})
    assert dilated(images).shape == (1, 2048, 8, 12)  # stride 8


def test_teacher_weights_that_do_not_fit_raise_naming_the_file(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(ValueError, match=r"bad.pth: not a ResNet-50 in torchvision's layout: missing \['bn1"):
        build_teacher({"name": "ResNet50", "weights": str(path)})
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_teacher({"name": "ResNet50", "weights": str(tmp_path / "absent.pth")})


def _camera_batch():
    """Two 8x12 images with 6 superpixels each, 40 points on a 3-D grid, some outside the image."""
    gen = torch.Generator().manual_seed(3)
    coords = torch.cat([torch.zeros(20, 1), torch.ones(20, 1)]).to(torch.int32)
    coords = torch.cat([coords, torch.randint(0, 6, (40, 3), generator=gen, dtype=torch.int32)], 1)
    coords = torch.unique(coords, dim=0)
    superpixels = torch.arange(6).repeat_interleave(16).reshape(8, 12)
    point_superpixel = torch.randint(-1, 6, (len(coords),), generator=gen)
    point_superpixel = torch.where((coords[:, 0] == 1) & (point_superpixel >= 0), point_superpixel + 6,
                                   point_superpixel)
    return {"coords": coords, "feats": torch.rand(len(coords), 1, generator=gen),
            "inverse": torch.arange(len(coords)), "point_superpixel": point_superpixel,
            "images": torch.randint(0, 256, (2, 3, 8, 12), generator=gen, dtype=torch.uint8),
            "superpixels": torch.stack([superpixels, superpixels + 6]), "num_superpixels": 12,
            "pixel": torch.zeros(len(coords), 2, dtype=torch.int64), "P": torch.zeros(2, 3, 4),
            "Tr": torch.zeros(2, 4, 4)}


def test_slidr_loss_is_the_info_nce_of_pooled_head_outputs():
    torch.manual_seed(0)
    backbone = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3})
    method = SLidR(teacher=PoolTeacher(), projection_dim=8, head_lr=0.5)
    model = method.wrap(backbone)
    assert isinstance(model, SLidRModel) and model.backbone is backbone and set(model.saved_modules()) == {"heads"}
    groups = method.param_groups(model)
    trained = [p for n, p in backbone.named_parameters() if not n.startswith("head.")]  # the classifier is unused
    assert groups[0]["params"] == trained and groups[1] == {"params": list(model.heads.parameters()), "lr": 0.5}
    assert not any(p.requires_grad for p in backbone.head.parameters())
    assert model.teacher.out_channels == 6 and not model.teacher.training
    model.train()
    assert not model.teacher.training and model.backbone.training
    batch = _camera_batch()
    loss = method.losses(model, batch, STATE)["nce"]

    points, pixels = model(batch)
    assert points.shape == (len(batch["coords"]), 8) and pixels.shape == (2, 8, 8, 12)
    torch.testing.assert_close(pixels.norm(dim=1), torch.ones(2, 8, 12))
    keep = [s for s in range(12) if (batch["point_superpixel"] == s).any()]
    k = torch.stack([points[batch["point_superpixel"] == s].mean(0) for s in keep])
    q = torch.stack([pixels[s // 6].permute(1, 2, 0)[batch["superpixels"][s // 6] == s].mean(0) for s in keep])
    torch.testing.assert_close(loss, info_nce(k, q, 0.07))

    loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters())
    assert backbone.stem[0].weight.grad is not None and backbone.head.module.weight.grad is None
    assert not any(p.grad is not None for p in model.teacher.parameters())


class _FixedFeatures(nn.Module):
    """A 'backbone' whose features are given: forward_features returns ``feats`` on the input's sites."""

    def __init__(self, feats: torch.Tensor):
        super().__init__()
        self.feats = nn.Parameter(feats)
        self.feature_channels = feats.shape[1]

    def forward_features(self, x):
        return SparseTensor(self.feats, x.C, context=x.context)


def _unit(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def _mean(rows):
    return [sum(c) / len(rows) for c in zip(*rows)]


def test_slidr_loss_by_hand_normalises_each_point_and_pixel_before_pooling():
    """Identity heads, a teacher that passes the image's R, G values through: every number is known.

    Points (superpixel): (2,0) (0,4) in 0, (1,0) in 1, (1,3) in 2, (5,5) in none. Pixels (superpixel):
    (3,0) (0,1) in 0, (1,1) in 1, (0,2) in 2, (4,4) in 3 (no point: left out). Unit vectors are averaged
    per superpixel, then normalised again by the InfoNCE: without the per-point / per-pixel
    normalisation superpixel 0 would pool (1, 2) / (1.5, 0.5) instead of the direction (1, 1).
    """
    points = [[2.0, 0.0], [0.0, 4.0], [1.0, 0.0], [1.0, 3.0], [5.0, 5.0]]
    pixels = [[3, 0], [0, 1], [1, 1], [0, 2], [4, 4]]
    point_superpixel, pixel_superpixel = [0, 0, 1, 2, -1], [0, 0, 1, 2, 3]
    teacher = nn.Conv2d(3, 2, 1, bias=False)
    heads_points, heads_pixels = nn.Linear(2, 2), nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[255.0, 0, 0], [0, 255.0, 0]])[:, :, None, None])  # (R, G) * 255 / 255
        heads_points.weight.copy_(torch.eye(2))
        heads_points.bias.zero_()
        heads_pixels.weight.copy_(torch.eye(2)[:, :, None, None])
        heads_pixels.bias.zero_()
    image = torch.zeros(1, 3, 1, 5, dtype=torch.uint8)
    image[0, :2, 0] = torch.tensor(pixels, dtype=torch.uint8).T
    coords = torch.cat([torch.zeros(5, 1), torch.arange(5)[:, None], torch.zeros(5, 2)], 1).to(torch.int32)
    batch = {"coords": coords, "feats": torch.ones(5, 1), "inverse": torch.arange(5),
             "point_superpixel": torch.tensor(point_superpixel), "images": image,
             "superpixels": torch.tensor([[pixel_superpixel]]), "num_superpixels": 4,
             "pixel": torch.zeros(5, 2, dtype=torch.int64), "P": torch.zeros(1, 3, 4), "Tr": torch.zeros(1, 4, 4)}
    method = SLidR(teacher=teacher, projection_dim=2, temperature=0.5)
    model = method.wrap(_FixedFeatures(torch.tensor(points)))
    model.heads["points"].load_state_dict(heads_points.state_dict())
    model.heads["pixels"].load_state_dict(heads_pixels.state_dict())

    k = [_unit(_mean([_unit(p) for p, s in zip(points, point_superpixel) if s == i])) for i in range(3)]
    q = [_unit(_mean([_unit(p) for p, s in zip(pixels, pixel_superpixel) if s == i])) for i in range(3)]
    assert k[0] == pytest.approx([math.sqrt(0.5)] * 2) and q[0] == pytest.approx([math.sqrt(0.5)] * 2)
    total = 0.0
    for i in range(3):
        s = [sum(a * b for a, b in zip(k[i], q[j])) / 0.5 for j in range(3)]
        total += -s[i] + math.log(sum(math.exp(v) for v in s))
    assert method.losses(model, batch, STATE)["nce"].item() == pytest.approx(total / 3, rel=1e-5)


class _CountingTeacher(PoolTeacher):
    """PoolTeacher that records how many images it was run on."""

    def __init__(self):
        super().__init__()
        self.images_seen = 0

    def forward(self, images):
        self.images_seen += len(images)
        return super().forward(images)


def test_cached_teacher_returns_the_teachers_maps_and_skips_images_it_holds():
    torch.manual_seed(0)
    counting = _CountingTeacher()
    reference = build_teacher(PoolTeacher())
    reference.network.load_state_dict(counting.state_dict(), strict=False)
    cached = CachedTeacher(build_teacher(counting), max_images=3)
    images = torch.rand(5, 3, 8, 12)
    for rows in ([0, 1], [1, 0, 2], [2, 2, 3], [0, 4], [1]):  # repeats, a duplicate within a batch, evictions
        torch.testing.assert_close(cached(images[rows]), reference(images[rows]))
    # computed: 0 1 | 2 | 3 (once; 1 evicted) | 4 (2 evicted) | 1 again; plus the 64x64 probe of out_channels
    assert (cached.misses, cached.hits) == (6, 5) and counting.images_seen == 6 + 1
    assert cached.out_channels == 6 and len(cached._maps) == 3
    with pytest.raises(ValueError, match="max_images expected >= 1"):
        CachedTeacher(reference, 0)


def test_slidr_with_a_teacher_cache_gives_the_same_loss():
    torch.manual_seed(0)
    backbone = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3}).eval()
    plain, cached = SLidR(teacher=_CountingTeacher(), projection_dim=8), \
        SLidR(teacher=_CountingTeacher(), projection_dim=8, teacher_cache=4)
    plain_model, cached_model = plain.wrap(backbone), cached.wrap(backbone)
    cached_model.heads.load_state_dict(plain_model.heads.state_dict())
    cached_model.teacher.teacher.network.load_state_dict(plain_model.teacher.network.state_dict())
    batch = _camera_batch()
    for _ in range(3):
        torch.testing.assert_close(cached.losses(cached_model, batch, STATE)["nce"],
                                   plain.losses(plain_model, batch, STATE)["nce"])
    assert plain_model.teacher.network.images_seen == 1 + 6
    assert cached_model.teacher.teacher.network.images_seen == 1 + 2
    with pytest.raises(ValueError, match="teacher_cache >= 0"):
        SLidR(teacher=PoolTeacher(), teacher_cache=-1)


def test_slidr_is_registered_and_checks_its_batch():
    method = build_method({"name": "SLidR", "teacher": {"name": "ResNet50", "weights": "absent.pth"}})
    assert METHODS["SLidR"] is SLidR  # the teacher's weights are read when wrap builds it, not before
    backbone = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3})
    with pytest.raises(FileNotFoundError, match="absent.pth not found"):
        method.wrap(backbone)
    method = SLidR(teacher=PoolTeacher())
    with pytest.raises(KeyError, match="lacks images.*use data.name: LidarCamera"):
        method.losses(method.wrap(backbone), {"coords": torch.zeros(1, 4, dtype=torch.int32)}, STATE)
    with pytest.raises(TypeError, match="expected the SLidRModel of SLidR.wrap"):
        method.losses(backbone, _camera_batch(), STATE)
    with pytest.raises(TypeError, match="expected the SLidRModel of SLidR.wrap"):
        method.param_groups(backbone)
    with pytest.raises(ValueError, match="SLidR.teacher: expected an nn.Module or a mapping"):
        SLidR(teacher={"weights": "x"})


def test_linear_probe_trains_only_the_classifier_with_frozen_batchnorm():
    model = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 4, "D": 3})
    method = Supervised(freeze_backbone=True)
    (group,) = method.param_groups(model)
    assert {id(p) for p in group["params"]} == {id(p) for p in model.head.parameters()}
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.module.weight", "head.module.bias"]
    model.train()
    method.before_epoch(model, STATE)
    assert model.head.training and not model.stem.training
    running = model.stem[1].module.running_mean.clone()
    batch = _camera_batch()
    batch["labels"] = torch.randint(0, 4, (len(batch["coords"]),))
    method.losses(model, batch, STATE)["ce"].backward()
    torch.testing.assert_close(model.stem[1].module.running_mean, running)  # BatchNorm statistics frozen
    assert model.head.module.weight.grad is not None
    # the default groups: every parameter that requires a gradient (here only the classifier's are left)
    assert Supervised().param_groups(model)[0]["params"] == list(model.head.parameters())
    fresh = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 4, "D": 3})
    assert Supervised().param_groups(fresh)[0]["params"] == list(fresh.parameters())


def test_linear_probe_can_reestimate_batchnorm_statistics_on_the_training_data():
    model = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 4, "D": 3})
    method = Supervised(freeze_backbone=True, frozen_bn=False)
    method.param_groups(model)
    model.train()
    method.before_epoch(model, STATE)
    bn = model.stem[1].module
    assert bn.training and not model.stem[0].training and model.head.training
    inputs = []
    bn.register_forward_hook(lambda module, args, out: inputs.append(args[0].detach()))
    batch = _camera_batch()
    batch["labels"] = torch.randint(0, 4, (len(batch["coords"]),))
    method.losses(model, batch, STATE)["ce"].backward()
    torch.testing.assert_close(bn.running_mean, 0.1 * inputs[0].mean(0))  # momentum 0.1 from mean 0
    assert bn.weight.grad is None and not bn.weight.requires_grad  # affine parameters stay frozen


def test_head_lr_puts_the_classifier_in_its_own_optimiser_group():
    model = build_model({"name": "Res16UNet14A", "in_channels": 1, "num_classes": 4, "D": 3})
    trunk, head = Supervised(head_lr=2.0).param_groups(model)
    assert head == {"params": list(model.head.parameters()), "lr": 2.0} and "lr" not in trunk
    assert len(trunk["params"]) + 2 == len(list(model.parameters()))
    assert {id(p) for p in trunk["params"]}.isdisjoint(id(p) for p in head["params"])
    (probe,) = Supervised(freeze_backbone=True, head_lr=0.5).param_groups(model)
    assert probe["lr"] == 0.5 and len(probe["params"]) == 2
    with pytest.raises(ValueError, match="Supervised.head_lr: expected > 0"):
        Supervised(head_lr=0.0)


def test_default_install_does_not_need_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    assert isinstance(teacher_module._resnet50_layout((False, False, False)), ResNet50Trunk)
