"""Kernel offsets and kernel maps (which input site feeds which output site through which weight).

Offset order
------------
For a kernel of size ``(k1, ..., kD)`` the offsets along an axis are ``-(k//2) .. k//2`` for odd
``k`` and ``0 .. k-1`` for even ``k`` (an even kernel is anchored at its lower corner, so a
stride-2 kernel-2 convolution reads the 2^D children ``o + {0,1}^D`` of an output site). The K
offsets are enumerated in row-major order over the axes (first axis slowest, last fastest), the
order of a flattened dense ``conv{D}d`` weight ``(C_out, C_in, k1, ..., kD)``. Hence

    dense_weight = sparse_weight.permute(2, 1, 0).reshape(C_out, C_in, k1, ..., kD)

and a checkpoint from another library converts by permuting the K axis.

Two forms
---------
Eagerly a map is a neighbour table (built by the compiled CPU kernels' merge join) or a list of
(input, output) pairs grouped by offset with Python-int group bounds ``ptr`` (the pure-torch
gather-GEMM-scatter path); each is derived from the other when asked for. While ``torch.export`` / ``torch.compile`` traces
(:func:`~pcseg.sparse.coords.tracing`) the map is built as a fixed-shape ``(N_out, K)``
neighbour table instead: no host syncs, no Python values taken from tensors, only the number of
sites is data-dependent. Look-ups then use a sort-merge (:meth:`SortedKeys.lookup_sort_merge`)
instead of ``searchsorted``, so the traced graph is expressible in ONNX; the traced convolution
form ``"kernel"``, whose program calls the compiled kernels anyway, builds its tables with the
compiled merge join (``pcseg::lookup_table``) instead.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import product
from typing import Optional

import torch
from torch import Tensor

from .kernels import compiled_kmaps, cpu as cpu_kernels, traced_conv_name
from .coords import BATCH_BITS, axis_bits, check_range, offset_keys, pack_keys, sort_keys, tracing

__all__ = ["kernel_offsets", "KernelMap", "build_kernel_map", "invert_table", "SortedKeys", "Workspace"]


def kernel_offsets(kernel_size: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Offsets of a kernel in units of (input stride × dilation).

    kernel_size: D-tuple. Returns (K, D) int64, K = prod(kernel_size), in the documented order.
    """
    return torch.tensor(list(product(*_axis_offsets(kernel_size))), dtype=torch.int64,
                        device=device).reshape(-1, len(kernel_size))


