"""The traced form of the sparse core: sort-merge look-up, unique keys, neighbour tables.

The dense-oracle convolution and pooling tests also run on this form (``conv_path`` "traced_pairs"
and "traced_table", "traced_kernel" in conftest.py); these tests check its pieces against hand-computed values and
brute force.
"""
import numpy as np
import pytest
import torch

from pcseg.sparse import SparseConv, SparseConvTranspose, SparseTensor
from pcseg.sparse.kmap import KernelMap, SortedKeys, invert_table
from pcseg.sparse.voxelize import unique_keys


def test_sort_merge_lookup_by_hand():
    keys = SortedKeys(torch.tensor([2, 5, 9]), torch.tensor([1, 2, 0]))   # coords rows of 2, 5, 9
    query = torch.tensor([[9, 2, 3], [0, 5, 5], [10, 9, 1]])
    expected = [[0, 1, -1], [-1, 2, 2], [-1, 0, -1]]
    assert keys.lookup_sort_merge(query).tolist() == expected
    assert keys.lookup(query).tolist() == expected                        # searchsorted agrees


def test_sort_merge_lookup_equals_brute_force():
    g = np.random.default_rng(0)
    raw = np.unique(g.integers(0, 1 << 61, 500))
    rows = g.permutation(len(raw))
    coords_keys = np.empty_like(raw)
    coords_keys[rows] = raw                                  # key of coords row r
    sk = SortedKeys(*torch.sort(torch.from_numpy(coords_keys)))
    query = np.concatenate([raw[g.integers(0, len(raw), 300)], g.integers(0, 1 << 61, 300), raw[:5], raw[:5]])
    where = {int(k): r for r, k in enumerate(coords_keys)}
    expected = [where.get(int(q), -1) for q in query]
    assert sk.lookup_sort_merge(torch.from_numpy(query)).tolist() == expected


def test_sort_merge_lookup_with_no_keys():
    empty = SortedKeys(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))
    assert empty.lookup_sort_merge(torch.tensor([0, 7])).tolist() == [-1, -1]


def test_unique_keys_by_hand():
    ukeys, inverse = unique_keys(torch.tensor([7, 3, 7, 1, 3, 3]))
    assert ukeys.tolist() == [1, 3, 7]
    assert inverse.tolist() == [2, 1, 2, 0, 1, 1]
    one, inv = unique_keys(torch.tensor([4]))
    assert one.tolist() == [4] and inv.tolist() == [0]


def test_invert_table_by_hand():
    # 2 outputs, 3 offsets over 3 inputs: output 0 reads inputs 2, -, 0; output 1 reads 1, 2, -
    table = torch.tensor([[2, -1, 0], [1, 2, -1]], dtype=torch.int32)
    assert invert_table(table, 3).tolist() == [[-1, -1, 0], [1, -1, -1], [0, 1, -1]]


@pytest.mark.parametrize("kind", ["submanifold", "strided", "transposed"])
def test_table_maps_equal_pair_maps(kind, monkeypatch):
    """The traced build gives the same (N_out, K) neighbour table as the pairs of the eager build."""
    g = torch.Generator().manual_seed(3)
    coords = torch.unique(torch.randint(0, 9, (300, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int64), coords], 1).int()

    def table() -> torch.Tensor:
        x = SparseTensor(torch.ones(len(coords), 2), coords)
        if kind == "submanifold":
            SparseConv(2, 2, 3)(x)
            return x.context.kernel_map((1, 1, 1), (3, 3, 3), (1, 1, 1), (1, 1, 1)).neighbor_table()
        y = SparseConv(2, 2, 2, stride=2)(x)
        if kind == "strided":
            return x.context.kernel_map((1, 1, 1), (2, 2, 2), (2, 2, 2), (1, 1, 1)).neighbor_table()
        SparseConvTranspose(2, 2, 2, stride=2)(y)
        return x.context.kernel_map((2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1), transposed=True).neighbor_table()

    pairs = table()
    from pcseg.sparse import kmap as kmap_module
    monkeypatch.setattr(kmap_module, "tracing", lambda: True)
    traced = table()
    assert traced.dtype == torch.int32 and torch.equal(traced, pairs)
    assert (pairs >= 0).any(1).all()                             # every output site has an input


def _pairs_as_lists(kmap: KernelMap):
    return [(k, i.tolist(), o.tolist()) for k, i, o in kmap.offset_pairs()]


def test_offset_pairs_of_a_submanifold_table_by_hand():
    """Sites 0, 1, 3 on a line, kernel 3 (offsets -1, 0, +1): only 0-1 are neighbours. Offset 0 is
    searched (output 1 reads input 0), offset 2 is its mirror (output 0 reads input 1), the identity
    offset 1 has no pairs."""
    table = torch.tensor([[-1, 0, 1], [0, 1, -1], [-1, 2, -1]], dtype=torch.int32)
    kmap = KernelMap.from_table(table, 3, identity=1, traced=True)
    assert _pairs_as_lists(kmap) == [(0, [0], [1]), (2, [1], [0])]


def test_offset_pairs_of_a_strided_table_by_hand():
    """No identity: every offset searched, output rows ascending within an offset, offsets in order."""
    table = torch.tensor([[0, 1], [2, -1], [-1, 3]], dtype=torch.int32)
    kmap = KernelMap.from_table(table, 4, traced=True)
    assert _pairs_as_lists(kmap) == [(0, [0, 2], [0, 1]), (1, [1, 3], [0, 2])]


def test_kernel_form_refuses_what_the_compiled_kernel_cannot_run(table_maps, cpu_kernels):
    """traced_conv("kernel") on float64 features: a clear error naming the form to use, not a wrong result."""
    from pcseg.sparse.kernels import traced_conv
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 1]], dtype=torch.int32)
    conv = SparseConv(2, 3, kernel_size=3, dim=3).double()
    with traced_conv("kernel"), pytest.raises(ValueError, match=r"float32 CPU tensors, got torch.float64 on cpu; "
                                                                  r"trace with traced_conv\('pairs'\)"):
        conv(SparseTensor(torch.ones(3, 2, dtype=torch.float64), coords))
    with traced_conv("pairs"):                                           # the portable form runs it
        assert conv(SparseTensor(torch.ones(3, 2, dtype=torch.float64), coords)).feats.dtype == torch.float64
