"""CPCM: RegionMask against numpy, stop-gradient, per-scene masks from the run seed, one trainer step.

Its loss terms (shared with HPAL) are tested in tests/methods/test_common.py."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pcseg.data.synthetic import make_scannet
from pcseg.engine.build import build_trainer, setup_runtime
from pcseg.engine.config import config_from_dict
from pcseg.engine.hooks import TrainState
from pcseg.methods import METHODS, build_method
from pcseg.methods.common import step_generator
from pcseg.methods.cpcm import CPCM, RegionMask
from pcseg.methods.cpcm import region_boundaries, region_ids
from pcseg.sparse import SparseTensor


def _cube(side: int, batch: int = 0) -> torch.Tensor:
    """(side**3, 4) int32 coords of a full cube, batch index ``batch``."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return torch.cat([torch.full((len(grid), 1), batch), grid], 1).to(torch.int32)


def _generators(*seeds: int) -> list[torch.Generator]:
    """One CPU generator per scene, seeded by ``seeds``."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def _scene(n: int, seed: int) -> torch.Tensor:
    """(n, 3) int32 skewed voxel coordinates (quantiles far from the box's equal split)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy((rng.exponential([10.0, 4.0, 2.0], (n, 3))).astype(np.int32))


@pytest.mark.parametrize("grid", [2, 4, 8])
def test_region_boundaries_are_numpy_quantiles(grid):
    coords = _scene(500, grid)
    expected = np.quantile(coords.numpy(), np.arange(1, grid) / grid, axis=0).T
    np.testing.assert_allclose(region_boundaries(coords, grid).numpy(), expected, rtol=0, atol=1e-12)
    slabs = np.stack([np.searchsorted(expected[a], coords[:, a].numpy(), side="right") for a in range(3)], 1)
    np.testing.assert_array_equal(region_ids(coords, grid).numpy(), slabs @ grid ** np.arange(3))


@pytest.mark.parametrize("ratio,grid,side", [(0.75, 4, 8), (0.5, 2, 6), (0.75, 8, 16), (0.3, 4, 8)])
def test_masked_fraction_of_regions_is_the_ratio(ratio, grid, side):
    coords = torch.cat([_cube(side, 0), _cube(side, 1)])  # every region holds side**3 / grid**3 voxels
    mask = RegionMask(ratio, grid)(coords, _generators(0, 1))
    n_masked = round(ratio * grid ** 3)
    for b in (0, 1):
        rows = coords[:, 0] == b
        ids = region_ids(coords[rows, 1:], grid)
        masked_regions = ids[mask[rows]].unique()
        assert len(masked_regions) == n_masked
        assert not (mask[rows] & torch.isin(ids, masked_regions).logical_not()).any()  # whole regions
        assert mask[rows].float().mean().item() == pytest.approx(n_masked / grid ** 3)


def test_region_mask_splits_each_scene_by_its_own_quantiles():
    coords = torch.cat([torch.cat([torch.zeros(400, 1, dtype=torch.int32), _scene(400, 1)], 1),
                        torch.cat([torch.ones(300, 1, dtype=torch.int32), _scene(300, 2) + 50], 1)])
    mask = RegionMask(0.75, 4)(coords, _generators(3, 4))
    for b in (0, 1):
        rows = coords[:, 0] == b
        ids = region_ids(coords[rows, 1:], 4)
        masked, kept = set(ids[mask[rows]].tolist()), set(ids[~mask[rows]].tolist())
        assert not masked & kept and len(masked) <= 48 and len(masked | kept) == len(ids.unique())


def test_seeded_masks_are_reproducible_and_each_scene_uses_its_own_generator():
    coords = torch.cat([_cube(8, 0), _cube(8, 1)])
    rm = RegionMask(0.75, 4)
    a = rm(coords, _generators(7, 9))
    assert torch.equal(a, rm(coords, _generators(7, 9)))
    assert not torch.equal(a, rm(coords, _generators(8, 9)))
    # scene 1 alone (as batch index 0) with scene 1's generator gets the same mask: no draw depends on scene 0
    assert torch.equal(rm(_cube(8, 0), _generators(9)), a[coords[:, 0] == 1])
    assert torch.equal(rm(coords, [step_generator(0, 5, 0), step_generator(0, 5, 1)]),
                       rm(coords, [step_generator(0, 5, 0), step_generator(0, 5, 1)]))
    assert not torch.equal(rm(coords, [step_generator(0, 5, 0)] * 2), rm(coords, [step_generator(0, 6, 0)] * 2))


def test_apply_zeroes_masked_rows_only():
    coords = _cube(4)
    feats = torch.randn(len(coords), 3)
    mask = RegionMask(0.5, 2)(coords, _generators(1))
    out = RegionMask(0.5, 2).apply(feats, coords, _generators(1))
    assert torch.equal(out[mask], torch.zeros_like(out[mask])) and torch.equal(out[~mask], feats[~mask])


@pytest.mark.parametrize("kwargs", [{"mask_ratio": 1.5}, {"grid": 0}, {"grid": 2.0}])
def test_region_mask_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match="RegionMask"):
        RegionMask(**kwargs)


