import math

import pytest
import torch

from pcseg.engine.lr import WarmupLR, lr_factor


def _lrs(schedule, steps=10, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = WarmupLR(opt, steps, schedule, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_poly_matches_formula():
    assert _lrs("poly", power=0.9) == pytest.approx([0.5 * (1 - s / 10) ** 0.9 for s in range(10)])


def test_cosine_with_warmup_matches_formula():
    lrs = _lrs("cosine", warmup_steps=2, warmup_ratio=0.2, min_lr_ratio=0.1)
    warm = [0.5 * 0.2, 0.5 * (0.2 + 0.8 * 0.5)]
    decay = [0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8))) for s in range(2, 10)]
    assert lrs == pytest.approx(warm + decay)


def test_constant_and_poly_after_warmup():
    assert _lrs("constant", warmup_steps=1, warmup_ratio=0.0) == pytest.approx([0.0] + [0.5] * 9)
    assert lr_factor(3, 10, "poly", warmup_steps=2, power=1.0) == pytest.approx(1 - 1 / 8)


def test_state_dict_resumes_the_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = WarmupLR(opt, 10, "poly")
    for _ in range(4):
        opt.step()
        sched.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched2 = WarmupLR(opt2, 10, "poly")
    sched2.load_state_dict(sched.state_dict())
    opt2.load_state_dict(opt.state_dict())
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.5 * (1 - 5 / 10) ** 0.9)


def test_bad_arguments_raise():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    with pytest.raises(ValueError, match="lr schedule 'step' unknown"):
        WarmupLR(opt, 10, "step")
    with pytest.raises(ValueError, match="warmup_steps must be in"):
        WarmupLR(opt, 10, "poly", warmup_steps=10)
