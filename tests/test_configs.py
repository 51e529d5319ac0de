"""Every YAML under configs/ loads, names a known dataset, transforms, method and model, and builds its model.

Nothing here reads data: the dataset arguments are checked against the builder's signature only.
"""
import inspect
import re
import runpy
import shlex
from pathlib import Path

import pytest

from pcseg.data.datasets import DATASETS
from pcseg.data.transforms import build_transforms
from pcseg.engine.config import load_config, thaw
from pcseg.methods import build_method
from pcseg.models import build_model

REPO = Path(__file__).resolve().parents[1]
# configs/ovs/ holds 3D-OVS field-fitting settings (pcseg.methods.ovs.pipeline.OVSConfig), not training
# configs; tests/tools/test_ovs_cli.py loads those.
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.relative_to(REPO / "configs").parts[0] != "ovs")
MAKE_BUDGET = re.compile(r"^#\s*(python tools/make_budget\.py .*)$", re.MULTILINE)


def test_there_are_configs():
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_config_loads_and_builds(path):
    cfg = load_config(path)
    model = build_model(thaw(cfg.model))
    assert sum(p.numel() for p in model.parameters()) > 0
    builder = DATASETS[cfg.data.name]
    for split in (cfg.data.train, cfg.data.val):
        inspect.signature(builder).bind(**thaw(cfg.data.kwargs), split=split.split, transforms=(), budget=None, seed=0)
        if split.transforms:
            build_transforms(thaw(split.transforms))
    build_method(thaw(cfg.method))


@pytest.mark.parametrize("path", [p for p in CONFIGS if MAKE_BUDGET.search(p.read_text())],
                         ids=lambda p: p.relative_to(REPO / "configs").as_posix())
def test_budget_command_in_the_comment_writes_what_the_config_reads(path):
    """The ``make_budget.py`` line a sparse config shows names this file and the settings its path encodes."""
    commands = MAKE_BUDGET.findall(path.read_text())
    assert len(commands) == 1, f"{path}: expected one '# python tools/make_budget.py ...' comment line"
    parse_args = runpy.run_path(str(REPO / "tools" / "make_budget.py"))["parse_args"]
    args = parse_args(shlex.split(commands[0])[2:])
    assert (REPO / args.config).resolve() == path.resolve() and args.out is None
    assert Path(load_config(path).data.budget).name == f"{args.kind}_{args.amount}_seed{args.seed}"
