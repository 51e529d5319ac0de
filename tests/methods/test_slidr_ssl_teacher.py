"""The label-free SLidR teacher: dense two-view InfoNCE by hand, augmentation geometry, training
without labels, the frozen teacher, its checkpoint, and the slidr_v1 protocol's overrides."""
import copy
import inspect
import math
from pathlib import Path
from string import Template

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pcseg.data.synthetic import write_image_folder
from pcseg.data.synthetic.write_images import render_street_image
from pcseg.engine.checkpoint import save_checkpoint
from pcseg.engine.config import load_config
from pcseg.methods.slidr import (Augmentation, ContrastiveLearner, ContrastiveSchedule, ImageFiles,
                                 SparseImageFeatures, build_teacher, train_contrastive)
from pcseg.methods.slidr.ssl_teacher import Contrastive, contrastive_batch, contrastive_step, view_pair
from pcseg.models import build_model
from pcseg.utils.errors import InputError
from pcseg.utils.yaml_io import load_yaml_file

REPO = Path(__file__).resolve().parents[2]
MODEL_2D = {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 4, "D": 2}
TINY_AUG = Augmentation(crop_size=(8, 16))


class _Identity(nn.Module):
    def forward(self, images):
        return images


def _identity_learner(t):
    """Network = identity on the view, projector = identity (ReLU is the identity on colours in [0, 1])."""
    learner = ContrastiveLearner(_Identity(), feature_channels=3, hidden=3, projection_dim=3, temperature=t)
    with torch.no_grad():
        for layer in (learner.projector[0], learner.projector[2]):
            layer.weight.copy_(torch.eye(3))
            layer.bias.zero_()
    return learner


def _hand_info_nce(a, p, t):
    a = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in a]
    p = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in p]
    total = 0.0
    for i in range(len(a)):
        s = [sum(x * y for x, y in zip(a[i], p[j])) / t for j in range(len(p))]
        total += -s[i] + math.log(sum(math.exp(v) for v in s))
    return total / len(a)


def test_dense_loss_is_the_symmetric_info_nce_of_the_sampled_locations_by_hand():
    # one image per view, 1 x 2 pixels; grid x = -0.5 / +0.5 are the two pixel centres (align_corners=False)
    view1 = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]], [[0.0, 0.0]]]])   # pixels (1,0,0), (0,1,0)
    view2 = torch.tensor([[[[0.5, 0.0]], [[0.5, 0.2]], [[0.0, 1.0]]]])   # pixels (.5,.5,0), (0,.2,1)
    grid1 = torch.tensor([[[-0.5, 0.0], [0.5, 0.0]]])
    grid2 = torch.tensor([[[0.5, 0.0], [-0.5, 0.0]]])  # view 2 is mirrored: location k sits at the other pixel
    a, b = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.2, 1.0], [0.5, 0.5, 0.0]]
    t = 0.2
    expected = 0.5 * (_hand_info_nce(a, b, t) + _hand_info_nce(b, a, t))
    loss = _identity_learner(t)(view1, view2, grid1, grid2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_views_keep_shapes_and_dtypes():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 30, 50), generator=gen, dtype=torch.uint8)
    aug = Augmentation(crop_size=(12, 20))
    v1, v2, g1, g2 = view_pair(image, aug, 7, gen)
    assert v1.shape == v2.shape == (3, 12, 20) and v1.dtype == v2.dtype == torch.float32
    assert g1.shape == g2.shape == (7, 2) and g1.dtype == g2.dtype == torch.float32
    assert 0 <= v1.min() and v1.max() <= 1 and g1.abs().max() <= 1 and g2.abs().max() <= 1
    images = [np.asarray(image.permute(1, 2, 0)), np.zeros((40, 60, 3), np.uint8)]  # sizes may differ
    batch = contrastive_batch(images, [1, 0, 1], aug, 5, gen)
    assert [tuple(t.shape) for t in batch] == [(3, 3, 12, 20), (3, 3, 12, 20), (3, 5, 2), (3, 5, 2)]
    with pytest.raises(ValueError, match=r"image expected \(3, H, W\) uint8"):
        view_pair(image.float(), aug, 7, gen)


