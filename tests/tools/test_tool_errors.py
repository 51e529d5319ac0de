"""Every tool ends a user's mistake with one ``error: <file>: <key>: …`` line, exit status 2, no traceback."""
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pcseg.data.synthetic import generate_room, write_scannet_scene
from pcseg.engine.build import build_dataset
from pcseg.engine.cli import original_message, tool_errors
from pcseg.engine.config import load_config
from pcseg.engine.visualize import render_scenes
from pcseg.utils.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from engine.tiny import REPO, write_config  # noqa: E402

TOOLS = {name: runpy.run_path(str(REPO / "tools" / f"{name}.py"))
         for name in ("train", "test", "make_budget", "visualize")}
KEEP_TORCH_FLAGS = "deterministic=false"  # in-process runs must not switch this pytest process to deterministic


def _fails(capsys, tool, argv):
    """Run ``tool``'s main; return its stderr after checking status 2, one error line and no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool]["main"](argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and str(exit_info.value) == lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("override, expected", [
    ("model.chanels=3", "model.chanels: model 'MinkUNet14A': unknown key(s) chanels; accepted: in_channels"),
    ("model.name=MinkUNet15A", "model.name: model 'MinkUNet15A' unknown; known: LSeg, MinkUNet14A"),
    ("method={name: Supervised, weight: 1}",
     "method.weight: method 'Supervised': unknown key(s) weight; accepted: ignore_index"),
    ("data.kwargs.num_clases=3", "data.kwargs.num_clases: dataset 'ImageFolder': unknown key(s) num_clases"),
    ("data.val.kwargs.ignore=0", "data.val.kwargs.ignore: dataset 'ImageFolder': unknown key(s) ignore"),
    ("data.name=ImageFolders", "data.name: dataset 'ImageFolders' unknown; known:"),
    ("data.train.transforms=[{name: RandomFlip, px: 0.5}]",
     "data.train.transforms[0].px: transform 'RandomFlip': unknown key(s) px; accepted: p, axes"),
    ("data.train.transforms=[{name: RandomFlop}]", "data.train.transforms[0].name: transform 'RandomFlop' unknown"),
])
def test_typos_inside_free_form_sections_name_the_config_file_and_the_dotted_key(capsys, tmp_path, config, override,
                                                                                 expected):
    line = _fails(capsys, "train", ["--config", str(config), "--work-dir", str(tmp_path / "w"), override,
                                    KEEP_TORCH_FLAGS])
    assert line == f"error: {config}: {expected}" or line.startswith(f"error: {config}: {expected}")
    assert not (tmp_path / "w" / "config.yaml").exists()  # nothing written


def test_a_top_level_typo_a_section_without_name_and_a_bad_split_name(capsys, tmp_path, config):
    line = _fails(capsys, "train", ["--config", str(config), "train.lrr=0.1"])
    assert line.startswith("error: command line: train.lrr unknown; known: amp, betas")
    line = _fails(capsys, "train", ["--config", str(config), "method.weight=1"])  # a method section lacking its name
    assert line == f"error: {config}: method.name missing (required: the registered method to build)"
    line = _fails(capsys, "test", ["--config", str(config), "--checkpoint", str(tmp_path / "none.pth"),
                                   "data.val.split=vall", KEEP_TORCH_FLAGS])
    assert line == f"error: {config}: data.val.split: ImageFolderReader: split 'vall' unknown; known: train, val, test"


@pytest.mark.parametrize("override, key", [("data.kwargs.loop=0", "data.kwargs.loop"),
                                           ("data.train.kwargs.loop=0", "data.train.kwargs.loop")])
def test_a_value_the_dataset_rejects_names_the_config_file_and_key(capsys, tmp_path, config, override, key):
    line = _fails(capsys, "train", ["--config", str(config), "--work-dir", str(tmp_path / "w"), override,
                                    KEEP_TORCH_FLAGS])
    assert line == f"error: {config}: {key}: SegmentationDataset.loop: expected an int >= 1, got 0"
    assert not (tmp_path / "w" / "config.yaml").exists()


def test_a_bad_voxel_size_of_a_3d_dataset_names_the_config_file_and_key(capsys, tmp_path):
    root = tmp_path / "scannet"
    write_scannet_scene(generate_room(np.random.default_rng(0), num_points=1000), root, "scene0011_00")
    (root / "scannetv2_val.txt").write_text("scene0011_00\n", encoding="utf-8")
    config = str(REPO / "configs" / "scannet" / "sparse_0.1pct.yaml")
    line = _fails(capsys, "test", ["--config", config, "--checkpoint", str(tmp_path / "none.pth"),
                                   f"data.kwargs.root={root}", "data.kwargs.voxel_size=-0.05", KEEP_TORCH_FLAGS])
    assert line == f"error: {config}: data.kwargs.voxel_size: SegmentationDataset.voxel_size: expected a finite number > 0, got -0.05"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(capsys, tmp_path, config):
    line = _fails(capsys, "train", ["--config", str(config), "--work-dir", str(tmp_path / "w"), "device=cuda"])
    assert line.startswith(f"error: {config}: device: expected 'cpu' on this machine, got 'cuda'")


def test_checkpoint_mistakes_name_the_checkpoint(capsys, tmp_path, config):
    missing = tmp_path / "model_best.pth"
    line = _fails(capsys, "test", ["--config", str(config), "--checkpoint", str(missing), KEEP_TORCH_FLAGS])
    assert line == f"error: {missing}: expected a checkpoint file, no such file"
    other = tmp_path / "other.pth"
    torch.save({"model": {"linear.weight": torch.zeros(2, 3)}}, other)  # the weights of another network
    line = _fails(capsys, "test", ["--config", str(config), "--checkpoint", str(other), KEEP_TORCH_FLAGS])
    assert line.startswith(f"error: {other}: expected the weights of the config's MinkUNet; "
                           f"unknown keys (1): linear.weight; missing keys (")


def test_a_data_error_inside_a_loader_worker_prints_the_workers_message(capsys, tmp_path):
    config = write_config(tmp_path)
    bad = tmp_path / "data" / "train" / "labels" / "img03.png"
    labels = np.asarray(Image.open(bad)).copy()
    labels[0, 0] = 7  # a class id the 3-class dataset does not have
    Image.fromarray(labels).save(bad)
    line = _fails(capsys, "train", ["--config", str(config), "--work-dir", str(tmp_path / "w"),
                                    "data.num_workers=1", KEEP_TORCH_FLAGS])
    assert line == f"error: {bad}: labels expected in [0, 3) or 255, got [7]"


def test_make_budget_mistakes_exit_with_status_2(capsys, tmp_path, config):
    line = _fails(capsys, "make_budget", ["--config", str(config), "--kind", "points_per_scene", "--amount", "x",
                                          "--seed", "0", "--out", str(tmp_path / "b")])
    assert line == "error: --amount for --kind points_per_scene: expected an integer such as 20, got 'x'"


def test_original_message_unwraps_what_a_dataloader_re_raises():
    class Failing(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise InputError("scan.ply: field 'x': expected float32, got\nuint8 on two lines")

    loader = torch.utils.data.DataLoader(Failing(), num_workers=1)
    with pytest.raises(InputError) as caught:
        next(iter(loader))
    assert str(caught.value).startswith("Caught InputError in DataLoader worker process 0")  # torch's wrapping
    assert original_message(caught.value) == "scan.ply: field 'x': expected float32, got\nuint8 on two lines"
    assert original_message(InputError("plain")) == "plain"


def test_the_guard_lets_other_errors_through_with_their_traceback():
    with pytest.raises(ZeroDivisionError):
        with tool_errors("x.yaml"):
            1 / 0


def test_visualize_scene_mistakes_exit_with_status_2(capsys, tmp_path, config, monkeypatch):
    cfg = load_config(config, [KEEP_TORCH_FLAGS])
    predictions = tmp_path / "predictions"
    with pytest.raises(InputError, match=r"scene 'img99': expected a scene of the validation split 'val'"):
        render_scenes(cfg, predictions, ["img99"], tmp_path)
    first = build_dataset(cfg, cfg.data.val, train=False).scene_name(0)
    with pytest.raises(InputError) as err:
        render_scenes(cfg, predictions, [first], tmp_path)
    assert str(err.value) == (f"{predictions / (first + '.npy')}: expected the saved point predictions of scene "
                              f"{first!r}, no such file")
    # through the tool: the evaluation is replaced by one that saves nothing, so the rendering step fails
    monkeypatch.setitem(TOOLS["visualize"]["main"].__globals__, "evaluate_checkpoint",
                        lambda *a, **k: ({"miou": 0.0}, ()))
    monkeypatch.setitem(TOOLS["visualize"]["main"].__globals__, "format_table", lambda *a: "")
    line = _fails(capsys, "visualize", ["--config", str(config), "--checkpoint", str(tmp_path / "model_best.pth"),
                                        KEEP_TORCH_FLAGS])
    assert line == (f"error: {tmp_path / 'vis' / 'predictions' / (first + '.npy')}: expected the saved point "
                    f"predictions of scene {first!r}, no such file")
