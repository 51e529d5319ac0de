"""HPAL against independent oracles: brute-force region margins and greedy suppression, exact and
never-repeated selections, the EMA / KL / pseudo-label formulas by hand, per-scene student noise
(the teacher's checkpoint and resume: tests/engine/test_method_checkpoints.py)."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from pcseg.data.datasets import SegmentationDataset
from pcseg.data.transforms import build_transforms
from pcseg.engine.hooks import TrainState
from pcseg.methods import METHODS, build_method
from pcseg.methods.common import step_generator
from pcseg.methods.hpal import (HPAL, MeanTeacher, ScenePool, annotatable, conflict_pairs, cumulative_targets,
                                ema_update,
                                hierarchical_uncertainty, margin, merge_pools, model_selection,
                                predict_raw_scene, pseudo_labels, random_selection, region_margin, scene_pool,
                                strong_features, suppress)
from pcseg.sparse import SparseTensor

STATE = TrainState(epoch=0, step=3, max_epochs=1, max_steps=10, iters_per_epoch=10)


def _cloud(n: int, classes: int, seed: int, extent: float = 2.5):
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(n, 3, generator=g) * extent - 0.3  # negative coordinates too
    probs = torch.softmax(3 * torch.randn(n, classes, generator=g), 1)
    return points, probs


def _brute_region_margin(points, probs, cell):
    groups = {}
    for i, p in enumerate(points.tolist()):
        groups.setdefault(tuple(math.floor(v / cell) for v in p), []).append(i)
    out = [0.0] * len(points)
    for members in groups.values():
        mean = [sum(probs[i, c].item() for i in members) / len(members) for c in range(probs.shape[1])]
        top = sorted(mean, reverse=True)
        for i in members:
            out[i] = top[0] - top[1]
    return torch.tensor(out)


@pytest.mark.parametrize("cell", [0.1, 0.5, 1.0])
def test_region_margin_equals_a_per_cell_python_loop(cell):
    points, probs = _cloud(300, 5, seed=1)
    torch.testing.assert_close(region_margin(points, probs, cell), _brute_region_margin(points, probs, cell),
                               rtol=0, atol=1e-6)


def test_hierarchical_uncertainty_combines_the_levels():
    points, probs = _cloud(200, 4, seed=2)
    top = probs.sort(1, descending=True).values
    expected = 1 - (top[:, 0] - top[:, 1])
    for weight, cell in ((0.1, 0.1), (0.01, 0.5), (0.001, 1.0)):
        expected = expected + weight * (1 - _brute_region_margin(points, probs, cell))
    torch.testing.assert_close(hierarchical_uncertainty(points, probs), expected, rtol=0, atol=1e-6)
    assert torch.equal(margin(torch.tensor([[0.25, 0.5, 0.125, 0.125]])), torch.tensor([0.25]))


def _brute_suppress(points, feats, scores, radius=0.2, max_cosine=0.8):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].item(), i))
    chosen = []
    for i in order:
        if not any((points[i].double() - points[j].double()).norm() <= radius and
                   torch.nn.functional.cosine_similarity(feats[i], feats[j], dim=0) > max_cosine for j in chosen):
            chosen.append(i)
    return chosen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_suppression_equals_brute_force_greedy(seed):
    g = torch.Generator().manual_seed(seed)
    n = 250
    points = torch.rand(n, 3, generator=g) * 1.2
    centres = torch.randn(4, 8, generator=g)  # clustered features: many pairs above the cosine threshold
    feats = centres[torch.randint(0, 4, (n,), generator=g)] + 0.5 * torch.randn(n, 8, generator=g)
    scores = torch.randint(0, 50, (n,), generator=g).float()  # ties: lower index first
    kept = suppress(points, feats, scores)
    expected = _brute_suppress(points, feats, scores)
    assert kept.tolist() == expected
    assert 10 < len(expected) < n  # the case suppresses some candidates, not all


def test_conflict_pairs_do_not_depend_on_the_chunking():
    g = torch.Generator().manual_seed(5)
    points, feats = torch.rand(150, 3, generator=g), torch.randn(150, 3, generator=g)
    rank = torch.randperm(150, generator=g)
    whole = set(zip(*[t.tolist() for t in conflict_pairs(points, feats, rank)]))
    chunked = set(zip(*[t.tolist() for t in conflict_pairs(points, feats, rank, max_pairs=40)]))
    brute = {(i, j) for i, j in itertools.permutations(range(150), 2) if rank[j] < rank[i] and
             (points[i].double() - points[j].double()).norm() <= 0.2 and
             torch.nn.functional.cosine_similarity(feats[i], feats[j], dim=0) > 0.8}
    assert whole == chunked == brute and brute


def test_cumulative_targets():
    assert cumulative_targets(100_000, 0.01, 5) == [200, 400, 600, 800, 1000]
    assert cumulative_targets(100_000, 0.01, 2)[0] == cumulative_targets(100_000, 0.01, 1)[0] == 200
    with pytest.raises(ValueError, match="round 0 would label"):
        cumulative_targets(100, 0.01, 5)


def test_random_selection_is_exact_and_skips_labelled_points():
    rng = np.random.default_rng(0)
    segments = {"a": rng.integers(-1, 3, 500), "b": rng.integers(0, 3, 300)}
    segments["a"][segments["a"] < 0] = -100
    labelled = {"a": np.arange(0, 500, 3), "b": np.arange(0, 300, 2)}
    available = {s: annotatable(segments[s], labelled[s]) for s in segments}
    picks = random_selection(available, 200, np.random.default_rng(1))
    assert sum(len(p) for p in picks.values()) == 200
    for s, idx in picks.items():
        assert len(np.unique(idx)) == len(idx)
        assert not np.isin(idx, labelled[s]).any() and (segments[s][idx] != -100).all()
    with pytest.raises(ValueError, match="only"):
        random_selection(available, 10_000, np.random.default_rng(1))


def f32(*values):
    return np.array(values, np.float32)


# margins 0.85, 0.05, 0.2, 0.01, 0.3: uncertainty 1 - margin = 0.15, 0.95, 0.8, 0.99, 0.7
PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.6, 0.3, 0.1]])
UNCERTAINTY = [0.15, 0.95, 0.8, 0.99, 0.7]


@pytest.mark.parametrize("strategy, level_weight", [("margin", 1.0), ("hpal", 1.111)])
def test_scene_pool_picks_the_most_uncertain_available_points(strategy, level_weight):
    """Point 3 is the most uncertain but already labelled; then come 1 (0.95), 2 (0.8), 4 (0.7), 0 (0.15).

    The points lie 2 m apart, so every grid cell holds one point: its cells' margins equal its own and
    the HPAL score is (1 + 0.1 + 0.01 + 0.001) * (1 - margin); no pair is within the suppression radius.
    """
    points = torch.tensor([[2.0 * i, 0.0, 0.0] for i in range(5)])
    available = torch.tensor([True, True, True, False, True])
    pool = scene_pool("s", points, PROBS, torch.eye(5), torch.arange(5), available, 3, strategy)
    assert pool.chosen.tolist() == [1, 2, 4] and pool.spare.tolist() == []
    np.testing.assert_allclose(pool.chosen_scores, [level_weight * UNCERTAINTY[i] for i in (1, 2, 4)], rtol=1e-5)


def test_a_candidate_near_a_similar_better_one_is_suppressed_into_the_spares():
    """Point 1 sits 0.1 m from point 0 with the same feature (cosine 1 > 0.8): HPAL keeps 0, spares 1."""
    points = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [5.0, 0.0, 0.0]])
    probs = PROBS[[1, 2, 4]]  # uncertainty 0.95, 0.8, 0.7 (0 and 1 share every cell: both 1 - cell margin)
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    pool = scene_pool("s", points, probs, feats, torch.arange(3), torch.ones(3, dtype=torch.bool), 3, "hpal")
    assert pool.chosen.tolist() == [0, 2] and pool.spare.tolist() == [1]
    assert merge_pools([pool], 2)["s"].tolist() == [0, 2] and merge_pools([pool], 3)["s"].tolist() == [0, 1, 2]


def test_merge_pools_ranks_globally_then_fills_from_spare():
    pools = [ScenePool("a", np.array([5, 1]), f32(0.9, 0.5), np.array([7]), f32(0.95)),
             ScenePool("b", np.array([3]), f32(0.7), np.array([2, 4]), f32(0.6, 0.1))]
    assert {k: v.tolist() for k, v in merge_pools(pools, 2).items()} == {"a": [5], "b": [3]}
    assert {k: v.tolist() for k, v in merge_pools(pools, 5).items()} == {"a": [1, 5, 7], "b": [2, 3]}
    with pytest.raises(ValueError, match="candidate_factor"):
        merge_pools(pools, 7)


class Reader:
    NUM_CLASSES = 3
    CLASS_NAMES = ("a", "b", "c")

    def __init__(self, n: int = 600) -> None:
        rng = np.random.default_rng(0)
        self.scenes = ["r0", "r1"]
        self.data = {s: {"coord": rng.uniform(0, 2, (n + 100 * k, 3)).astype(np.float32),
                         "color": rng.uniform(0, 255, (n + 100 * k, 3)).astype(np.float32),
                         "segment": rng.integers(-1, 3, n + 100 * k).astype(np.int64)}
                     for k, s in enumerate(self.scenes)}
        for d in self.data.values():
            d["segment"][d["segment"] < 0] = -100

    def load(self, name):
        return {**{k: v.copy() for k, v in self.data[name].items()}, "name": name}


class PointNet(nn.Module):
    """Per-voxel MLP with the forward_features / forward_head split of pcseg's models."""

    def __init__(self, channels: int = 3, classes: int = 3):
        super().__init__()
        self.body, self.head = nn.Sequential(nn.Linear(channels, 8), nn.ReLU()), nn.Linear(8, classes)

    def forward_features(self, x):
        return SparseTensor(self.body(x.F), x.C, context=x.context)

    def forward_head(self, f):
        return SparseTensor(self.head(f.F), f.C, context=f.context)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("strategy", ["hpal", "margin"])
