"""Fixtures of the deployment tests: synthetic clouds and exported networks built once per session."""
from __future__ import annotations

from typing import Callable

import pytest

from deploy_helpers import Cloud, make_clouds
from pcseg.deploy import PointsToLogits, export_program


@pytest.fixture(scope="session")
def clouds3d() -> list[Cloud]:
    return make_clouds(3)


@pytest.fixture(scope="session")
def clouds2d() -> list[Cloud]:
    return make_clouds(2)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> Callable:
    """``get(key, build, conv="pairs")``: (module, program, directory) of an exported network, built
    once per session; ``conv``: the traced form of its convolutions."""
    cache: dict[str, tuple] = {}

    def get(key: str, build: Callable[[], PointsToLogits], conv: str = "pairs"):
        if key not in cache:
            module = build()
            cache[key] = (module, export_program(module, conv=conv), tmp_path_factory.mktemp(key))
        return cache[key]

    return get