class Pointwise(nn.Module):
    """Per-voxel linear classifier; records the batch sizes it sees."""

    def __init__(self, channels: int = 3, classes: int = 4):
        super().__init__()
        self.linear = nn.Linear(channels, classes)
        self.scenes, self.outputs = [], []

    def forward(self, x):
        self.scenes.append(x.batch_size)
        self.outputs.append(self.linear(x.F))
        return SparseTensor(self.outputs[-1], x.C, context=x.context)


def _two_view_batch(n_scenes: int = 2, side: int = 6, noise: float = 0.3):
    """Both views hold the same voxels (view 2 permuted, features with ``noise`` added)."""
    g = torch.Generator().manual_seed(0)
    coords = torch.cat([_cube(side, b) for b in range(n_scenes)])
    m = len(coords)
    perm = torch.randperm(m, generator=g)  # view 2: the same voxels in another order (points map through inverse)
    labels = torch.full((m,), -100)
    labels[::17] = torch.randint(0, 4, (len(labels[::17]),), generator=g)
    feats = torch.randn(m, 3, generator=g)
    inverse = torch.arange(m)
    return {"coords": coords, "feats": feats.clone().requires_grad_(True), "labels": labels, "inverse": inverse,
            "view2_coords": coords[perm],
            "view2_feats": (feats[perm] + noise * torch.randn(m, 3, generator=g)).requires_grad_(True),
            "view2_labels": labels[perm], "view2_inverse": torch.argsort(perm),
            "names": [f"s{b}" for b in range(n_scenes)]}


STATE = TrainState(epoch=9, step=90, max_epochs=10, max_steps=100, iters_per_epoch=10)


@pytest.mark.parametrize("target_view", [1, 2])
def test_no_gradient_reaches_the_stop_gradient_branch(target_view):
    batch, model = _two_view_batch(), Pointwise()
    losses = CPCM(target_view=target_view, rampup_epochs=0).losses(model, batch, STATE)
    assert model.scenes == [6]  # one forward: view 1, view 2, masked view 2 of 2 scenes
    logits = model.outputs[0]
    (grad,) = torch.autograd.grad(losses["js"], logits)
    view1, view2, masked = torch.split(grad, [len(batch["coords"])] * 3)
    assert not view1.any() and not view2.any()  # both unmasked branches: targets (detached) or unused
    assert masked.abs().sum() > 0


def _scenes(batch, keep):
    """The two-view batch of the scenes ``keep`` of ``batch`` (cubes of equal size, batch indices renumbered)."""
    m = len(batch["coords"]) // len(batch["names"])
    out = {}
    for key in ("coords", "feats", "labels", "view2_coords", "view2_feats", "view2_labels"):
        parts = [batch[key][b * m:(b + 1) * m].detach().clone() for b in keep]
        for k, part in enumerate(parts):
            if key.endswith("coords"):
                part[:, 0] = k
        out[key] = torch.cat(parts)
    return {**out, "inverse": torch.arange(len(out["coords"])), "view2_inverse": torch.arange(len(out["coords"])),
            "names": [batch["names"][b] for b in keep]}