def test_a_round_is_exact_and_never_picks_labelled_points(strategy):
    torch.manual_seed(0)
    reader = Reader()
    dataset = SegmentationDataset(reader, 0.05, transforms=build_transforms([{"name": "NormalizeColor"}]))
    labelled = {"r0": np.arange(0, 600, 4), "r1": np.arange(1, 700, 5)}
    sizes = {s: len(reader.data[s]["segment"]) for s in reader.scenes}
    model, predicted = PointNet(), {}
    picks = model_selection(model, dataset, labelled, sizes, 90, strategy, torch.device("cpu"), predicted=predicted)
    assert sum(len(p) for p in picks.values()) == 90
    for s, idx in picks.items():
        assert len(np.unique(idx)) == len(idx) and not np.isin(idx, labelled[s]).any()
        assert (reader.data[s]["segment"][idx] != -100).all()
        # the reported class of each pick is the model's prediction of that point, scene predicted alone
        _, probs, _, _ = predict_raw_scene(model.eval(), dataset, reader.scenes.index(s), sizes[s], torch.device("cpu"))
        np.testing.assert_array_equal(predicted[s], probs.argmax(dim=1).numpy()[idx])


def test_ema_update_is_the_hand_formula():
    torch.manual_seed(0)
    student, teacher = (nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)) for _ in range(2))
    student(torch.randn(8, 3))  # moves the student's running statistics and num_batches_tracked
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.955)
    for key, value in teacher.state_dict().items():
        s = student.state_dict()[key]
        expected = s if key.endswith("num_batches_tracked") else 0.955 * before[key] + 0.045 * s
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)


