import dataclasses

import pytest
import yaml

from pcseg.engine.config import ConfigError, config_to_dict, load_config, thaw

BASE = {
    "data": {"name": "S3DIS", "kwargs": {"root": "data/s3dis"}, "batch_size": 4},
    "model": {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 13},
    "train": {"epochs": 100, "lr": 0.01},
}


def _write(path, obj):
    path.write_text(yaml.safe_dump(obj))
    return path


def test_unknown_key_names_file_field_and_known_keys(tmp_path):
    path = _write(tmp_path / "x.yaml", {**BASE, "train": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: train.lrr unknown; known: amp, betas, checkpoint_period, epochs,")
    with pytest.raises(ConfigError, match=r"x.yaml: trian unknown; known: data, deterministic, device, eval"):
        load_config(_write(tmp_path / "x.yaml", {**BASE, "trian": {}}))
    with pytest.raises(ConfigError, match=r"data.train.splitt unknown; known: kwargs, split, transforms"):
        load_config(_write(tmp_path / "x.yaml", {**BASE, "data": {"name": "S3DIS", "train": {"splitt": "a"}}}))


def test_wrong_types_and_missing_sections(tmp_path):
    with pytest.raises(ConfigError, match=r"train.epochs: expected int, got str 'many'"):
        load_config(_write(tmp_path / "x.yaml", {**BASE, "train": {"epochs": "many"}}))
    with pytest.raises(ConfigError, match=r"train.optimizer: expected 'sgd' \| 'adamw', got str 'adam'"):
        load_config(_write(tmp_path / "x.yaml", {**BASE, "train": {"optimizer": "adam"}}))
    with pytest.raises(ConfigError, match=r"x.yaml: model missing \(required\)"):
        load_config(_write(tmp_path / "x.yaml", {"data": BASE["data"]}))


def test_base_inheritance_merges_mappings(tmp_path):
    (tmp_path / "configs" / "s3dis").mkdir(parents=True)
    _write(tmp_path / "configs" / "base.yaml", BASE)
    child = _write(tmp_path / "configs" / "s3dis" / "run.yaml",
                   {"_base_": "../base.yaml", "train": {"epochs": 3}, "data": {"kwargs": {"voxel_size": 0.05}}})
    cfg = load_config(child)
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01  # merged key by key
    assert thaw(cfg.data.kwargs) == {"root": "data/s3dis", "voxel_size": 0.05}
    assert cfg.data.batch_size == 4 and cfg.data.train.split == "train"


def test_overrides_are_typed_by_the_field(tmp_path):
    path = _write(tmp_path / "x.yaml", BASE)
    cfg = load_config(path, ["train.epochs=3", "train.lr=1e-3", "data.budget=work/0.1", "train.grad_clip=10",
                             "train.nesterov=false", "model.num_classes=20", "seed=7", "train.optimizer=adamw",
                             "data.train.split=trainval", "train.betas=[0.8, 0.9]"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.data.budget == "work/0.1" and cfg.train.grad_clip == 10.0 and cfg.train.nesterov is False
    assert cfg.model["num_classes"] == 20 and cfg.seed == 7 and cfg.train.optimizer == "adamw"
    assert cfg.data.train.split == "trainval" and cfg.train.betas == (0.8, 0.9)
    assert load_config(path, ["train.grad_clip=null"]).train.grad_clip is None
    with pytest.raises(ConfigError, match=r"command line: train.lrr unknown; known: amp,"):
        load_config(path, ["train.lrr=3"])
    with pytest.raises(ConfigError, match=r"command line: train.epochs: expected int, got float 2.5"):
        load_config(path, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match=r"must look like section.key=value"):
        load_config(path, ["train.epochs"])


def test_config_is_read_only_and_round_trips(tmp_path):
    cfg = load_config(_write(tmp_path / "x.yaml", BASE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0
    with pytest.raises(TypeError):
        cfg.model["name"] = "other"
    again = load_config(_write(tmp_path / "y.yaml", config_to_dict(cfg)))
    assert again == cfg
