"""tools/ovs.py end to end on a tiny synthetic room, and every configs/ovs/*.yaml validates in the common schema."""
import json
import runpy
from pathlib import Path

import pytest
from PIL import Image

from pcseg.engine.config import ConfigError, load_config
from pcseg.methods import build_method

REPO = Path(__file__).resolve().parents[2]
TOOL = runpy.run_path(str(REPO / "tools" / "ovs.py"))
TINY = ["train.epochs=1", "data.kwargs.steps_per_epoch=5", "data.kwargs.batch_rays=64", "method.num_samples=16",
        "data.kwargs.num_views=3", "data.kwargs.held_out=1", "data.kwargs.num_points=5000", "data.kwargs.height=16",
        "data.kwargs.width=24", "model.resolution=16", "train.log_period=1"]


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "ovs").glob("*.yaml")), ids=lambda p: p.name)
def test_ovs_configs_load_and_build_their_method(path):
    cfg = load_config(path)
    method = build_method(cfg.method)
    expected = "Supervised" if cfg.model["name"] == "LSeg" else "FeatureField"
    assert type(method).__name__ == expected and cfg.data.name in ("ImageFolder", "SyntheticRoom")


def test_unknown_key_names_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {REPO / 'configs/ovs/synthetic_room.yaml'}\ntrain: {{epochz: 3}}\n")
    with pytest.raises(ConfigError, match="bad.yaml: train.epochz unknown"):
        load_config(bad)


def test_tool_writes_label_maps_ply_metrics_and_trainer_logs(tmp_path):
    metrics = TOOL["main"](["--config", str(REPO / "configs/ovs/synthetic_room.yaml"), "--queries", "wall,floor,chair",
                            "--out", str(tmp_path), *TINY])
    assert {"view_miou", "view_2d_miou", "point_miou"} <= set(metrics)
    from miou_oracle import view_png_miou  # the label and ground-truth images written, decoded and scored in numpy
    assert metrics["view_miou"] == pytest.approx(view_png_miou(tmp_path, 3), abs=1e-12)
    assert Image.open(tmp_path / "003_labels.png").size == (24, 16)
    assert (tmp_path / "003_rgb.png").is_file() and (tmp_path / "003_gt.png").is_file()
    assert (tmp_path / "points.ply").stat().st_size > 5000 * 12
    assert json.loads((tmp_path / "metrics.json").read_text())["queries"] == ["wall", "floor", "chair"]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5] and "loss_distillation" in records[0]
    assert (tmp_path / "model_last.pth").is_file() and (tmp_path / "config.yaml").is_file()


def test_tool_errors_name_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        TOOL["main"](["--config", str(REPO / "configs/ovs/synthetic_room.yaml"), "--out", str(tmp_path), *TINY,
                      "data.batch_size=2"])
    assert done.value.code == 2
    assert "data.batch_size: expected 1 for ray batches" in capsys.readouterr().err