def test_both_grids_point_at_the_same_image_location():
    """An image whose red channel is its column and green its row: read through either view's grid,
    a location must give the same (column, row): the crops, resizing and flips are undone exactly."""
    rows, cols = np.indices((64, 256))
    image = torch.from_numpy(np.stack([cols, rows * 4, np.zeros_like(cols)]).astype(np.uint8))
    aug = Augmentation(crop_size=(16, 32), jitter_p=0.0, grayscale_p=0.0)
    flips = 0
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        v1, v2, g1, g2 = view_pair(image, aug, 50, gen)
        flips += int((v1[0, 0, 0] > v1[0, 0, -1]).item()) + int((v2[0, 0, 0] > v2[0, 0, -1]).item())
        at1, at2 = (F.grid_sample(v[None], g[None, None], align_corners=False, padding_mode="border")[0, :2, 0] * 255
                    for v, g in ((v1, g1), (v2, g2)))
        # equal up to half a view pixel (at most 256 / 32 columns = 4 red, 64 / 16 rows = 8 green units)
        # where a location lies between a crop's last pixel centre and its edge
        assert ((at1 - at2).abs() <= torch.tensor([[4.0], [8.0]]) + 1e-3).all(), seed
        assert (at1 - at2).abs().mean() < 1.0
    assert 0 < flips < 24  # both mirrored and plain views occurred


class _ImagesOnly:
    """A reader that serves images and raises on any other access (labels, names, files)."""

    def __init__(self, images):
        self._images = images

    def __len__(self):
        return len(self._images)

    def __getitem__(self, index):
        return self._images[index]

    def __getattr__(self, name):
        raise AssertionError(f"the contrastive teacher read {name!r}, not an image")

    def load(self, name):
        raise AssertionError("the contrastive teacher read a scene with labels")


def _street_images(count=3):
    """(12, 40, 3) uint8 synthetic street camera images."""
    return [render_street_image(np.random.default_rng([7, i]), width=40).image for i in range(count)]


def _learner():
    net = build_model(MODEL_2D)
    return ContrastiveLearner(SparseImageFeatures(net), net.feature_channels, 16, 8)


def test_training_reads_images_only():
    torch.manual_seed(0)
    learner = _learner()
    history = train_contrastive(learner, _ImagesOnly(_street_images()),
                                ContrastiveSchedule(steps=2, batch_size=2, samples_per_image=6, augmentation=TINY_AUG))
    assert len(history) == 2 and all(math.isfinite(v) for v in history)
    assert "labels" not in inspect.signature(train_contrastive).parameters


def test_two_steps_reduce_the_loss_on_a_fixed_batch_against_a_frozen_copy():
    torch.manual_seed(1)
    learner = _learner()
    frozen = copy.deepcopy(learner)
    batch = contrastive_batch(_street_images(), [0, 1, 2], TINY_AUG, 8, torch.Generator().manual_seed(3))
    optimizer = torch.optim.AdamW(learner.parameters(), lr=0.01)
    learner.train()
    first = contrastive_step(learner, optimizer, batch)
    contrastive_step(learner, optimizer, batch)
    with torch.no_grad():
        before, after = frozen.train()(*batch).item(), learner(*batch).item()
    assert first == pytest.approx(before, rel=1e-5)  # the copy is the untrained learner
    assert after < before - 0.05


def _folder_with_corrupt_labels(root):
    write_image_folder(root, 4, seed=3, width=40)
    for label in root.glob("*/labels/*.png"):
        label.write_bytes(b"not a png: reading this label map would fail")
    return f"{root}/*/images/*.png"


def _spec(tmp_path, images, **changes):
    return {"name": "Contrastive", "checkpoint": str(tmp_path / "teacher.pth"), "images": images, "model": MODEL_2D,
            "steps": 1, "batch_size": 2, "samples_per_image": 6, "hidden": 16, "projection_dim": 8,
            "crop_size": [8, 16], "device": "cpu", **changes}


