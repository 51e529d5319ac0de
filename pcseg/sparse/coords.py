"""Integer coordinate keys: pack ``(batch, x1..xD)`` into one int64 per site.

Each site is encoded with fixed per-axis bit widths so that keys of different coordinate sets
(fine and coarse strides, queries shifted by a kernel offset) are comparable:

    key = batch << (D * bits) | (x1 + bias) << ((D - 1) * bits) | ... | (xD + bias)

with ``bias = 2 ** (bits - 1)``. The batch index gets :data:`BATCH_BITS` bits and each spatial
axis ``(63 - BATCH_BITS) // D`` bits (D=2: 26, D=3: 17, D=4: 13). Ranges are checked and an
overflow raises :class:`CoordinateOverflowError`; keys never wrap silently.

Because the packing is linear per field, ``key(c + o) == key(c) + offset_key(o)`` whenever
``c + o`` stays inside the representable range, which :func:`check_range` guarantees for a margin.
Coordinates are stored as int32, so a range is also capped at the int32 range (only D=1 keys
would hold more).

Under ``torch.export`` / ``torch.compile`` (:func:`tracing`) the checks cannot branch on tensor
values: :func:`check_range` then records a runtime assertion in the graph instead
(``torch._assert_async`` on the coordinate extremes), which an exported program or AOTInductor package
evaluates on every call. ONNX has no assertion op, so an ONNX graph does not check.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BATCH_BITS", "CoordinateOverflowError", "axis_bits", "coord_range", "check_range",
           "pack_keys", "unpack_keys", "offset_keys", "tracing", "sort_keys"]

BATCH_BITS = 10
_INT32 = (-(1 << 31), (1 << 31) - 1)


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
    """Inclusive ``(low, high)`` range of a spatial coordinate for ``dim`` dimensions.

    The key's field ``[-2^(bits-1), 2^(bits-1) - 1]``, capped at the int32 range of stored coords.
    """
    bias = 1 << (axis_bits(dim) - 1)
    return max(-bias, _INT32[0]), min(bias - 1, _INT32[1])


def tracing() -> bool:
    """True while ``torch.export`` or ``torch.compile`` traces: no Python branching on tensor values."""
    return torch.compiler.is_compiling()


# Sentinels sorted before the keys while tracing: one more than Inductor's int16 sort index range.
_TRACED_SORT_PAD = 32767


def sort_keys(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort`` of (N,) int64 keys >= 0 (every packed key is), ascending.

    Returns ``(values (N,) int64, order (N,) int64)``. While tracing, 32,767 sentinels of value -1
    are appended; they sort before every key, and the last N entries are returned. Inductor's
    ``aten.sort`` lowering guards the sorted length below 32,767 (its int16 index range) on the
    export example's size before it decides between its own kernel and ``aten.sort``; AOTInductor
    compiles that guard into a hard bound on the scenes a package accepts (``Expected u0 <= 32766``),
    on CPU and CUDA alike. A length of N + 32,767 is provably outside that range, so the lowering
    calls ``aten.sort`` without a guard on any device. Eagerly a plain sort.
    """
    if not tracing():
        return torch.sort(keys)
    padded = torch.cat([keys, keys.new_full((_TRACED_SORT_PAD,), -1)])
    values, order = torch.sort(padded)
    return values[_TRACED_SORT_PAD:], order[_TRACED_SORT_PAD:]


def _fmt(value: float) -> str:
    """A coordinate extreme for a message: integral values without a decimal point."""
    return str(int(value)) if math.isfinite(value) else str(value)


def check_range(coords: Tensor, margin: int = 0) -> None:
    """Raise :class:`CoordinateOverflowError` unless ``coords`` fit the key with ``margin`` spare.

    coords: (N, 1+D) integer (or integral floating-point values, checked before a cast), batch
    index first. ``margin`` is the largest absolute offset that will be added to a coordinate
    (e.g. ``dilation * stride * (kernel_size // 2)``). While tracing, a runtime assertion instead.
    """
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"coords must have shape (N, 1+D), got {tuple(coords.shape)}")
    dim = coords.shape[1] - 1
    low, high = coord_range(dim)
    if tracing():
        _assert_range(coords, low + margin, high - margin)
        return
    if coords.shape[0] == 0:
        return
    cmin = coords.min(dim=0).values.tolist()
    cmax = coords.max(dim=0).values.tolist()
    if cmin[0] < 0 or cmax[0] >= (1 << BATCH_BITS):
        raise CoordinateOverflowError(
            f"batch index must be in [0, {(1 << BATCH_BITS) - 1}], got [{_fmt(cmin[0])}, {_fmt(cmax[0])}]")
    for axis in range(1, dim + 1):
        if cmin[axis] - margin < low or cmax[axis] + margin > high:
            raise CoordinateOverflowError(
                f"coordinate axis {axis - 1} spans [{_fmt(cmin[axis])}, {_fmt(cmax[axis])}] (plus kernel "
                f"margin {margin}); a {dim}-D key holds [{low}, {high}] per axis. Use a larger voxel size "
                f"or crop the scene.")


def _assert_range(coords: Tensor, low: int, high: int) -> None:
    """Traced form of :func:`check_range`: one graph assertion that every site is in range.

    A zero row is appended so that the extremes exist for N = 0 (zero is always in range).
    """
    padded = torch.cat([coords, coords.new_zeros((1, coords.shape[1]))])
    cmin, cmax = padded.amin(dim=0), padded.amax(dim=0)
    ok = (cmin[0] >= 0) & (cmax[0] < (1 << BATCH_BITS)) & (cmin[1:] >= low).all() & (cmax[1:] <= high).all()
    torch._assert_async(ok, f"CoordinateOverflowError: coordinates outside the {coords.shape[1] - 1}-D key "
                            f"range [{low}, {high}] (kernel margin included) or batch index outside "
                            f"[0, {(1 << BATCH_BITS) - 1}]. Use a larger voxel size or crop the scene.")


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
