"""Integer coordinate keys: pack ``(batch, x1..xD)`` into one int64 per site.

Each site is encoded with fixed per-axis bit widths so that keys of different coordinate sets
(fine and coarse strides, queries shifted by a kernel offset) are comparable:

    key = batch << (D * bits) | (x1 + bias) << ((D - 1) * bits) | ... | (xD + bias)

with ``bias = 2 ** (bits - 1)``. The batch index gets :data:`BATCH_BITS` bits and each spatial
axis ``(63 - BATCH_BITS) // D`` bits (D=2: 26, D=3: 17, D=4: 13). Ranges are checked and an
overflow raises :class:`CoordinateOverflowError`; keys never wrap silently.

Because the packing is linear per field, ``key(c + o) == key(c) + offset_key(o)`` whenever
``c + o`` stays inside the representable range, which :func:`check_range` guarantees for a margin.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["BATCH_BITS", "CoordinateOverflowError", "axis_bits", "coord_range", "check_range",
           "pack_keys", "unpack_keys", "offset_keys"]

BATCH_BITS = 10


class CoordinateOverflowError(ValueError):
    """Raised when coordinates do not fit the fixed-width int64 key."""


def axis_bits(dim: int) -> int:
    """Bits per spatial axis for ``dim`` spatial dimensions."""
    if dim < 1:
        raise ValueError(f"dimension must be >= 1, got {dim}")
    bits = (63 - BATCH_BITS) // dim
    if bits < 4:
        raise ValueError(f"dimension {dim} leaves only {bits} bits per axis in an int64 key")
    return bits


def coord_range(dim: int) -> tuple[int, int]:
    """Inclusive ``(low, high)`` range of a spatial coordinate for ``dim`` dimensions."""
    bias = 1 << (axis_bits(dim) - 1)
    return -bias, bias - 1


def check_range(coords: Tensor, margin: int = 0) -> None:
    """Raise :class:`CoordinateOverflowError` unless ``coords`` fit the key with ``margin`` spare.

    coords: (N, 1+D) integer, batch index first. ``margin`` is the largest absolute offset that
    will be added to a coordinate (e.g. ``dilation * stride * (kernel_size // 2)``).
    """
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"coords must have shape (N, 1+D), got {tuple(coords.shape)}")
    if coords.shape[0] == 0:
        return
    dim = coords.shape[1] - 1
    low, high = coord_range(dim)
    cmin = coords.min(dim=0).values.tolist()
    cmax = coords.max(dim=0).values.tolist()
    if cmin[0] < 0 or cmax[0] >= (1 << BATCH_BITS):
        raise CoordinateOverflowError(
            f"batch index must be in [0, {(1 << BATCH_BITS) - 1}], got [{cmin[0]}, {cmax[0]}]")
    for axis in range(1, dim + 1):
        if cmin[axis] - margin < low or cmax[axis] + margin > high:
            raise CoordinateOverflowError(
                f"coordinate axis {axis - 1} spans [{cmin[axis]}, {cmax[axis]}] (plus kernel margin "
                f"{margin}); a {dim}-D key holds [{low}, {high}] per axis. Use a larger voxel size "
                f"or crop the scene.")


def pack_keys(coords: Tensor, check: bool = True) -> Tensor:
    """Pack coordinates into int64 keys.

    coords: (N, 1+D) integer tensor, batch index first. Returns (N,) int64 keys whose order is
    lexicographic in (batch, x1, ..., xD).
    """
    if check:
        check_range(coords)
    dim = coords.shape[1] - 1
    bits = axis_bits(dim)
    bias = 1 << (bits - 1)
    c = coords.to(torch.int64)
    key = c[:, 0].clone()
    for axis in range(1, dim + 1):
        key = (key << bits) | (c[:, axis] + bias)
    return key


def unpack_keys(keys: Tensor, dim: int) -> Tensor:
    """Inverse of :func:`pack_keys`: (N,) int64 → (N, 1+D) int32 coords, batch first."""
    bits = axis_bits(dim)
    bias = 1 << (bits - 1)
    mask = (1 << bits) - 1
    cols = []
    k = keys.clone()
    for _ in range(dim):
        cols.append((k & mask) - bias)
        k = k >> bits
    cols.append(k)
    return torch.stack(cols[::-1], dim=1).to(torch.int32)


def offset_keys(offsets: Tensor) -> Tensor:
    """Key increments of spatial offsets: ``pack(c + o) - pack(c)`` for in-range ``c + o``.

    offsets: (K, D) integer. Returns (K,) int64.
    """
    dim = offsets.shape[1]
    bits = axis_bits(dim)
    o = offsets.to(torch.int64)
    delta = torch.zeros(o.shape[0], dtype=torch.int64, device=o.device)
    for axis in range(dim):
        delta = delta * (1 << bits) + o[:, axis]
    return delta
