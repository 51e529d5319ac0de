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
Eagerly a map is a list of (input, output) pairs grouped by offset, with Python-int group bounds
``ptr`` (the gather-GEMM-scatter path). While ``torch.export`` / ``torch.compile`` traces
(:func:`~pcseg.sparse.coords.tracing`) the map is built as a fixed-shape ``(N_out, K)``
neighbour table instead: no host syncs, no Python values taken from tensors, only the number of
sites is data-dependent. Look-ups then use a sort-merge (:meth:`SortedKeys.lookup_sort_merge`)
instead of ``searchsorted``, so the traced graph is expressible in ONNX.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import product
from typing import Optional

import torch
from torch import Tensor

from .coords import BATCH_BITS, axis_bits, check_range, offset_keys, pack_keys, tracing

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
        keys, order = torch.sort(pack_keys(coords))
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
        _, perm = torch.sort(torch.cat([self.keys * 2, flat * 2 + 1]))
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


@dataclass
class KernelMap:
    """Input→output pairs of a sparse convolution, grouped by kernel offset.

    in_idx, out_idx: (P,) int64 pairs; the pairs of offset k are ``[ptr[k], ptr[k+1])``.
    ptr: list of K+1 python ints. n_in, n_out: number of input and output sites.
    identity: index of an offset that maps every site i to itself (the centre of a submanifold
    map), or -1. Its pairs are not stored (its range in ``ptr`` is empty): kernels apply it as a
    plain matrix product without gather or scatter.
    workspace: scratch buffers shared with the other maps of the same context.

    A traced map (:meth:`from_table`) has no pairs: ``in_idx``, ``out_idx`` and ``ptr`` are None and
    only :meth:`neighbor_table` / :meth:`gather_index` describe it.
    """

    in_idx: Optional[Tensor]
    out_idx: Optional[Tensor]
    ptr: Optional[list[int]]
    n_in: int
    n_out: int
    identity: int = -1
    workspace: Workspace = field(default_factory=Workspace, repr=False)

    def __post_init__(self) -> None:
        self._reducers: dict[torch.dtype, Tensor] = {}
        self._transposed: KernelMap | None = None
        self._table: Tensor | None = None
        self._gather: Tensor | None = None

    @classmethod
    def from_table(cls, table: Tensor, n_in: int, identity: int = -1,
                   workspace: Optional[Workspace] = None) -> "KernelMap":
        """A map given by its (N_out, K) int32 neighbour table alone (-1: no input), the traced form."""
        kmap = cls(None, None, None, n_in, table.shape[0], identity, workspace or Workspace())
        kmap._table = table
        return kmap

    @property
    def has_pairs(self) -> bool:
        """False for a traced map (:meth:`from_table`): convolutions then gather through the table."""
        return self.ptr is not None

    @property
    def kernel_volume(self) -> int:
        return len(self.ptr) - 1 if self.ptr is not None else self._table.shape[1]

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        """(in_idx, out_idx) of offset k, each (P_k,) int64 (empty for the identity offset)."""
        s, e = self.ptr[k], self.ptr[k + 1]
        return self.in_idx[s:e], self.out_idx[s:e]

    def transposed(self) -> "KernelMap":
        """The map of the transposed convolution: same pairs, input and output swapped (cached)."""
        if self._transposed is None:
            if self.has_pairs:
                self._transposed = KernelMap(self.out_idx, self.in_idx, self.ptr, self.n_out, self.n_in,
                                             self.identity, self.workspace)
            else:
                self._transposed = KernelMap.from_table(invert_table(self._table, self.n_in), self.n_out,
                                                        self.identity, self.workspace)
            self._transposed._transposed = self
        return self._transposed

    def neighbor_table(self) -> Tensor:
        """(n_out, K) int32: the input row feeding output site i through offset k, -1 if none (cached).

        The layout of the fused kernels (:mod:`pcseg.sparse.kernels`). Each (output, offset) has at
        most one input: the input site is the output site moved by the offset.
        """
        if self._table is None:
            device = self.out_idx.device
            table = torch.full((self.n_out, self.kernel_volume), -1, dtype=torch.int32, device=device)
            counts = torch.tensor([e - s for s, e in zip(self.ptr[:-1], self.ptr[1:])], device=device)
            offset_of_pair = torch.repeat_interleave(torch.arange(self.kernel_volume, device=device), counts)
            table[self.out_idx, offset_of_pair] = self.in_idx.to(torch.int32)
            if self.identity >= 0:
                table[:, self.identity] = torch.arange(self.n_out, dtype=torch.int32, device=device)
            self._table = table
        return self._table

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
            device = self.out_idx.device
            order = torch.argsort(self.out_idx, stable=True)
            crow = torch.zeros(self.n_out + 1, dtype=torch.int64, device=device)
            crow[1:] = torch.cumsum(torch.bincount(self.out_idx, minlength=self.n_out), 0)
            ones = torch.ones(order.numel(), dtype=dtype, device=device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)   # "sparse CSR support is in beta"
                self._reducers[dtype] = torch.sparse_csr_tensor(crow, order, ones, (self.n_out, order.numel()),
                                                                check_invariants=False)
        return self._reducers[dtype]


