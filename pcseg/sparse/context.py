"""Coordinate context: the coordinate sets of one forward pass and their cached kernel maps."""
from __future__ import annotations

import torch
from torch import Tensor

from .kmap import KernelMap, SortedKeys, Workspace, build_kernel_map
from .voxelize import unique_coords

__all__ = ["CoordinateContext", "Stride"]

Stride = tuple[int, ...]


class CoordinateContext:
    """Holds the coordinates of every tensor stride seen in one network pass.

    Tensors derived from one input (by convolutions, pooling, normalisation) share a context, so a
    U-Net builds each kernel map once and its decoder reuses the encoder's maps transposed. Maps are
    keyed by ``(in_stride, kernel_size, stride, dilation, transposed)``; no string keys.

    dim: number of spatial dimensions D.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self._coords: dict[Stride, Tensor] = {}
        self._keys: dict[Stride, SortedKeys] = {}
        self._maps: dict[tuple, KernelMap] = {}
        self.workspace = Workspace()

    def __repr__(self) -> str:
        sizes = {s: c.shape[0] for s, c in self._coords.items()}
        return f"CoordinateContext(dim={self.dim}, sites={sizes}, kernel_maps={len(self._maps)})"

    def add(self, stride: Stride, coords: Tensor) -> None:
        """Register (N, 1+D) int32 coords at a stride; a stride keeps its first coordinate set."""
        if stride in self._coords and self._coords[stride] is not coords:
            raise ValueError(f"stride {stride} already has a coordinate set in this context; "
                             "create a new SparseTensor without context= for different coordinates")
        self._coords[stride] = coords

    def coords(self, stride: Stride) -> Tensor:
        """(N, 1+D) int32 coordinates at ``stride``; raises if that stride was never produced."""
        if stride not in self._coords:
            raise KeyError(f"no coordinates at stride {stride}; known strides: {sorted(self._coords)}")
        return self._coords[stride]

    def has(self, stride: Stride) -> bool:
        return stride in self._coords

    def sorted_keys(self, stride: Stride) -> SortedKeys:
        if stride not in self._keys:
            self._keys[stride] = SortedKeys.from_coords(self.coords(stride))
        return self._keys[stride]

    def downsample(self, in_stride: Stride, stride: Stride) -> Stride:
        """Create (once) the coordinates at ``in_stride * stride``: unique(floor(c / s) * s)."""
        out_stride = tuple(a * b for a, b in zip(in_stride, stride))
        if out_stride not in self._coords:
            c = self.coords(in_stride)
            s = torch.tensor((1,) + out_stride, dtype=torch.int32, device=c.device)
            coarse, _, _ = unique_coords(torch.div(c, s, rounding_mode="floor") * s)
            self._coords[out_stride] = coarse
        return out_stride

    def kernel_map(self, in_stride: Stride, kernel_size: Stride, stride: Stride, dilation: Stride,
                   transposed: bool = False) -> KernelMap:
        """Kernel map of a convolution reading coords at ``in_stride``.

        Forward (transposed=False): outputs at ``in_stride * stride`` (equal to the input coords when
        stride is 1: submanifold). Transposed: input at ``in_stride``, output at
        ``in_stride / stride``, the transpose of the forward map from the output stride.
        """
        key = (in_stride, kernel_size, stride, dilation, transposed)
        if key in self._maps:
            return self._maps[key]
        if transposed:
            fine = tuple(a // b for a, b in zip(in_stride, stride))
            if any(a % b for a, b in zip(in_stride, stride)) or not self.has(fine):
                raise ValueError(f"transposed convolution from stride {in_stride} by {stride} needs "
                                 f"coordinates at stride {fine}, produced earlier by a strided layer; "
                                 f"known strides: {sorted(self._coords)}")
            kmap = self.kernel_map(fine, kernel_size, stride, dilation).transposed()
        else:
            out_stride = self.downsample(in_stride, stride)
            step = tuple(s * d for s, d in zip(in_stride, dilation))
            kmap = build_kernel_map(self.sorted_keys(in_stride), self.coords(out_stride), kernel_size,
                                    step, same_sites=out_stride == in_stride, workspace=self.workspace,
                                    out_keys=self.sorted_keys(out_stride))
        self._maps[key] = kmap
        return kmap
