"""Coordinate keys: round trip, ordering, overflow errors, the traced sort."""
import pytest
import torch

from pcseg.sparse import CoordinateOverflowError, SparseConv, SparseTensor, pack_keys, unpack_keys
from pcseg.sparse.coords import coord_range, offset_keys, sort_keys


@pytest.mark.parametrize("dim", [2, 3, 4])
def test_round_trip_and_lexicographic_order(dim):
    low, high = coord_range(dim)
    g = torch.Generator().manual_seed(dim)
    c = torch.randint(low, high + 1, (1000, dim), generator=g)
    c = torch.cat([torch.randint(0, 1024, (1000, 1), generator=g), c], 1).int()
    keys = pack_keys(c)
    assert torch.equal(unpack_keys(keys, dim), c)
    order = torch.argsort(keys)
    rows = [tuple(r) for r in c[order].tolist()]
    assert rows == sorted(rows)


def test_offset_keys_are_linear():
    c = torch.tensor([[0, 5, -7, 100], [3, -20, 0, 1]], dtype=torch.int32)
    o = torch.tensor([[1, -1, 2], [-3, 0, 0]])
    for row in range(2):
        shifted = c.clone()
        shifted[:, 1:] += o[row].int()
        assert torch.equal(pack_keys(shifted), pack_keys(c) + offset_keys(o)[row])


def test_overflow_raises_never_wraps():
    low, high = coord_range(3)
    with pytest.raises(CoordinateOverflowError, match="axis 1"):
        pack_keys(torch.tensor([[0, 0, high + 1, 0]]))
    with pytest.raises(CoordinateOverflowError, match="batch index"):
        pack_keys(torch.tensor([[1024, 0, 0, 0]]))
    # in range, but a 3x3x3 kernel would step outside: caught when building the map
    x = SparseTensor(torch.ones(1, 1), torch.tensor([[0, high, 0, 0]], dtype=torch.int32))
    with pytest.raises(CoordinateOverflowError, match="kernel margin"):
        SparseConv(1, 1, 3)(x)


def test_int64_coords_are_range_checked_before_the_int32_cast():
    # 2**32 + 1 as int32 is 1: without the check it would silently land on the site (0, 1, 0, 0)
    coords = torch.tensor([[0, 2**32 + 1, 0, 0], [0, 1, 0, 0]], dtype=torch.int64)
    with pytest.raises(CoordinateOverflowError, match=r"axis 0 spans \[1, 4294967297\]"):
        SparseTensor(torch.ones(2, 1), coords)
    with pytest.raises(CoordinateOverflowError, match="batch index"):
        SparseTensor(torch.ones(1, 1), torch.tensor([[2**32, 0, 0, 0]]))
    # in range: int64 is accepted and stored as the same int32 values
    x = SparseTensor(torch.ones(2, 1), torch.tensor([[0, -5, 7, 9], [1, 0, 0, 0]]))
    assert x.coords.dtype == torch.int32 and x.coords.tolist() == [[0, -5, 7, 9], [1, 0, 0, 0]]


class _SortKeys(torch.nn.Module):
    def forward(self, keys):
        return sort_keys(keys)


def test_traced_sort_keys_matches_a_plain_sort():
    """The exported sort (keys sorted with sentinels in front of them) against ``torch.sort`` on keys
    with ties, zeros and the int64 maximum: the same values, and an order that sorts the input
    (ties may come in any order) and names only the N input keys."""
    big = torch.iinfo(torch.int64).max
    example = torch.randint(0, 50, (2048,), generator=torch.Generator().manual_seed(0))
    program = torch.export.export(_SortKeys(), (example,),
                                  dynamic_shapes={"keys": {0: torch.export.Dim("n", min=1)}})
    for keys in (torch.tensor([5, big, 0, big, 5, 0]), torch.tensor([0]),
                 torch.randint(0, 2**62, (40_000,), generator=torch.Generator().manual_seed(1))):
        values, order = program.module()(keys)
        assert torch.equal(values, torch.sort(keys).values)
        assert torch.equal(torch.sort(order).values, torch.arange(len(keys)))     # a permutation of 0..N-1
        assert torch.equal(keys[order], values)
