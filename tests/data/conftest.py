"""Synthetic datasets written once per test session in the official raw layouts.

Each fixture returns ``(root, oracle)``: the dataset folder and what the generator wrote, keyed by
scene name.
"""
from __future__ import annotations

import pytest

from pcseg.data.synthetic import make_s3dis, make_scannet, make_semantickitti


@pytest.fixture(scope="session")
def scannet_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    return root, make_scannet(root, num_scenes=2, seed=0, num_points=50_000)


@pytest.fixture(scope="session")
def s3dis_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3dis")
    return root, make_s3dis(root, num_scenes=2, seed=0, num_points=30_000, areas=(1, 5), corrupt_lines=3)


@pytest.fixture(scope="session")
def semantickitti_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantickitti")
    return root, make_semantickitti(root, num_frames=1, seed=0, sequences=("00", "08"), azimuth_steps=512,
                                    image_scale=0.25)
