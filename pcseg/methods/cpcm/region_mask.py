"""RegionMask (CPCM, ICCV'23): mask the input features of whole regions of a scene.

The occupied bounding box of each scene is cut into ``grid`` slabs per axis at the quantiles
``1/grid, …, (grid-1)/grid`` of the occupied voxel coordinates (so slabs hold similar numbers of
voxels), giving ``grid**D`` regions; ``round(mask_ratio * grid**D)`` of them are drawn uniformly
without replacement and the features of the voxels inside are set to zero.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["region_boundaries", "region_ids", "RegionMask"]


def region_boundaries(coords: Tensor, grid: int) -> Tensor:
    """Inner slab boundaries of one scene: (D, grid-1) float64, row a = quantiles of axis a.

    coords: (N, D) integer or float voxel coordinates of one scene (no batch column), N >= 1.
    Quantiles are numpy's default (linear interpolation), ``q = k / grid`` for k = 1 … grid-1.
    """
    if coords.ndim != 2 or coords.shape[0] == 0:
        raise ValueError(f"region_boundaries: expected (N, D) coords with N >= 1, got shape {tuple(coords.shape)}")
    q = torch.arange(1, grid, dtype=torch.float64, device=coords.device) / grid
    return torch.quantile(coords.to(torch.float64), q, dim=0).T.contiguous()


def region_ids(coords: Tensor, grid: int) -> Tensor:
    """Region of each voxel of one scene: (N,) int64 in [0, grid**D).

    coords: (N, D). Along axis a the slab index is the number of boundaries <= the coordinate (a
    voxel on a boundary belongs to the upper slab); the region id is ``sum_a slab_a * grid**a``.
    """
    bounds = region_boundaries(coords, grid)
    values = coords.to(torch.float64)
    ids = torch.zeros(coords.shape[0], dtype=torch.int64, device=coords.device)
    for axis in range(coords.shape[1]):
        slab = torch.searchsorted(bounds[axis], values[:, axis].contiguous(), right=True)
        ids += slab * grid ** axis
    return ids


class RegionMask:
    """Zero the input features of ``round(mask_ratio * grid**D)`` quantile regions per scene.

    mask_ratio: fraction of regions masked, in [0, 1]. grid: slabs per axis (>= 1). Python's
    ``round`` is used (ties to even), e.g. 0.75 of 4**3 = 48 regions, of 8**3 = 384.
    """

    def __init__(self, mask_ratio: float = 0.75, grid: int = 4) -> None:
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"RegionMask.mask_ratio: expected a fraction in [0, 1], got {mask_ratio}")
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"RegionMask.grid: expected an int >= 1, got {grid!r}")
        self.mask_ratio = float(mask_ratio)
        self.grid = grid

    def num_masked(self, dim: int) -> int:
        """Regions masked per scene of a D=``dim`` grid."""
        return round(self.mask_ratio * self.grid ** dim)

    def __call__(self, coords: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """(N,) bool, True at the voxels to mask.

        coords: (N, 1+D) int, batch index first; each scene is split and masked on its own.
        generators: CPU ``torch.Generator`` s, one per scene: scene ``b`` draws its regions from ``generators[b]``.
        """
        if coords.ndim != 2 or coords.shape[1] < 2:
            raise ValueError(f"RegionMask: expected (N, 1+D) coords with the batch index first, "
                             f"got shape {tuple(coords.shape)}")
        dim = coords.shape[1] - 1
        n_regions, n_masked = self.grid ** dim, self.num_masked(dim)
        mask = torch.zeros(coords.shape[0], dtype=torch.bool, device=coords.device)
        for b in torch.unique(coords[:, 0]).tolist():
            rows = torch.nonzero(coords[:, 0] == b).squeeze(1)
            chosen = torch.zeros(n_regions, dtype=torch.bool)
            chosen[torch.randperm(n_regions, generator=generators[b])[:n_masked]] = True
            mask[rows] = chosen.to(coords.device)[region_ids(coords[rows, 1:], self.grid)]
        return mask

    def apply(self, feats: Tensor, coords: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
        """A copy of ``feats`` (N, C) with the rows of the masked voxels set to zero (``generators``: see ``__call__``)."""
        return feats.masked_fill(self(coords, generators)[:, None], 0.0)

    def __repr__(self) -> str:
        return f"RegionMask(mask_ratio={self.mask_ratio}, grid={self.grid})"
