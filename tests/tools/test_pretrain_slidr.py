"""tools/pretrain_slidr.py on two tiny unlabelled KITTI frames, then tools/train.py with model.init_from."""
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pcseg.data.synthetic import make_semantickitti
from pcseg.engine.build import build_trainer, setup_runtime
from pcseg.engine.checkpoint import load_checkpoint
from pcseg.engine.config import ConfigError, config_from_dict
from pcseg.methods import build_method

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
MODEL = {"name": "Res16UNet14A", "in_channels": 1, "num_classes": 19, "D": 3}


def _configs(tmp: Path) -> tuple[dict, dict]:
    """(pre-training, fine-tuning) configs: pre-training on two frames held as an unlabelled KITTI drive
    holds them (``drive/sequences/25/``: velodyne/, image_2/, calib.txt, nothing else), fine-tuning on
    the same two frames labelled as SemanticKITTI sequence 00."""
    make_semantickitti(tmp / "kitti", num_frames=2, seed=0, sequences=("00",), azimuth_steps=256, image_scale=0.15)
    drive = tmp / "drive" / "sequences" / "25"
    shutil.copytree(tmp / "kitti" / "sequences" / "00", drive, ignore=shutil.ignore_patterns("labels", "poses.txt",
                                                                                             "times.txt"))
    calib = (drive / "calib.txt").read_text()  # rewritten in the KITTI tracking form
    calib = calib.replace("Tr:", "R_rect 1 0 0 0 1 0 0 0 1\nTr_velo_cam") + "Tr_imu_velo 1 0 0 0 0 1 0 0 0 0 1 0\n"
    (drive / "calib.txt").write_text(calib)
    data = {"kwargs": {"root": str(tmp / "kitti"), "voxel_size": 0.3},
            "train": {"split": "train", "transforms": [{"name": "RandomRotateZ"}], "kwargs": {"sequences": ["00"]}},
            "val": {"split": "train", "kwargs": {"sequences": ["00"]}}, "batch_size": 1}
    common = {"model": MODEL, "train": {"epochs": 1, "lr": 0.01, "log_period": 1}, "eval": {"period": 0}}
    unlabelled = {"split": "train", "kwargs": {"sequences": ["25"]}}
    pretrain = {**common, "data": {**data, "name": "LidarCamera", "train": {**data["train"], **unlabelled},
                                   "val": unlabelled,
                                   "kwargs": {**data["kwargs"], "root": str(tmp / "drive"),
                                              "dataset": "SemanticKITTI", "labels": False,
                                              "superpixel_cache": str(tmp / "superpixels"), "n_segments": 30}},
                "method": {"name": "SLidR", "teacher": {"name": "ResNet50"}, "projection_dim": 16, "head_lr": 0.1}}
    finetune = {**common, "data": {**data, "name": "SemanticKITTI"}, "method": {"name": "Supervised"}}
    return pretrain, finetune


def _run(tool: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_pretrain_then_init_from(tmp_path):
    pytest.importorskip("skimage")
    pretrain, finetune = _configs(tmp_path)
    (tmp_path / "pretrain.yaml").write_text(yaml.safe_dump(pretrain))
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    work = tmp_path / "pre"
    assert sorted(p.name for p in (tmp_path / "drive").rglob("*")) == sorted(
        ["sequences", "25", "calib.txt", "image_2", "velodyne", "000000.png", "000001.png", "000000.bin", "000001.bin"])
    _run("pretrain_slidr.py", "--config", str(tmp_path / "pretrain.yaml"), "--work-dir", str(work))
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["train", "train"] and all(r["loss_nce"] > 0 for r in records)
    assert len(list((tmp_path / "superpixels").glob("*.npy"))) == 2
    last = load_checkpoint(work / "model_last.pth")
    assert set(last["method"]["heads"]) == {"points.weight", "points.bias", "pixels.weight", "pixels.bias"}
    backbone = load_checkpoint(work / "backbone.pth")["model"]
    assert set(backbone) == {k for k in last["model"] if not k.startswith("head.")}
    assert all(torch.equal(v, last["model"][k]) for k, v in backbone.items())

    # the stages on disk: reused with --resume, refused without it or with other settings (nothing rewritten)
    kept = {p: p.read_bytes() for p in (work / "log.jsonl", work / "model_last.pth", work / "backbone.pth")}
    main = runpy.run_path(str(REPO / "tools" / "pretrain_slidr.py"))["main"]
    args = ["--config", str(tmp_path / "pretrain.yaml"), "--work-dir", str(work)]
    assert main([*args, "--resume"]) == work / "backbone.pth"
    with pytest.raises(SystemExit, match=r"pre: holds a started pre-training \(.*pretrain.stage.json\); pass --resume"):
        main(args)
    with pytest.raises(SystemExit, match=r"pretrain.stage.json: stage 'pretrain' finished with other settings "
                                         r"\(config.train.lr: 0.01 -> 0.02\); restore them"):
        main([*args, "--resume", "train.lr=0.02"])
    assert {p: p.read_bytes() for p in kept} == kept

    cfg = config_from_dict({**finetune, "model": {**MODEL, "init_from": str(work / "backbone.pth")}})
    trainer = build_trainer(cfg, build_method(cfg.method), setup_runtime(cfg), tmp_path / "fine")
    state = trainer.bare_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in backbone.items())

    out = _run("train.py", "--config", str(tmp_path / "finetune.yaml"), "--work-dir", str(tmp_path / "fine2"),
               f"model.init_from={work / 'backbone.pth'}")
    assert "model.init_from: loaded" in out and "2 tensors keep their fresh initialisation: head.module.weight" in out


def test_init_from_rejects_a_checkpoint_of_another_model(tmp_path):
    torch.save({"model": {"stem.0.kernel": torch.zeros(2)}}, tmp_path / "other.pth")
    _, finetune = _configs(tmp_path)
    cfg = config_from_dict({**finetune, "model": {**MODEL, "init_from": str(tmp_path / "other.pth")}})
    with pytest.raises(ConfigError, match=r"model.init_from: .*other.pth does not fit MinkUNet"):
        build_trainer(cfg, build_method(cfg.method), setup_runtime(cfg), tmp_path / "w")


def test_pretrain_tool_refuses_another_method(tmp_path):
    _, finetune = _configs(tmp_path)
    (tmp_path / "finetune.yaml").write_text(yaml.safe_dump(finetune))
    done = subprocess.run([sys.executable, str(REPO / "tools" / "pretrain_slidr.py"), "--config",
                           str(tmp_path / "finetune.yaml")], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "method.name expected 'SLidR', got 'Supervised'" in done.stderr
