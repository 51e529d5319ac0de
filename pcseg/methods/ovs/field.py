"""A TensoRF-style radiance field with a feature branch (vector-matrix factorised grids).

Each branch is a :class:`VMGrid`: a 3D tensor factorised as ``sum_r P^{XY}_r(x, y) L^Z_r(z) +
P^{XZ}_r L^Y_r + P^{YZ}_r L^X_r`` (TensoRF's VM decomposition), read at arbitrary points with
bilinear (planes) and linear (lines) interpolation through :func:`torch.nn.functional.grid_sample`
(``align_corners=True``: grid node ``0`` and ``N-1`` sit on the box faces). Per point:

- density ``sigma = softplus(sum of the density grid's components + shift)`` (1/m);
- colour ``rgb = sigmoid(MLP(B_app · appearance components))`` in [0, 1] (view-independent: the
  synthetic rooms are Lambertian);
- feature ``f = B_feat · feature components`` with ``feature_dim`` channels, distilled from 2D
  image features.

Points outside the box get zero density.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["VMGrid", "RadianceField"]

_PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # (width, height) axes of each plane
_LINE_AXES = (2, 1, 0)  # the axis of the line paired with each plane


class VMGrid(nn.Module):
    """VM-factorised grid of ``rank`` components per plane/line pair, at ``resolution`` nodes per axis.

    ``forward(coords)``: coords (P, 3) in [-1, 1] (x, y, z) → (P, 3 * rank) float, the products
    ``plane · line`` of each component, planes in the order XY, XZ, YZ.
    """

    def __init__(self, rank: int, resolution: int, init_scale: float = 0.1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if rank < 1 or resolution < 2:
            raise ValueError(f"VMGrid: expected rank >= 1 and resolution >= 2, got {rank}, {resolution}")
        n = resolution
        self.planes = nn.ParameterList(
            [nn.Parameter(init_scale * torch.randn(1, rank, n, n, generator=generator)) for _ in range(3)])
        self.lines = nn.ParameterList(
            [nn.Parameter(init_scale * torch.randn(1, rank, n, 1, generator=generator)) for _ in range(3)])

    def forward(self, coords: Tensor) -> Tensor:
        out = []
        for plane, line, (a, b), c in zip(self.planes, self.lines, _PLANE_AXES, _LINE_AXES):
            plane_grid = coords[:, [a, b]].view(1, -1, 1, 2)  # grid_sample reads (x=width, y=height)
            line_grid = torch.stack([torch.zeros_like(coords[:, c]), coords[:, c]], -1).view(1, -1, 1, 2)
            p = F.grid_sample(plane, plane_grid, mode="bilinear", align_corners=True)[0, :, :, 0]
            l = F.grid_sample(line, line_grid, mode="bilinear", align_corners=True)[0, :, :, 0]
            out.append((p * l).T)
        return torch.cat(out, dim=1)


class RadianceField(nn.Module):
    """Density, colour and feature field over the axis-aligned box ``aabb`` (2, 3) metres.

    Args:
        aabb: (2, 3) min and max corner.
        resolution: grid nodes per axis.
        density_rank, appearance_rank, feature_rank: VM components per plane of each branch.
        appearance_dim: width of the appearance code fed to the colour MLP.
        feature_dim: channels of the feature branch (match the 2D encoder's, e.g. 512 for CLIP ViT-B/16).
        hidden: colour MLP width.
        density_shift: added before softplus so an untrained field starts almost empty.
        seed: initialisation seed.
    """

    def __init__(self, aabb: Tensor, resolution: int = 64, density_rank: int = 8, appearance_rank: int = 16,
                 feature_rank: int = 16, appearance_dim: int = 27, feature_dim: int = 64, hidden: int = 64,
                 density_shift: float = -5.0, seed: int = 0) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not (aabb[1] > aabb[0]).all():
            raise ValueError(f"RadianceField: aabb expected (2, 3) with max > min, got {aabb.tolist()}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("aabb", aabb)
        self.density_shift = density_shift
        self.density_grid = VMGrid(density_rank, resolution, generator=g)
        self.appearance_grid = VMGrid(appearance_rank, resolution, generator=g)
        self.feature_grid = VMGrid(feature_rank, resolution, generator=g)
        self.appearance_basis = nn.Linear(3 * appearance_rank, appearance_dim, bias=False)
        self.feature_basis = nn.Linear(3 * feature_rank, feature_dim, bias=False)
        self.color_mlp = nn.Sequential(nn.Linear(appearance_dim, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 3))
        self.feature_dim = feature_dim

    def normalize(self, points: Tensor) -> Tensor:
        """World points (P, 3) → box coordinates in [-1, 1] (outside the box: beyond)."""
        return (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0]) * 2.0 - 1.0

    def forward(self, points: Tensor) -> dict[str, Tensor]:
        """Query world points (P, 3) float32: ``sigma`` (P,), ``rgb`` (P, 3), ``feature`` (P, D_f)."""
        coords = self.normalize(points)
        inside = (coords.abs() <= 1.0).all(dim=1)
        coords = coords.clamp(-1.0, 1.0)
        sigma = F.softplus(self.density_grid(coords).sum(dim=1) + self.density_shift) * inside
        rgb = torch.sigmoid(self.color_mlp(self.appearance_basis(self.appearance_grid(coords))))
        feature = self.feature_basis(self.feature_grid(coords))
        return {"sigma": sigma, "rgb": rgb, "feature": feature}
