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
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from itertools import product

import torch
from torch import Tensor

from .coords import check_range, offset_keys, pack_keys

__all__ = ["kernel_offsets", "KernelMap", "build_kernel_map", "SortedKeys", "Workspace"]


def kernel_offsets(kernel_size: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Offsets of a kernel in units of (input stride × dilation).

    kernel_size: D-tuple. Returns (K, D) int64, K = prod(kernel_size), in the documented order.
    """
    axes = [range(-(k // 2), k // 2 + 1) if k % 2 else range(0, k) for k in kernel_size]
    return torch.tensor(list(product(*axes)), dtype=torch.int64, device=device).reshape(-1, len(kernel_size))


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
        """Row of each query key in the coords, -1 where absent. query: any shape int64."""
        if self.keys.numel() == 0:
            return torch.full_like(query, -1)
        pos = torch.searchsorted(self.keys, query).clamp_(max=self.keys.numel() - 1)
        found = self.keys[pos] == query
        return torch.where(found, self.order[pos], torch.full_like(pos, -1))


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
    """

    in_idx: Tensor
    out_idx: Tensor
    ptr: list[int]
    n_in: int
    n_out: int
    identity: int = -1
    workspace: Workspace = field(default_factory=Workspace, repr=False)

    def __post_init__(self) -> None:
        self._reducers: dict[torch.dtype, Tensor] = {}
        self._transposed: KernelMap | None = None
        self._table: Tensor | None = None

    @property
    def kernel_volume(self) -> int:
        return len(self.ptr) - 1

    def pairs(self, k: int) -> tuple[Tensor, Tensor]:
        """(in_idx, out_idx) of offset k, each (P_k,) int64 (empty for the identity offset)."""
        s, e = self.ptr[k], self.ptr[k + 1]
        return self.in_idx[s:e], self.out_idx[s:e]

    def transposed(self) -> "KernelMap":
        """The map of the transposed convolution: same pairs, input and output swapped (cached)."""
        if self._transposed is None:
            self._transposed = KernelMap(self.out_idx, self.in_idx, self.ptr, self.n_out, self.n_in, self.identity,
                                         self.workspace)
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
    margin = int(offsets.abs().max()) if offsets.numel() else 0
    check_range(out_coords, margin=margin)
    n_out = out_coords.shape[0]
    n_in = in_keys.keys.shape[0]
    k_vol = offsets.shape[0]
    symmetric = same_sites and all(k % 2 == 1 for k in kernel_size)
    # Submanifold maps are symmetric: offset K-1-k is -offset_k, whose pairs are those of k swapped.
    # So only the first half is searched; the centre is the identity and stores no pairs.
    searched = k_vol // 2 if symmetric else k_vol
    query = offset_keys(offsets[:searched])[:, None] + pack_keys(out_coords, check=False)[None, :]
    rows = in_keys.lookup(query)                                        # (searched, N_out), -1 = absent
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
