import numpy as np
import torch

from pcseg.data.collate import collate_sparse
from pcseg.engine.evaluator import Evaluator


def _sample(name, m, n, g):
    return {"coords": torch.zeros(m, 3, dtype=torch.int32), "feats": torch.randn(m, 4, generator=g),
            "labels": torch.zeros(m, dtype=torch.int64), "inverse": torch.randint(0, m, (n,), generator=g),
            "point_labels": torch.randint(0, 4, (n,), generator=g), "points": torch.zeros(n, 3), "name": name}


def test_scores_points_through_inverse_and_saves_per_scene(tmp_path):
    g = torch.Generator().manual_seed(0)
    samples = [_sample("Area_1/office_1", 5, 30, g), _sample("Area_1/office_2", 7, 20, g), _sample("s3", 4, 9, g)]
    samples[0]["point_labels"][:3] = -100
    batches = [collate_sparse(samples[:2]), collate_sparse(samples[2:])]
    predict = lambda model, batch: batch["feats"]  # the features are the (M, 4) "logits"
    model = torch.nn.Linear(1, 1)

    metrics = Evaluator(4, device=torch.device("cpu")).evaluate(model, batches, predict, save_dir=tmp_path)

    expected = torch.zeros(4, 4, dtype=torch.int64)
    for s in samples:  # brute force, point by point
        voxel_pred = s["feats"].argmax(1)
        for v, t in zip(s["inverse"].tolist(), s["point_labels"].tolist()):
            if t != -100:
                expected[t, voxel_pred[v]] += 1
        saved = np.load(tmp_path / f"{s['name']}.npy")
        assert saved.dtype == np.int32 and saved.tolist() == voxel_pred[s["inverse"]].tolist()
    assert torch.equal(metrics.confusion, expected)
    assert model.training  # mode restored