def test_the_masked_view_gets_each_scenes_mask_from_the_run_seed_step_and_joined_position():
    batch = _two_view_batch(n_scenes=4)  # view 2 permuted across the whole batch: only rows of view 1 order
    batch["view2_coords"], batch["view2_feats"] = batch["coords"], batch["feats"].detach() + 1.0
    method = CPCM(mask_ratio=0.75, grid=2)
    zeroed = [(method.branches(batch, STATE)[2][0] == 0).all(1)]  # before set_seed: seed 0
    method.set_seed(7)
    joined = (method.branches(batch, STATE)[2][0] == 0).all(1)
    zeroed.append(joined)
    for seed, mask in zip((0, 7), zeroed):
        positions = [step_generator(seed, STATE.step, k) for k in range(4)]
        assert torch.equal(mask, RegionMask(0.75, 2)(batch["coords"], positions))
    assert not torch.equal(*zeroed)
    assert mask.float().mean().item() == pytest.approx(0.75)  # 6 of the 8 octants of each cube
    # rank r of 2 holds scenes r, r + 2 of the joined batch and draws exactly their masks
    m = len(batch["coords"]) // 4
    for rank in (0, 1):
        state = TrainState(**{**STATE.__dict__, "rank": rank, "world_size": 2})
        shard = _scenes(batch, [rank, rank + 2])
        mask = (method.branches(shard, state)[2][0] == 0).all(1)
        assert torch.equal(mask, torch.cat([joined[b * m:(b + 1) * m] for b in (rank, rank + 2)]))


def test_consistency_only_compares_the_two_unmasked_views():
    batch, model = _two_view_batch(), Pointwise()
    losses = CPCM(consistency_only=True, rampup_epochs=0).losses(model, batch, STATE)
    assert model.scenes == [4]
    losses["js"].backward()
    assert not batch["feats"].grad.any() and batch["view2_feats"].grad.abs().sum() > 0
    # views with equal features (view 2 a permutation of view 1, matching inverse maps) agree exactly
    same = _two_view_batch(noise=0.0)
    assert CPCM(consistency_only=True, rampup_epochs=0).losses(model, same, STATE)["js"].item() == \
        pytest.approx(0.0, abs=1e-6)


def test_ce_uses_the_labelled_voxels_of_both_views():
    batch, model = _two_view_batch(), Pointwise()
    ce = CPCM().losses(model, batch, STATE)["ce"]
    logits = model.linear(batch["feats"])
    labelled = batch["labels"] != -100
    logits2 = model.linear(batch["view2_feats"])
    labelled2 = batch["view2_labels"] != -100
    expected = nn.functional.cross_entropy(torch.cat([logits[labelled], logits2[labelled2]]),
                                           torch.cat([batch["labels"][labelled], batch["view2_labels"][labelled2]]))
    assert ce.item() == pytest.approx(expected.item(), rel=1e-5)


def test_cpcm_is_registered_and_checks_its_keys():
    assert METHODS["CPCM"] is CPCM
    assert build_method({"name": "CPCM", "grid": 8, "weight": 10.0}).region_mask.grid == 8
    with pytest.raises(TypeError, match="unknown key"):
        build_method({"name": "CPCM", "mask_ration": 0.5})
    with pytest.raises(ValueError, match="target_view"):
        CPCM(consistency_only=True, target_view=2)
    with pytest.raises(KeyError, match="TwoViews"):
        CPCM().losses(Pointwise(), {k: v for k, v in _two_view_batch().items() if not k.startswith("view2")}, STATE)


def test_one_cpcm_epoch_through_the_trainer(tmp_path):
    data = tmp_path / "scannet"
    make_scannet(data, num_scenes=3, seed=0, num_points=1000)  # 2 train rooms, 1 val room
    cfg = config_from_dict({
        "data": {"name": "TwoViews",
                 "kwargs": {"dataset": "ScanNet", "root": str(data), "voxel_size": 0.3,
                            "view_transforms": [{"name": "RandomRotateZ"}, {"name": "RandomScale"},
                                                {"name": "RandomFlip"}, {"name": "ChromaticJitter"},
                                                {"name": "NormalizeColor"}]},
                 "val": {"split": "val", "transforms": [{"name": "NormalizeColor"}]}, "batch_size": 2},
        "model": {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 20, "D": 3},
        "method": {"name": "CPCM", "grid": 2, "rampup_epochs": 0},
        "train": {"epochs": 1, "log_period": 1}, "seed": 3,
    })
    method = build_method(cfg.method)
    trainer = build_trainer(cfg, method, setup_runtime(cfg), tmp_path / "work")
    assert method.seed == 3  # the run seed, the same on every rank: the masks derive from cfg.seed
    batch = next(iter(trainer.train_loader))
    assert 100 < len(batch["coords"]) < 2000 and len(batch["view2_coords"]) > 100
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    train, val = records[0], records[-1]
    assert train["type"] == "train" and val["type"] == "val"
    assert math.isfinite(train["loss_ce"]) and train["loss_js"] > 0
    assert train["loss"] == pytest.approx(train["loss_ce"] + train["loss_js"], rel=1e-5)
