"""pcseg.cli.export (tools/export.py): a checkpoint written by save_checkpoint, a config in the real YAML form, in-process."""
from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from deploy_helpers import assert_logits_match, eager_logits
from pcseg.deploy import PointsToLogits
from pcseg.engine.checkpoint import save_checkpoint
from pcseg.engine.config import load_config
from pcseg.models import build_model

REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
data:
  name: S3DIS
  kwargs: {{root: data/s3dis{voxel}}}
model: {{name: {model}, in_channels: 3, num_classes: 5, D: 3}}
"""


@pytest.fixture(scope="module")
def tool():
    return runpy.run_path(str(REPO / "tools" / "export.py"))


def _write(tmp_path: Path, model: str = "MinkUNet14A", voxel: str = ", voxel_size: 0.1") -> tuple[Path, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(model=model, voxel=voxel))
    torch.manual_seed(0)
    net = build_model({"name": model, "in_channels": 3, "num_classes": 5, "D": 3})
    checkpoint = tmp_path / "model_best.pth"
    save_checkpoint({"model": net.state_dict(), "epoch": 3}, checkpoint)
    return config, checkpoint


def test_pt2_from_checkpoint_equals_eager(tool, tmp_path, clouds3d, capsys):
    config, checkpoint = _write(tmp_path)
    out = tool["main"](["--config", str(config), "--checkpoint", str(checkpoint), "--format", "pt2"])
    assert out == tmp_path / "model_best.pt2" and out.is_file()
    assert "points (N, 3) float32 + feats (N, 3) float32 -> logits (N, 5)" in capsys.readouterr().out
    net = build_model({"name": "MinkUNet14A", "in_channels": 3, "num_classes": 5, "D": 3})
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    module = PointsToLogits(net, 0.1).eval()
    program = torch.export.load(str(out)).module()
    for cloud in clouds3d:
        with torch.no_grad():
            assert_logits_match(program(cloud.points, cloud.feats), eager_logits(module, cloud), cloud.name)


def test_wrong_architecture_is_one_error_line(tool, tmp_path, capsys):
    config, checkpoint = _write(tmp_path, model="MinkUNet18A")
    config.write_text(CONFIG.format(model="MinkUNet14A", voxel=""))
    with pytest.raises(SystemExit) as exit_info:
        tool["main"](["--config", str(config), "--checkpoint", str(checkpoint), "--format", "onnx"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {checkpoint}: expected the weights of the config's MinkUNet")
    assert "Traceback" not in err and not (tmp_path / "model_best.onnx").exists()


def test_voxel_size_from_config_dataset_default_or_flag(tool, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(model="MinkUNet14A", voxel=""))
    cfg = load_config(config)
    assert tool["config_voxel_size"](cfg, None) == 0.05          # pcseg.data.datasets.S3DIS's default
    assert tool["config_voxel_size"](cfg, 0.2) == 0.2
    config.write_text(CONFIG.format(model="MinkUNet14A", voxel=", voxel_size: 0.08"))
    assert tool["config_voxel_size"](load_config(config), None) == 0.08


def test_kernel_form_pt2_names_its_library_and_onnx_refuses_it(tool, tmp_path, clouds3d, capsys, cpu_kernels):
    """--traced-conv kernel: a .pt2 that runs once pcseg's kernel library is loaded (the path the tool
    prints), equal to eager; for onnx the flag is refused before anything is exported."""
    from pcseg.sparse.kernels import cpu
    config, checkpoint = _write(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        tool["main"](["--config", str(config), "--checkpoint", str(checkpoint), "--format", "onnx",
                      "--traced-conv", "kernel"])
    assert exit_info.value.code == 2
    assert "--traced-conv kernel calls pcseg's compiled kernels, which ONNX cannot express" in capsys.readouterr().err
    out = tool["main"](["--config", str(config), "--checkpoint", str(checkpoint), "--format", "pt2",
                        "--traced-conv", "kernel"])
    assert f"load {cpu.library_path()} before running it" in capsys.readouterr().out
    program = torch.export.load(str(out))
    assert any(str(n.target) == "pcseg.conv_forward.default" for n in program.graph.nodes)
    net = build_model({"name": "MinkUNet14A", "in_channels": 3, "num_classes": 5, "D": 3})
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    module = PointsToLogits(net, 0.1).eval()
    for cloud in clouds3d:
        with torch.no_grad():
            assert_logits_match(program.module()(cloud.points, cloud.feats), eager_logits(module, cloud), cloud.name)
