"""Point clouds and comparisons of the deployment tests (fixtures in conftest.py).

Clouds come from the synthetic generators (a room, a 64-beam LiDAR sweep, one object cut from a
room), sizes unlike the 2048-point example used for export. Networks are random-initialised with
their BatchNorm statistics set on a room, so activations and logits have realistic scales.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from pcseg.data.synthetic import generate_room, generate_street, lidar_sweep
from pcseg.deploy import PointsToLogits


class Cloud(NamedTuple):
    name: str
    points: torch.Tensor      # (N, D) float32
    feats: torch.Tensor       # (N, 3) float32


def _room(seed: int, num_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    scene = generate_room(seed, num_points=num_points)
    colour = scene.color.astype(np.float32) / 127.5 - 1.0
    return scene.coord.astype(np.float32), colour, scene.instance, scene.instance_class


def _sweep(azimuth_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """A 64-beam sweep of one street: (N, 3) points and (N, 3) features (remission, height, range)."""
    sweep = lidar_sweep(generate_street(3, length=40.0), 10.0, np.random.default_rng(3), azimuth_steps=azimuth_steps)
    rng_m = np.linalg.norm(sweep.points, axis=1, keepdims=True)
    return sweep.points, np.concatenate([sweep.remission[:, None], sweep.points[:, 2:3] / 3.0, rng_m / 50.0], 1)


def full_sweep() -> Cloud:
    """The sweep at the sensor's full 2048 azimuth steps: 127,240 points, 35,814 voxels at 10 cm
    (above the 32,766 that Inductor's sort lowering once bounded AOTInductor packages to)."""
    return _cloud("full sweep", *_sweep(2048))


def _cloud(name: str, points: np.ndarray, feats: np.ndarray, dim: int = 3) -> Cloud:
    """(N, >= dim) points, keeping the first ``dim`` axes, and (N, C) features as float32 tensors."""
    return Cloud(name, torch.from_numpy(np.ascontiguousarray(points[:, :dim])), torch.from_numpy(feats.astype(np.float32)))


def make_clouds(dim: int = 3) -> list[Cloud]:
    """A room, a LiDAR sweep and a single object; D=2 keeps (x, y) (a top view, as an image)."""
    coord, colour, instance, instance_class = _room(7, 9000)
    furniture = np.nonzero(instance_class >= 3)[0]                      # not wall / floor / ceiling
    counts = np.bincount(instance, minlength=len(instance_class))[furniture]
    obj = instance == furniture[np.argmax(counts)]
    sweep_points, sweep_feats = _sweep(320)
    clouds = [("room", coord, colour), ("sweep", sweep_points, sweep_feats), ("object", coord[obj], colour[obj])]
    return [_cloud(name, p, f, dim) for name, p, f in clouds]


def calibrated(model: nn.Module, voxel_size: float, cloud: Cloud) -> PointsToLogits:
    """Wrap ``model`` and set its BatchNorm running statistics to those of one pass over ``cloud``."""
    torch.manual_seed(0)
    module = PointsToLogits(model, voxel_size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.momentum = None                                          # cumulative average: this pass
    module.train()
    with torch.no_grad():
        module(cloud.points, cloud.feats)
    return module.eval()


def eager_logits(module: PointsToLogits, cloud: Cloud) -> torch.Tensor:
    with torch.no_grad():
        return module(cloud.points, cloud.feats)


def assert_logits_match(out: np.ndarray | torch.Tensor, ref: torch.Tensor, who: str) -> float:
    """max |out - ref| <= 1e-4 and the same argmax on >= 99.99 % of points; returns the max diff."""
    out = torch.as_tensor(np.asarray(out))
    assert out.shape == ref.shape, f"{who}: shape {tuple(out.shape)}, eager {tuple(ref.shape)}"
    diff = float((out - ref).abs().max())
    agree = float((out.argmax(1) == ref.argmax(1)).double().mean())
    assert diff <= 1e-4, f"{who}: max abs diff {diff:.3g} > 1e-4"
    assert agree >= 0.9999, f"{who}: argmax agrees on {agree:.5%} of points"
    return diff

