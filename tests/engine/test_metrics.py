import math

import pytest
import torch

from pcseg.engine.metrics import compute_metrics, confusion_matrix, format_table

IGN = -100


def test_confusion_matrix_hand_computed():
    target = torch.tensor([0, 0, 1, 1, 1, 2, IGN, 2])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0, 0])
    expected = torch.tensor([[1, 1, 0],
                             [1, 2, 0],
                             [1, 0, 1]])
    assert torch.equal(confusion_matrix(pred, target, 3, IGN), expected)


def test_confusion_matrix_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(-1, 5, (1000,), generator=g)
    target[target == -1] = IGN
    pred = torch.randint(0, 5, (1000,), generator=g)
    brute = torch.zeros(5, 5, dtype=torch.int64)
    for t, p in zip(target.tolist(), pred.tolist()):
        if t != IGN:
            brute[t, p] += 1
    assert torch.equal(confusion_matrix(pred, target, 5, IGN), brute)


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"pred ids must be in \[0, 3\)"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_metrics_hand_computed_and_convention():
    # class 0: TP 3, FP 1, FN 1 → 3/5; class 1: TP 2, FP 1, FN 1 → 2/4;
    # class 2: predicted once, absent from GT → IoU 0 (counts); class 3: absent from both → NaN (left out)
    conf = torch.tensor([[3, 1, 0, 0],
                         [1, 2, 0, 0],
                         [0, 0, 0, 0],
                         [0, 0, 0, 0]])
    conf[1, 2] = 1  # one GT-1 point predicted as 2
    m = compute_metrics(conf)
    iou = [3 / 5, 2 / 5, 0.0]  # class 1: TP 2, FP 1, FN 2 → 2/5
    assert m.iou[:3].tolist() == pytest.approx(iou)
    assert math.isnan(m.iou[3])
    assert m.miou == pytest.approx(sum(iou) / 3)
    assert m.acc == pytest.approx(5 / 8)
    assert m.macc == pytest.approx((3 / 4 + 2 / 4) / 2)  # over classes present in GT
    assert math.isnan(m.class_acc[2])
    assert m.as_dict(["a", "b", "c", "d"])["iou"] == {"a": pytest.approx(0.6), "b": pytest.approx(0.4), "c": 0.0, "d": None}


def test_format_table_lists_classes_and_summary():
    m = compute_metrics(torch.tensor([[2, 0], [1, 1]]))
    table = format_table(m, ["wall", "chair"])
    lines = table.splitlines()
    assert lines[1].split() == ["wall", "66.7", "100.0", "2"]
    assert lines[2].split() == ["chair", "50.0", "50.0", "2"]
    assert lines[3].split() == ["mIoU", "58.3"]
    with pytest.raises(ValueError, match="class_names has 1 entries"):
        format_table(m, ["wall"])
