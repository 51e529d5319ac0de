"""tools/ovs.py end to end on a tiny synthetic room, and every configs/ovs/*.yaml validates."""
import json
import runpy
from pathlib import Path

import pytest
from PIL import Image

from pcseg.engine.config import ConfigError, load_config
from pcseg.methods.ovs.pipeline import OVSConfig

REPO = Path(__file__).resolve().parents[2]
TOOL = runpy.run_path(str(REPO / "tools" / "ovs.py"))


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "ovs").glob("*.yaml")), ids=lambda p: p.name)
def test_ovs_configs_load(path):
    cfg = load_config(path, schema=OVSConfig)
    assert cfg.fit.iterations > 0 and cfg.queries


def test_unknown_key_names_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fit: {iteratons: 3}\n")
    with pytest.raises(ConfigError, match="bad.yaml: fit.iteratons unknown"):
        load_config(bad, schema=OVSConfig)


def test_tool_writes_label_maps_ply_and_metrics(tmp_path):
    metrics = TOOL["main"](["--config", str(REPO / "configs/ovs/synthetic_room.yaml"), "--queries", "wall,floor,chair",
                            "--out", str(tmp_path), "fit.iterations=5", "fit.batch_rays=64", "fit.num_samples=16",
                            "data.num_views=3", "data.held_out=1", "data.num_points=5000", "data.height=16",
                            "data.width=24", "field.resolution=16"])
    assert set(metrics) == {"view_miou", "point_miou"} and 0 <= metrics["view_miou"] <= 1
    assert Image.open(tmp_path / "003_labels.png").size == (24, 16)
    assert (tmp_path / "003_rgb.png").is_file() and (tmp_path / "003_gt.png").is_file()
    assert (tmp_path / "points.ply").stat().st_size > 5000 * 12
    assert json.loads((tmp_path / "metrics.json").read_text())["queries"] == ["wall", "floor", "chair"]
