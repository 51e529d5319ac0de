"""Points in, per-point logits out: the whole inference pipeline as one traceable module."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from pcseg.sparse import SparseTensor, voxelize
from pcseg.sparse.voxelize import voxel_sizes

__all__ = ["PointsToLogits"]


class PointsToLogits(nn.Module):
    """Voxelize, build the kernel maps, run the network and slice the logits back to the points.

    model: a sparse network mapping a stride-1 :class:`~pcseg.sparse.SparseTensor` of (M, C_in)
    voxel features to a SparseTensor of (M, classes) logits on the same sites, with attributes
    ``D`` and ``in_channels`` (the :class:`~pcseg.models.MinkUNet` family).
    voxel_size: edge length in point units (metres; pixels for D=2), a scalar or D values; fixed
    in an exported program. reduce: voxel features from point features, ``"mean"`` or ``"first"``.

    The voxels are made as :class:`pcseg.data.datasets.SegmentationDataset` makes them (same
    reduction, coordinates shifted so their minimum is 0 on every axis), so the logits equal
    those ``tools/test.py`` computes from the same features. One scene per call (batch index 0).
    Every step is traceable by ``torch.export`` with a dynamic number of points.
    """

    def __init__(self, model: nn.Module, voxel_size: float | Sequence[float], reduce: str = "mean"):
        super().__init__()
        for attr in ("D", "in_channels"):
            if not hasattr(model, attr):
                raise TypeError(f"PointsToLogits needs a model with attribute {attr!r} (the MinkUNet family), "
                                f"got {type(model).__name__}")
        if reduce not in ("mean", "first"):
            raise ValueError(f"reduce must be 'mean' or 'first', got {reduce!r}")
        self.model = model
        self.dim: int = model.D
        self.in_channels: int = model.in_channels
        self.voxel_size: tuple[float, ...] = tuple(voxel_sizes(voxel_size, self.dim))
        self.reduce = reduce

    def extra_repr(self) -> str:
        return f"dim={self.dim}, voxel_size={self.voxel_size}, reduce={self.reduce!r}"

    def forward(self, points: Tensor, feats: Tensor) -> Tensor:
        """points: (N, D) float32 coordinates; feats: (N, C_in) float32 model inputs (as the dataset's
        val transforms make them, e.g. normalised colours). Returns (N, classes) float32 logits."""
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise ValueError(f"points must be (N, {self.dim}), got shape {tuple(points.shape)}")
        if feats.ndim != 2 or feats.shape[1] != self.in_channels:
            raise ValueError(f"feats must be (N, {self.in_channels}), got shape {tuple(feats.shape)}")
        batch = torch.zeros(points.shape[0], dtype=torch.int64, device=points.device)
        vox = voxelize(points, self.voxel_size, feats, reduce=self.reduce, batch=batch)
        coords = vox.coords - vox.coords.amin(dim=0)
        return self.model(SparseTensor(vox.feats, coords)).slice(vox.inverse)