def build_kernel_map(in_keys: SortedKeys, out_coords: Tensor, kernel_size: tuple[int, ...],
                     step: tuple[int, ...], same_sites: bool = False,
                     workspace: Workspace | None = None) -> KernelMap:
    """Match every output site with its inputs at ``out + offset * step``.

    in_keys: sorted keys of the input coords (N_in sites). out_coords: (N_out, 1+D) int32.
    kernel_size, step: D-tuples; ``step = input tensor stride × dilation``.
    same_sites: True when input and output coords are the same set in the same order
    (submanifold): the centre offset is then marked as identity.
    workspace: scratch buffers to share with other maps (a new one when omitted).
    """
    device = out_coords.device
    offsets = kernel_offsets(kernel_size, device) * torch.tensor(step, dtype=torch.int64, device=device)
    margin = max([0] + [max(-a.start, a.stop - 1) * s for a, s in zip(_axis_offsets(kernel_size), step)])
    check_range(out_coords, margin=margin)
    n_out = out_coords.shape[0]
    n_in = in_keys.keys.shape[0]
    k_vol = offsets.shape[0]
    symmetric = same_sites and all(k % 2 == 1 for k in kernel_size)
    # Submanifold maps are symmetric: offset K-1-k is -offset_k, whose pairs are those of k swapped.
    # So only the first half is searched; the centre is the identity and stores no pairs.
    searched = k_vol // 2 if symmetric else k_vol
    query = offset_keys(offsets[:searched])[:, None] + pack_keys(out_coords, check=False)[None, :]
    traced = tracing()
    dim = out_coords.shape[1] - 1
    if traced and BATCH_BITS + dim * axis_bits(dim) > 62:
        raise ValueError(f"a traced kernel map needs keys of at most 62 bits (D >= 2), got D={dim}")
    rows = in_keys.lookup(query)                                        # (searched, N_out), -1 = absent
    if traced:
        table = rows.t().to(torch.int32)
        if symmetric:
            centre = torch.arange(n_out, dtype=torch.int32, device=device)[:, None]
            table = torch.cat([table, centre, invert_table(table, n_out).flip(1)], dim=1)
        return KernelMap.from_table(table, n_in, searched if symmetric else -1, workspace)
    k_idx, out_idx = (rows >= 0).nonzero(as_tuple=True)                 # grouped by offset
    in_idx = rows[k_idx, out_idx]
    counts = torch.bincount(k_idx, minlength=searched)
    identity = -1
    if symmetric:
        identity = searched
        halves = torch.split(torch.stack([in_idx, out_idx]), counts.tolist(), dim=1)
        mirrored = [h.flip(0) for h in reversed(halves)]                # offset K-1-k: (out, in) of k
        in_idx, out_idx = torch.cat([torch.stack([in_idx, out_idx])] + mirrored, dim=1)
        counts = torch.cat([counts, counts.new_zeros(1), counts.flip(0)])
    ptr = [0] + torch.cumsum(counts, 0).tolist()
    return KernelMap(in_idx, out_idx, ptr, n_in, n_out, identity, workspace or Workspace())


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