def test_contrastive_teacher_is_frozen_checkpointed_and_reused(tmp_path):
    images = _folder_with_corrupt_labels(tmp_path / "street")
    torch.manual_seed(5)
    rng_before = torch.get_rng_state()
    teacher = build_teacher(_spec(tmp_path, images))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's generator is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["street", "teacher.pth"]  # no temporary left
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    out = teacher(torch.rand(2, 3, 8, 12))
    assert out.shape == (2, teacher.out_channels, 8, 12) and not out.requires_grad
    saved = torch.load(tmp_path / "teacher.pth", weights_only=True)
    assert saved["settings"]["steps"] == 1 and len(saved["history"]) == 1 and len(saved["images"]) == 4
    assert all(torch.equal(v, saved["model"][k]) for k, v in teacher.network.model.state_dict().items())

    for png in (tmp_path / "street").glob("*/images/*.png"):  # a reused teacher reads no image
        png.unlink()
    again = build_teacher(_spec(tmp_path, images))
    assert all(torch.equal(v, saved["model"][k]) for k, v in again.network.model.state_dict().items())
    with pytest.raises(InputError, match=r"teacher.pth: settings: expected a teacher trained with the settings "
                                         r"asked for, found other ones \(steps: 1 there, 2 asked\); delete"):
        build_teacher(_spec(tmp_path, images, steps=2))
    with pytest.raises(InputError, match=r"\*/images/\*.png: images: expected image files matching this pattern"):
        build_teacher(_spec(tmp_path, images, checkpoint=str(tmp_path / "other.pth")))
    save_checkpoint({"model": {}}, tmp_path / "foreign.pth")
    with pytest.raises(InputError, match=r"foreign.pth: kind: expected a contrastive teacher checkpoint"):
        build_teacher(_spec(tmp_path, images, checkpoint=str(tmp_path / "foreign.pth")))


def test_image_files_reads_only_matching_images(tmp_path):
    images = _folder_with_corrupt_labels(tmp_path)
    source = ImageFiles(images)
    assert len(source) == 4 and all(p.parent.name == "images" for p in source.paths)
    assert source[0].shape == (12, 40, 3) and source[0].dtype == np.uint8
    broken = ImageFiles(f"{tmp_path}/*/labels/*.png")
    with pytest.raises(InputError, match=r"street0000.png: image: expected a readable image file"):
        broken[0]


def _protocol():
    return load_yaml_file(REPO / "benchmarks" / "protocols" / "slidr_v1.yaml")


def test_the_slidr_v1_overrides_apply_to_the_shipped_configs(tmp_path):
    protocol = _protocol()
    assert protocol["seeds"] == [0, 1, 2, 3, 4]
    split_seeds = [protocol["data"]["splits"][s]["generator_seed"] for s in ("train", "val", "test")]
    assert len(set(split_seeds + [protocol["teacher"]["images"]["generator_seed"]])) == 4  # disjoint streets
    fill = {"out": str(tmp_path), "seed": 3}
    common = protocol["common_overrides"]
    pretrain, downstream = protocol["pretrain"], protocol["downstream"]
    assert set(pretrain["rows"]) == {"point", "superpixel"}
    for row, row_overrides in pretrain["rows"].items():
        cfg = load_config(REPO / pretrain["config"], [Template(o).substitute(fill) for o in
                                                      (*common, *pretrain["overrides"], *row_overrides)])
        teacher = dict(cfg.method["teacher"])
        assert teacher["name"] == "Contrastive" and "weights" not in teacher  # MoCo's keys are gone
        assert set(teacher) - {"name"} <= set(inspect.signature(Contrastive).parameters)
        assert teacher["checkpoint"] == f"{tmp_path}/teacher/contrastive.pth"
        assert (cfg.method["pooling"], cfg.model["name"], cfg.seed) == (row, "Res16UNet14A", 3)
    for task in downstream.values():
        assert set(task["rows"]) == {"random", "point", "superpixel"}
        for row, row_overrides in task["rows"].items():
            overrides = [Template(o).substitute(fill) for o in
                         (*common, *task["overrides"], *row_overrides, *protocol["metric"]["overrides"])]
            cfg = load_config(REPO / task["config"], overrides)
            assert cfg.data.val.kwargs["root"] == f"{tmp_path}/kitti_test"  # the test split in the val slot
            assert cfg.data.kwargs["voxel_size"] == 0.25 and cfg.train.epochs == cfg.eval.period
            assert cfg.model.get("init_from") == (None if row == "random" else
                                                  f"{tmp_path}/runs/pretrain_{row}/seed3/backbone.pth")