def test_pseudo_labels_follow_the_threshold_rule():
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.75, 0.25, 0.0], [0.1, 0.05, 0.85], [0.9, 0.05, 0.05], [0.4, 0.3, 0.3]])
    labelled = torch.tensor([False, False, False, True, False])
    assert pseudo_labels(probs, labelled, 0.75).tolist() == [0, -100, 2, -100, -100]


def _two_views(n: int = 40):
    g = torch.Generator().manual_seed(0)
    xyz = torch.randint(0, 9, (n, 3), generator=g, dtype=torch.int32)
    coords = torch.cat([torch.zeros(n, 1, dtype=torch.int32), xyz], 1)
    coords = torch.unique(coords, dim=0)
    m = len(coords)
    labels = torch.full((m,), -100)
    labels[::5] = torch.randint(0, 3, (len(labels[::5]),), generator=g)
    return {"coords": coords, "feats": torch.randn(m, 3, generator=g), "labels": labels, "inverse": torch.arange(m),
            "view2_coords": coords, "view2_feats": torch.randn(m, 3, generator=g), "view2_labels": labels,
            "view2_inverse": torch.arange(m), "names": ["s0"]}


def test_losses_train_the_student_only_and_the_teacher_follows_by_ema():
    torch.manual_seed(0)
    method = HPAL(confidence=0.0)  # every unlabelled point gets a pseudo-label
    model = method.wrap(PointNet())
    assert isinstance(model, MeanTeacher) and set(model.saved_modules()) == {"teacher"}
    assert [p for group in method.param_groups(model) for p in group["params"]] == list(model.backbone.parameters())
    losses = method.losses(model, _two_views(), STATE)
    assert set(losses) == {"ce", "kl", "pseudo"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    model.train()
    assert model.backbone.training and not model.teacher.training  # the teacher stays in eval mode
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    method.after_step(model, STATE)
    for t, b, s in zip(model.teacher.parameters(), before, model.backbone.parameters()):
        torch.testing.assert_close(t, 0.955 * b + 0.045 * s)


def test_losses_by_hand():
    """No student perturbation: teacher = student copy on view 1, student on view 2; each term by hand."""
    torch.manual_seed(0)
    batch = _two_views()
    student = PointNet()
    method = HPAL(confidence=0.4, kl_weight=2.0, pseudo_weight=3.0, student_noise=0.0, student_dropout=0.0)
    losses = method.losses(method.wrap(student), batch, STATE)
    with torch.no_grad():
        p = torch.softmax(student(SparseTensor(batch["feats"], batch["coords"])).F, 1).tolist()
        q = torch.softmax(student(SparseTensor(batch["view2_feats"], batch["coords"])).F, 1).tolist()
    labels = batch["labels"].tolist()
    ce = [-math.log(q[i][y]) for i, y in enumerate(labels) if y != -100]
    kl = [sum(a * (math.log(a) - math.log(b)) for a, b in zip(p[i], q[i])) for i in range(len(p))]
    pseudo = [-math.log(q[i][max(range(3), key=p[i].__getitem__)]) for i in range(len(p))
              if labels[i] == -100 and max(p[i]) > 0.4]
    assert 0 < len(pseudo) < len(p) - len(ce)  # the threshold keeps some unlabelled points, not all
    assert losses["ce"].item() == pytest.approx(sum(ce) / len(ce), rel=1e-5)
    assert losses["kl"].item() == pytest.approx(2.0 * sum(kl) / len(kl), rel=1e-5)
    assert losses["pseudo"].item() == pytest.approx(3.0 * sum(pseudo) / len(pseudo), rel=1e-5)


def _student_inputs(method, batch, state):
    """The features the student saw in ``method.losses`` on ``batch``."""
    model = method.wrap(PointNet())
    seen = []
    model.backbone.body.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    method.losses(model, batch, state)
    return seen[0]


def test_student_perturbation_comes_from_the_run_seed_step_and_joined_position():
    batch = _two_views()
    features = []
    for seed in (0, 0, 5):
        method = HPAL()
        method.set_seed(seed)
        features.append(_student_inputs(method, batch, STATE))
    assert torch.equal(features[0], features[1]) and not torch.equal(features[0], features[2])
    g = step_generator(5, STATE.step, 0)  # scene 0 of the joined batch
    noise = torch.randn(batch["view2_feats"].shape, generator=g) * 0.1
    drop = torch.rand(len(batch["view2_feats"]), generator=g) < 0.1
    torch.testing.assert_close(features[2], (batch["view2_feats"] + noise).masked_fill(drop[:, None], 0.0))
    # the same scene as sample 0 of rank 1 of 2 is scene 1 of the joined batch
    method = HPAL()
    method.set_seed(5)
    on_rank1 = _student_inputs(method, batch, TrainState(**{**STATE.__dict__, "rank": 1, "world_size": 2}))
    g = step_generator(5, STATE.step, 1)
    noise = torch.randn(batch["view2_feats"].shape, generator=g) * 0.1
    drop = torch.rand(len(batch["view2_feats"]), generator=g) < 0.1
    torch.testing.assert_close(on_rank1, (batch["view2_feats"] + noise).masked_fill(drop[:, None], 0.0))


def test_strong_features_draw_each_scene_from_its_own_generator():
    feats = torch.randn(10, 3)
    batch_index = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1])
    out = strong_features(feats, batch_index, 0.5, 0.3, [torch.Generator().manual_seed(s) for s in (4, 9)])
    for b, seed in ((0, 4), (1, 9)):
        rows = batch_index == b
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(int(rows.sum()), 3, generator=g) * 0.5
        drop = torch.rand(int(rows.sum()), generator=g) < 0.3
        torch.testing.assert_close(out[rows], (feats[rows] + noise).masked_fill(drop[:, None], 0.0))


def test_hpal_is_registered_and_checks_its_settings():
    assert METHODS["HPAL"] is HPAL
    assert build_method({"name": "HPAL", "ema_decay": 0.99}).ema_decay == 0.99
    with pytest.raises(ValueError, match="HPAL.confidence"):
        HPAL(confidence=1.5)
    with pytest.raises(KeyError, match="TwoViews"):
        HPAL().losses(HPAL().wrap(PointNet()), {k: v for k, v in _two_views().items() if not k.startswith("view2")},
                      STATE)
    with pytest.raises(TypeError, match="expected the MeanTeacher model of HPAL.wrap"):
        HPAL().losses(PointNet(), _two_views(), STATE)
