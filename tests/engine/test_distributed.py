"""Two gloo processes on CPU give the gradients and the confusion matrix of one process on the joined batch,
for the supervised loss and for each method (CPCM, HPAL, SLidR) through the module the method wraps.

The model's BatchNorm layers run in eval mode (fixed statistics): with per-process batch statistics
two half batches normalise differently from the joined batch (SyncBatchNorm would fix that, but
torch implements it for CUDA only), which is a property of BN, not of the gradient all-reduce under test.
Each sample has the same number of labelled voxels, so the mean of the two per-process losses is
the loss of the joined batch.
"""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from pcseg.data.collate import collate_sparse
from pcseg.engine.distributed import all_reduce_sum, init_distributed, shutdown, wrap_model
from pcseg.engine.evaluator import Evaluator
from pcseg.engine.hooks import Supervised, TrainState
from pcseg.models import build_model

NUM_CLASSES = 3
MODEL = {"name": "MinkUNet14A", "in_channels": 3, "num_classes": NUM_CLASSES, "D": 2}
STATE = TrainState(epoch=0, step=0, max_epochs=1, max_steps=1, iters_per_epoch=1)


def _samples(count=4, labelled=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        coords = torch.unique(torch.randint(0, 32, (160, 2), generator=g), dim=0).to(torch.int32)
        m = len(coords)
        labels = torch.full((m,), -100, dtype=torch.int64)
        labels[torch.randperm(m, generator=g)[:labelled]] = torch.randint(0, NUM_CLASSES, (labelled,), generator=g)
        inverse = torch.randint(0, m, (2 * m,), generator=g)
        point_labels = torch.randint(0, NUM_CLASSES, (2 * m,), generator=g)
        out.append({"coords": coords, "feats": torch.randn(m, 3, generator=g), "labels": labels, "inverse": inverse,
                    "point_labels": point_labels, "points": torch.zeros(2 * m, 3), "name": f"s{i}"})
    return out


def _model(weights):
    model = build_model(MODEL)
    model.load_state_dict(weights)
    return model.eval()  # BatchNorm with fixed statistics, see the module docstring


def _grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _worker(rank, port, weights, samples, out_dir):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        device = torch.device("cpu")
        model = wrap_model(_model(weights), info, device)
        shard = samples[rank::2]  # what EpochSampler gives rank r of 2
        loss = Supervised().losses(model, collate_sparse(shard), STATE)["ce"]
        loss.backward()
        evaluator = Evaluator(NUM_CLASSES, device=device, dist=info)
        metrics = evaluator.evaluate(model.module, [collate_sparse([s]) for s in shard], Supervised().predict)
        summed = all_reduce_sum(torch.tensor([rank + 1.0]), info)
        torch.save({"grads": _grads(model.module), "confusion": metrics.confusion, "sum": summed},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown(info)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_on_the_joined_batch(tmp_path):
    torch.manual_seed(0)
    weights = build_model(MODEL).state_dict()
    samples = _samples()
    mp.spawn(_worker, args=(_free_port(), weights, samples, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    model = _model(weights)
    Supervised().losses(model, collate_sparse(samples), STATE)["ce"].backward()
    expected = _grads(model)
    for name, grad in expected.items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name  # DDP synchronised them
        torch.testing.assert_close(ranks[0]["grads"][name], grad, rtol=1e-5, atol=1e-6, msg=name)

    single = Evaluator(NUM_CLASSES, device=torch.device("cpu"))
    joined = single.evaluate(model, [collate_sparse([s]) for s in samples], Supervised().predict)
    assert torch.equal(ranks[0]["confusion"], joined.confusion) and torch.equal(ranks[1]["confusion"], joined.confusion)
    assert ranks[0]["sum"].item() == ranks[1]["sum"].item() == 3.0


# ---------------------------------------------------------------------------------------------
# every method: 2 processes = 1 process on the joined batch
#
# Each method's one module (method.wrap) goes to DDP as the trainer hands it. As above, BatchNorm
# runs in eval mode and every sample has the same numbers of voxels, labelled voxels and points, so
# the per-process means average to the joined batch's. CPCM's masks and HPAL's student noise are
# drawn per sample from (seed, step, position in the joined batch), so rank r's sample k draws what
# sample 2k + r of the joined batch draws; SLidR gathers the superpixel rows of both processes
# before its InfoNCE, so its negatives are the joined batch's.

VOXELS = 48


class _ImageTeacher(torch.nn.Module):
    """A fixed image network: 4x4 average pooling and a 1x1 conv to 5 channels."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)

    def forward(self, images):
        return self.conv(torch.nn.functional.avg_pool2d(images, 4))


def _method_samples(count=4, seed=1):
    """Two-view and camera samples: VOXELS voxels, 10 labelled, every voxel holding exactly 2 points."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        flat = torch.randperm(32 * 32, generator=g)[:VOXELS]
        coords = torch.stack([flat // 32, flat % 32], 1).to(torch.int32)
        labels = torch.full((VOXELS,), -100, dtype=torch.int64)
        labels[torch.randperm(VOXELS, generator=g)[:10]] = torch.randint(0, NUM_CLASSES, (10,), generator=g)
        inverse = torch.randperm(2 * VOXELS, generator=g) % VOXELS
        perm = torch.randperm(VOXELS, generator=g)  # view-2 row r holds voxel perm[r]
        out.append({
            "coords": coords, "feats": torch.randn(VOXELS, 3, generator=g), "labels": labels, "inverse": inverse,
            "point_labels": torch.randint(0, NUM_CLASSES, (2 * VOXELS,), generator=g),
            "points": torch.zeros(2 * VOXELS, 3), "name": f"s{i}",
            "view2_coords": coords[perm], "view2_feats": torch.randn(VOXELS, 3, generator=g),
            "view2_labels": labels[perm], "view2_inverse": torch.argsort(perm)[inverse],
            "image": torch.randint(0, 256, (3, 8, 12), generator=g, dtype=torch.uint8),
            "superpixels": torch.arange(6).repeat_interleave(16).reshape(8, 12),
            "point_superpixel": torch.randint(-1, 6, (2 * VOXELS,), generator=g),
            "pixel": torch.zeros(2 * VOXELS, 2, dtype=torch.int64), "P": torch.zeros(3, 4), "Tr": torch.zeros(4, 4)})
    return out


def _methods():
    from pcseg.data.lidar_camera import collate_lidar_camera
    from pcseg.data.views import collate_two_views
    from pcseg.methods import CPCM, HPAL, SLidR
    torch.manual_seed(3)
    teacher = _ImageTeacher()
    return {"CPCM": (lambda: CPCM(grid=2, rampup_epochs=0), collate_two_views),
            "HPAL": (lambda: HPAL(confidence=0.0, rampup_epochs=0), collate_two_views),
            "SLidR": (lambda: SLidR(teacher=teacher, projection_dim=8), collate_lidar_camera)}


def _step(name, weights, samples, state, wrap):
    """Losses, gradients and (HPAL) the teacher after one SGD step + after_step, of ``samples`` as one batch."""
    build, collate = _methods()[name]
    method = build()
    method.set_seed(11)
    model = method.wrap(build_model(MODEL))
    model.load_state_dict(weights)
    model.eval()
    wrapped = wrap(model)
    losses = method.losses(wrapped, collate(samples), state)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    method.after_step(model, state)
    teacher = {k: v.clone() for k, v in model.teacher.state_dict().items()} if name == "HPAL" else {}
    return {"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads, "teacher": teacher}


def _method_worker(rank, port, weights, samples, out_dir):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    try:
        state = TrainState(epoch=0, step=5, max_epochs=1, max_steps=10, iters_per_epoch=10, rank=rank, world_size=2)
        out = {name: _step(name, weights[name], samples[rank::2], state,
                           lambda m: wrap_model(m, info, torch.device("cpu"))) for name in weights}
        torch.save(out, os.path.join(out_dir, f"method_rank{rank}.pt"))
    finally:
        shutdown(info)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    """(per-rank results of 2 processes, results of 1 process on the joined batch) per method."""
    out = tmp_path_factory.mktemp("methods")
    weights = {}
    for name, (build, _) in _methods().items():
        torch.manual_seed(0)
        weights[name] = build().wrap(build_model(MODEL)).state_dict()
    samples = _method_samples()
    mp.spawn(_method_worker, args=(_free_port(), weights, samples, str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"method_rank{r}.pt", weights_only=True) for r in range(2)]
    state = TrainState(epoch=0, step=5, max_epochs=1, max_steps=10, iters_per_epoch=10)
    single = {name: _step(name, weights[name], samples, state, lambda m: m) for name in weights}
    return ranks, single


@pytest.mark.parametrize("name", ["CPCM", "HPAL", "SLidR"])
def test_every_method_on_two_processes_matches_one_process_on_the_joined_batch(method_runs, name):
    ranks, single = method_runs
    one, two = single[name], [r[name] for r in ranks]
    assert set(one["grads"]) == set(two[0]["grads"]) and len(one["grads"]) > 0
    for key, grad in one["grads"].items():
        assert torch.equal(two[0]["grads"][key], two[1]["grads"][key]), key  # DDP synchronised them
        torch.testing.assert_close(two[0]["grads"][key], grad, rtol=1e-4, atol=1e-6, msg=key)
    for key, loss in one["losses"].items():
        assert loss.abs() > 0, key  # every term takes part
        torch.testing.assert_close((two[0]["losses"][key] + two[1]["losses"][key]) / 2, loss, rtol=1e-5, atol=1e-6)
    for key, value in one["teacher"].items():  # HPAL: the EMA teacher follows the same student on both ranks
        assert torch.equal(two[0]["teacher"][key], two[1]["teacher"][key]), key
        torch.testing.assert_close(two[0]["teacher"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    if name == "SLidR":  # both processes compute the loss of the joined batch itself
        torch.testing.assert_close(two[0]["losses"]["nce"], one["losses"]["nce"])
        torch.testing.assert_close(two[1]["losses"]["nce"], one["losses"]["nce"])
