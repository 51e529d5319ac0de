"""SparseTensor: features on integer sites, batch index first."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from .context import CoordinateContext, Stride
from .coords import check_range

__all__ = ["SparseTensor", "to_tuple"]

_NARROW_INTS = (torch.int8, torch.uint8, torch.int16)   # cast to int32 exactly


def to_tuple(value: int | Sequence[int], dim: int, name: str = "value") -> tuple[int, ...]:
    """Broadcast an int to a D-tuple, or check a sequence has D entries."""
    if isinstance(value, int):
        return (value,) * dim
    out = tuple(int(v) for v in value)
    if len(out) != dim:
        raise ValueError(f"{name} must be an int or {dim} ints, got {value!r}")
    return out


class SparseTensor:
    """Features on the occupied sites of a D-dimensional integer grid.

    feats: (N, C) float. coords: (N, 1+D) int32, batch index first, then D integer coordinates in
    units of the finest grid (multiples of ``stride`` per axis); wider integer coords are
    range-checked (:class:`~pcseg.sparse.coords.CoordinateOverflowError`) and then cast to int32.
    stride: int or D-tuple.
    context: the :class:`CoordinateContext` shared with related tensors (created when omitted).

    Operations return new tensors that share the context; ``.to()`` returns a copy.
    """

    def __init__(self, feats: Tensor, coords: Tensor, stride: int | Sequence[int] = 1,
                 context: Optional[CoordinateContext] = None):
        if coords.ndim != 2 or coords.shape[1] < 2:
            raise ValueError(f"coords must be (N, 1+D) with the batch index first, got shape {tuple(coords.shape)}")
        if coords.dtype.is_floating_point or coords.dtype == torch.bool:
            raise TypeError(f"coords must be an integer tensor, got {coords.dtype}")
        if feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
            raise ValueError(f"feats must be (N, C) with N = {coords.shape[0]} coords rows, got {tuple(feats.shape)}")
        if feats.device != coords.device:
            raise ValueError(f"feats on {feats.device} but coords on {coords.device}")
        dim = coords.shape[1] - 1
        if coords.dtype != torch.int32:
            if coords.dtype not in _NARROW_INTS:
                check_range(coords)            # before the cast: int64 values must not wrap
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        self.stride: Stride = to_tuple(stride, dim, "stride")
        if context is None:
            context = CoordinateContext(dim)
            context.add(self.stride, coords)
        elif context.dim != dim:
            raise ValueError(f"context has dimension {context.dim}, coords have {dim}")
        elif context.coords(self.stride) is not coords and not torch.equal(context.coords(self.stride), coords):
            raise ValueError(f"coords differ from the context's coordinates at stride {self.stride}")
        self.context = context

    # MinkowskiEngine / TorchSparse aliases
    @property
    def F(self) -> Tensor:
        return self.feats

    @property
    def C(self) -> Tensor:
        return self.coords

    @property
    def dim(self) -> int:
        return self.coords.shape[1] - 1

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max()) + 1 if self.coords.shape[0] else 0

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(sites={len(self)}, channels={self.feats.shape[1]}, dim={self.dim}, "
                f"stride={self.stride}, dtype={self.feats.dtype}, device={self.device})")

    def replace(self, feats: Tensor) -> "SparseTensor":
        """Same sites and context, new (N, C') features."""
        return SparseTensor(feats, self.coords, self.stride, self.context)

    def _check_same_sites(self, other: "SparseTensor", op: str) -> None:
        if other.context is not self.context or other.stride != self.stride:
            raise ValueError(f"{op} needs tensors on the same sites (same context and stride); "
                             f"got strides {self.stride} and {other.stride}"
                             + ("" if other.context is self.context else " from different contexts"))

    def __add__(self, other: "SparseTensor | Tensor | float") -> "SparseTensor":
        if isinstance(other, SparseTensor):
            self._check_same_sites(other, "addition")
            return self.replace(self.feats + other.feats)
        return self.replace(self.feats + other)

    def to(self, *args, **kwargs) -> "SparseTensor":
        """A copy on another device/dtype (dtype applies to features only), with a fresh context."""
        feats = self.feats.to(*args, **kwargs)
        return SparseTensor(feats, self.coords.to(feats.device), self.stride)

    def slice(self, inverse: Tensor) -> Tensor:
        """Features of the original points: (P,) int64 point→site map → (P, C)."""
        return self.feats[inverse]

    def dense(self, shape: Optional[Sequence[int]] = None, min_coord: Optional[Sequence[int]] = None) -> Tensor:
        """Scatter into a dense (B, C, S1..SD) tensor; site c lands at ``(c - min_coord) / stride``.

        min_coord defaults to zeros; shape defaults to the smallest grid holding every site.
        """
        s = torch.tensor(self.stride, device=self.coords.device)
        origin = torch.zeros(self.dim, dtype=torch.int64, device=s.device) if min_coord is None \
            else torch.tensor(list(min_coord), dtype=torch.int64, device=s.device)
        grid = (self.coords[:, 1:].to(torch.int64) - origin)
        if bool((grid < 0).any()) or bool((grid % s != 0).any()):
            raise ValueError("dense(): every coordinate must be >= min_coord and a multiple of the stride")
        grid = grid // s
        if shape is None:
            shape = (grid.max(0).values + 1).tolist() if len(self) else [0] * self.dim
        shape = list(shape)
        if len(self) and any(int(m) >= n for m, n in zip(grid.max(0).values, shape)):
            raise ValueError(f"dense(): sites exceed the requested shape {shape}")
        out = self.feats.new_zeros((max(self.batch_size, 1), self.feats.shape[1], *shape))
        out = out.permute(0, *range(2, 2 + self.dim), 1)       # (B, S..., C) view for row indexing
        out[(self.coords[:, 0].long(),) + tuple(grid.t())] = self.feats
        return out.permute(0, self.dim + 1, *range(1, self.dim + 1))

    @classmethod
    def from_dense(cls, x: Tensor, mask: Optional[Tensor] = None) -> "SparseTensor":
        """Sites of a dense (B, C, S1..SD) tensor: all of them, or where ``mask`` (B, S1..SD) is True."""
        if x.ndim < 3:
            raise ValueError(f"from_dense expects (B, C, S1..SD), got shape {tuple(x.shape)}")
        b, c = x.shape[:2]
        if mask is None:
            mask = torch.ones((b, *x.shape[2:]), dtype=torch.bool, device=x.device)
        idx = mask.nonzero()                                     # (N, 1+D), batch first, row-major order
        feats = x.movedim(1, -1)[mask]
        return cls(feats, idx.to(torch.int32))
