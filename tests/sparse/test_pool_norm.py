"""Pooling, global pooling, BatchNorm and concatenation against dense torch ops."""
import pytest
import torch
import torch.nn.functional as F

from pcseg.sparse import (SparseAvgPool, SparseBatchNorm, SparseConv, SparseGlobalPool, SparseMaxPool,
                          SparseTensor, sparse_cat)


def grid(seed=0, shape=(2, 3, 8, 6, 10), density=0.3):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand((shape[0], *shape[2:]), generator=g) < density
    x = torch.randn(shape, generator=g)
    return x, mask


@pytest.fixture(params=["pairs", "table"])
def map_form(request):
    """Pool on eager pair maps and on the traced (neighbour table) form of the maps."""
    if request.param == "table":
        request.getfixturevalue("table_maps")
    return request.param


@pytest.mark.usefixtures("map_form")
def test_max_pool_equals_dense_max_over_active_sites():
    x, mask = grid()
    s = SparseTensor.from_dense(x, mask)
    out = SparseMaxPool(2, 2)(s)
    ref = F.max_pool3d(x.masked_fill(~mask[:, None], float("-inf")), 2)
    got = out.dense(shape=ref.shape[2:])
    sites = (out.C[:, 0].long(),) + tuple((out.C[:, 1:] // 2).long().t())
    torch.testing.assert_close(got.movedim(1, -1)[sites], ref.movedim(1, -1)[sites])


@pytest.mark.usefixtures("map_form")
def test_avg_pool_averages_occupied_sites_only():
    x, mask = grid(1)
    s = SparseTensor.from_dense(x, mask)
    out = SparseAvgPool(2, 2)(s)
    total = F.avg_pool3d(x * mask[:, None], 2) * 8
    count = F.avg_pool3d(mask[:, None].float(), 2) * 8
    sites = (out.C[:, 0].long(),) + tuple((out.C[:, 1:] // 2).long().t())
    ref = (total / count.clamp(min=1)).movedim(1, -1)[sites]
    torch.testing.assert_close(out.dense(shape=total.shape[2:]).movedim(1, -1)[sites], ref)


def test_global_pool_per_scene():
    x, mask = grid(2)
    s = SparseTensor.from_dense(x, mask)
    for mode, fn in (("avg", lambda f: f.mean(0)), ("max", lambda f: f.max(0).values), ("sum", lambda f: f.sum(0))):
        out = SparseGlobalPool(mode)(s)
        for b in range(2):
            torch.testing.assert_close(out[b], fn(x[b].movedim(0, -1)[mask[b]]))


def test_batchnorm_matches_batchnorm1d_and_cat_keeps_sites():
    x, mask = grid(3)
    s = SparseTensor.from_dense(x, mask)
    bn = SparseBatchNorm(3)
    out = bn(s)
    mean, var = s.F.mean(0), s.F.var(0, unbiased=False)
    torch.testing.assert_close(out.F, (s.F - mean) / torch.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    y = SparseConv(3, 5, 3)(s)
    both = sparse_cat(out, y)
    assert both.F.shape == (s.F.shape[0], 8) and torch.equal(both.C, s.C)
    torch.testing.assert_close(both.F[:, 3:], y.F)