def _axis_offsets(kernel_size: tuple[int, ...]) -> list[range]:
    """Per-axis offsets: ``-(k//2) .. k//2`` for odd k, ``0 .. k-1`` for even k."""
    return [range(-(k // 2), k // 2 + 1) if k % 2 else range(0, k) for k in kernel_size]


@dataclass(frozen=True)
class SortedKeys:
    """Keys of one coordinate set, sorted once for ``searchsorted`` look-ups.

    keys: (N,) int64 sorted ascending; order: (N,) int64 row of each sorted key in the coords.
    """

    keys: Tensor
    order: Tensor

    @classmethod
    def from_coords(cls, coords: Tensor) -> "SortedKeys":
        keys, order = sort_keys(pack_keys(coords))
        return cls(keys, order)

    def lookup(self, query: Tensor) -> Tensor:
        """Row of each query key in the coords, -1 where absent. query: any shape int64.

        ``searchsorted`` eagerly; :meth:`lookup_sort_merge` while tracing.
        """
        if tracing():
            return self.lookup_sort_merge(query)
        if self.keys.numel() == 0:
            return torch.full_like(query, -1)
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        found = self.keys[pos] == query
        return torch.where(found, self.order[pos], torch.full_like(pos, -1))

    def lookup_sort_merge(self, query: Tensor) -> Tensor:
        """:meth:`lookup` by one sort of keys and queries together (ONNX has no ``searchsorted``).

        Keys enter as ``2 * key`` and queries as ``2 * query + 1``: all distinct from the keys and
        sorted just after an equal key. After the sort, the running count of keys at a query's
        position is one more than the index of the largest key <= the query; the query is found
        when that key equals it. Ops: Sort (ONNX TopK), CumSum, ScatterElements, Gather, Where.
        Needs keys < 2^62 (every D >= 2; checked by :func:`build_kernel_map`).
        """
        n = self.keys.shape[0]
        flat = query.reshape(-1)
        _, perm = sort_keys(torch.cat([self.keys * 2, flat * 2 + 1]))
        count = torch.cumsum((perm < n).to(torch.int64), 0) - 1
        last = torch.empty_like(count).scatter_(0, perm, count)[n:]     # -1: no key <= query
        keys = torch.cat([self.keys, self.keys.new_full((1,), -1)])      # index -1 reads this sentinel
        order = torch.cat([self.order, self.order.new_full((1,), -1)])
        return torch.where(keys[last] == flat, order[last], -1).reshape(query.shape)


class Workspace:
    """Scratch buffers reused by the kernels of one coordinate context (one forward + backward).

    Fresh multi-megabyte CPU tensors cost page faults on first touch, which dominated the gather and
    the per-offset products; reusing one buffer per (name, dtype, device) across the layers of a pass
    removes that cost. Buffers grow to the largest request and are freed with the context.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """A (rows, cols) view of the buffer ``name``; its content is undefined."""
        key = (name, dtype, torch.device(device))
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < rows * cols:
            buf = torch.empty(rows * cols, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf[: rows * cols].view(rows, cols)


class KernelMap:
    """Input→output pairs of a sparse convolution, as a neighbour table and/or pairs grouped by offset.

    Two equivalent descriptions, each derived from the other on first use and cached:

    * the neighbour table :meth:`neighbor_table`, (n_out, K) int32: the input row feeding output
      site i through offset k, or -1 (the layout of the compiled and fused kernels);
    * the pairs ``in_idx, out_idx`` (P,) int64, those of offset k at ``[ptr[k], ptr[k+1])`` in
      ascending output order, ``ptr`` a list of K+1 python ints (the pure-torch pair path).

    n_in, n_out: number of input and output sites.
    identity: index of an offset that maps every site i to itself (the centre of a submanifold
    map), or -1. Its pairs are not stored (its range in ``ptr`` is empty): kernels apply it as a
    plain matrix product without gather or scatter. The table holds it like any other offset.
    workspace: scratch buffers shared with the other maps of the same context.
    traced: built while ``torch.export`` / ``torch.compile`` traced: only the table exists (the
    grouped pairs' Python-int bounds would need host syncs); convolutions take its per-offset pairs
    (:meth:`offset_pairs`, data-dependent sizes) and pooling gathers through the table.
    """

    def __init__(self, n_in: int, n_out: int, *, pairs: Optional[tuple[Tensor, Tensor, list[int]]] = None,
                 table: Optional[Tensor] = None, identity: int = -1, workspace: Optional[Workspace] = None,
                 traced: bool = False) -> None:
        if pairs is None and table is None:
            raise ValueError("a KernelMap needs its pairs or its neighbour table")
        self.n_in, self.n_out, self.identity, self.traced = n_in, n_out, identity, traced
        self.workspace = workspace or Workspace()
        self._pairs = pairs
        self._table = table
        self._columns: Tensor | None = None
        self._reducers: dict[torch.dtype, Tensor] = {}
        self._transposed: KernelMap | None = None
        self._gather: Tensor | None = None
        self._offset_pairs: list[tuple[int, Tensor, Tensor]] | None = None

    def __repr__(self) -> str:
        return (f"KernelMap(n_in={self.n_in}, n_out={self.n_out}, K={self.kernel_volume}, "
                f"identity={self.identity}, traced={self.traced})")

    @classmethod
    def from_table(cls, table: Tensor, n_in: int, identity: int = -1,
                   workspace: Optional[Workspace] = None, traced: bool = False) -> "KernelMap":
        """A map given by its (N_out, K) int32 neighbour table (-1: no input)."""
        return cls(n_in, table.shape[0], table=table, identity=identity, workspace=workspace, traced=traced)

    @property
    def kernel_volume(self) -> int:
        return len(self._pairs[2]) - 1 if self._pairs is not None else self._table.shape[1]

    @property
    def in_idx(self) -> Tensor:
        return self._pair_lists()[0]

    @property
    def out_idx(self) -> Tensor:
        return self._pair_lists()[1]

    @property
    def ptr(self) -> list[int]:
        return self._pair_lists()[2]

    def _pair_lists(self) -> tuple[Tensor, Tensor, list[int]]:
        """(in_idx, out_idx, ptr), derived from the table on first use (not for a traced map)."""
        if self._pairs is None:
            if self.traced:
                raise RuntimeError("a traced kernel map has no pairs (they need host syncs); use its table")
            columns = self.columns()
            present = columns >= 0
            if self.identity >= 0:
                present[self.identity] = False
            k_idx, out_idx = present.nonzero(as_tuple=True)                 # by offset, outputs ascending
            counts = torch.bincount(k_idx, minlength=self.kernel_volume)
            self._pairs = (columns[k_idx, out_idx].to(torch.int64), out_idx,
                           [0] + torch.cumsum(counts, 0).tolist())
        return self._pairs

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        """(in_idx, out_idx) of offset k, each (P_k,) int64 (empty for the identity offset)."""
        s, e = self.ptr[k], self.ptr[k + 1]
        return self.in_idx[s:e], self.out_idx[s:e]

    def transposed(self) -> "KernelMap":
        """The map of the transposed convolution: same pairs, input and output swapped (cached)."""
        if self._transposed is None:
            if self._pairs is not None:
                in_idx, out_idx, ptr = self._pairs
                self._transposed = KernelMap(self.n_out, self.n_in, pairs=(out_idx, in_idx, ptr),
                                             identity=self.identity, workspace=self.workspace)
            else:
                self._transposed = KernelMap.from_table(invert_table(self._table, self.n_in), self.n_out,
                                                        self.identity, self.workspace, self.traced)
            self._transposed._transposed = self
        return self._transposed

    def neighbor_table(self) -> Tensor:
        """(n_out, K) int32: the input row feeding output site i through offset k, -1 if none (cached).

        The layout of the compiled and fused kernels (:mod:`pcseg.sparse.kernels`). Each (output,
        offset) has at most one input: the input site is the output site moved by the offset.
        """
        if self._table is None:
            in_idx, out_idx, ptr = self._pairs
            device = out_idx.device
            table = torch.full((self.n_out, self.kernel_volume), -1, dtype=torch.int32, device=device)
            counts = torch.tensor([e - s for s, e in zip(ptr[:-1], ptr[1:])], device=device)
            offset_of_pair = torch.repeat_interleave(torch.arange(self.kernel_volume, device=device), counts)
            table[out_idx, offset_of_pair] = in_idx.to(torch.int32)
            if self.identity >= 0:
                table[:, self.identity] = torch.arange(self.n_out, dtype=torch.int32, device=device)
            self._table = table
        return self._table

    def columns(self) -> Tensor:
        """(K, n_out) int32: the neighbour table transposed, one offset's rows contiguous (cached)."""
        if self._columns is None:
            self._columns = self.neighbor_table().t().contiguous()
        return self._columns

    def offset_pairs(self) -> list[tuple[int, Tensor, Tensor]]:
        """``(k, in_rows, out_rows)`` for every offset but the identity, each (P_k,) int64 (cached).

        Derived from the neighbour table by one ``nonzero`` per offset, without host syncs: P_k is
        a data-dependent size, so a traced map gets its pairs inside the graph. Within one offset
        the output rows are distinct and ascending. A submanifold map (``identity >= 0``) is
        symmetric: offset K-1-k holds the pairs of offset k swapped, so only half is searched.
        """
        if self._offset_pairs is None:
            table, k_vol = self.neighbor_table(), self.kernel_volume
            searched = k_vol // 2 if self.identity >= 0 else k_vol
            pairs = []
            for k in range(searched):
                out_rows = (table[:, k] >= 0).nonzero().squeeze(1)
                in_rows = table[:, k].index_select(0, out_rows).to(torch.int64)
                pairs.append((k, in_rows, out_rows))
                if self.identity >= 0:
                    pairs.append((k_vol - 1 - k, out_rows, in_rows))
            self._offset_pairs = pairs
        return self._offset_pairs

    def gather_index(self) -> Tensor:
        """(n_out, K) int64 rows to gather from the features with one zero row appended (cached).

        The neighbour table with -1 replaced by ``n_in``, the index of that zero row.
        """
        if self._gather is None:
            table = self.neighbor_table()
            self._gather = torch.where(table >= 0, table.to(torch.int64), self.n_in)
        return self._gather

    def reducer(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """(n_out, P) sparse CSR matrix of ones summing pair rows into their output site.

        ``reducer @ buf`` adds row p of a (P, C) buffer into row ``out_idx[p]``: a deterministic
        segment sum (no atomics), cached per dtype.
        """
        if dtype not in self._reducers:
            out_idx = self.out_idx
            device = out_idx.device
            order = torch.argsort(out_idx, stable=True)
            crow = torch.zeros(self.n_out + 1, dtype=torch.int64, device=device)
            crow[1:] = torch.cumsum(torch.bincount(out_idx, minlength=self.n_out), 0)
            ones = torch.ones(order.numel(), dtype=dtype, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta"
                self._reducers[dtype] = torch.sparse_csr_tensor(crow, order, ones, (self.n_out, order.numel()),
                                                                check_invariants=False)
        return self._reducers[dtype]


def build_kernel_map(in_keys: SortedKeys, out_coords: Tensor, kernel_size: tuple[int, ...],
                     step: tuple[int, ...], same_sites: bool = False,
                     workspace: Workspace | None = None, out_keys: SortedKeys | None = None) -> KernelMap:
    """Match every output site with its inputs at ``out + offset * step``.

    in_keys: sorted keys of the input coords (N_in sites). out_coords: (N_out, 1+D) int32.
    kernel_size, step: D-tuples; ``step = input tensor stride × dilation``.
    same_sites: True when input and output coords are the same set in the same order
    (submanifold): the centre offset is then marked as identity.
    workspace: scratch buffers to share with other maps (a new one when omitted).
    out_keys: sorted keys of ``out_coords`` if the caller has them (sorted here otherwise).

    On a CPU with the compiled kernels (:mod:`pcseg.sparse.kernels.cpu`) the neighbour table is
    built directly by a merge join of the sorted keys; otherwise by ``searchsorted`` into pairs.
    While tracing, by a sort-merge look-up (plain ops that ONNX expresses), or by the compiled merge
    join for the traced convolution form ``"kernel"``.
    """
    device = out_coords.device
    offsets = kernel_offsets(kernel_size, device) * torch.tensor(step, dtype=torch.int64, device=device)
    margin = max([0] + [max(-a.start, a.stop - 1) * s for a, s in zip(_axis_offsets(kernel_size), step)])
    check_range(out_coords, margin=margin)
    n_out = out_coords.shape[0]
    n_in = in_keys.keys.shape[0]
    k_vol = offsets.shape[0]
    symmetric = same_sites and all(k % 2 == 1 for k in kernel_size)
    identity = k_vol // 2 if symmetric else -1
    traced = tracing()
    # The compiled merge join (pcseg::lookup_table) runs eagerly where the compiled kernels serve, and
    # while tracing the convolution form "kernel", whose program calls the compiled kernels anyway.
    if (traced_conv_name() == "kernel") if traced else compiled_kmaps(device):
        if out_keys is None:
            out_keys = in_keys if same_sites else SortedKeys.from_coords(out_coords)
        table = cpu_kernels.lookup_table(in_keys.keys, in_keys.order, out_keys.keys, out_keys.order,
                                         offset_keys(offsets))
        return KernelMap.from_table(table, n_in, identity, workspace, traced=traced)
    # Submanifold maps are symmetric: offset K-1-k is -offset_k, whose pairs are those of k swapped.
    # So only the first half is searched; the centre is the identity and stores no pairs.
    searched = k_vol // 2 if symmetric else k_vol
    query = offset_keys(offsets[:searched])[:, None] + pack_keys(out_coords, check=False)[None, :]
    dim = out_coords.shape[1] - 1
    if traced and BATCH_BITS + dim * axis_bits(dim) > 62:
        raise ValueError(f"a traced kernel map needs keys of at most 62 bits (D >= 2), got D={dim}")
    rows = in_keys.lookup(query)                                        # (searched, N_out), -1 = absent
    if traced:
        table = rows.t().to(torch.int32)
        if symmetric:
            centre = torch.arange(n_out, dtype=torch.int32, device=device)[:, None]
            table = torch.cat([table, centre, invert_table(table, n_out).flip(1)], dim=1)
        return KernelMap.from_table(table, n_in, identity, workspace, traced=True)
    k_idx, out_idx = (rows >= 0).nonzero(as_tuple=True)                 # grouped by offset
    in_idx = rows[k_idx, out_idx]
    counts = torch.bincount(k_idx, minlength=searched)
    if symmetric:
        halves = torch.split(torch.stack([in_idx, out_idx]), counts.tolist(), dim=1)
        mirrored = [h.flip(0) for h in reversed(halves)]                # offset K-1-k: (out, in) of k
        in_idx, out_idx = torch.cat([torch.stack([in_idx, out_idx])] + mirrored, dim=1)
        counts = torch.cat([counts, counts.new_zeros(1), counts.flip(0)])
    ptr = [0] + torch.cumsum(counts, 0).tolist()
    return KernelMap(n_in, n_out, pairs=(in_idx, out_idx, ptr), identity=identity, workspace=workspace)


def invert_table(table: Tensor, n_in: int) -> Tensor:
    """Transpose a neighbour table: ``inverse[i, k] = o`` where ``table[o, k] = i``, else -1.

    table: (N_out, K) int32 of a map in which each (input, offset) feeds at most one output (every
    sparse convolution map). Returns (n_in, K) int32. Missing entries scatter into a spare row.
    """
    n_out, k_vol = table.shape
    index = torch.where(table >= 0, table.to(torch.int64), n_in)
    src = torch.arange(n_out, dtype=table.dtype, device=table.device)[:, None].expand(n_out, k_vol)
    inverse = torch.full((n_in + 1, k_vol), -1, dtype=table.dtype, device=table.device)
    return inverse.scatter_(0, index, src)[:n_in]
