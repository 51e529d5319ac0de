"""Two gloo processes on CPU give the gradients and the confusion matrix of one process on the joined batch.

The model's BatchNorm layers run in eval mode (fixed statistics): with per-process batch statistics
two half batches normalise differently from the joined batch (SyncBatchNorm would fix that, but
torch implements it for CUDA only), which is a property of BN, not of the gradient all-reduce under test.
Each sample has the same number of labelled voxels, so the mean of the two per-process losses is
the loss of the joined batch.
"""
import os
import socket

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
