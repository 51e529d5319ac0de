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
    with pytest.raises(ConfigError, match=r"x.yaml: trian unknown; known: active, data, deterministic, device, eval"):
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


def _preset_tree(tmp_path):
    """configs/presets/{aug,colour,model}.yaml (aug holds two entries and splices colour's one) + a child dir."""
    presets = tmp_path / "configs" / "presets"
    presets.mkdir(parents=True)
    (tmp_path / "configs" / "s3dis").mkdir()
    (presets / "colour.yaml").write_text("- {name: NormalizeColor}\n")
    (presets / "aug.yaml").write_text("- {name: RandomFlip, p: 0.5}\n- {_preset_: colour.yaml}\n")
    (presets / "model.yaml").write_text("{name: MinkUNet14A, in_channels: 3, num_classes: 13}\n")
    return presets


def test_presets_splice_lists_replace_values_and_merge_mappings(tmp_path):
    _preset_tree(tmp_path)
    child = _write(tmp_path / "configs" / "s3dis" / "run.yaml", {
        "data": {"name": "TwoViews",
                 "kwargs": {"view_transforms": {"_preset_": "../presets/aug.yaml"}},
                 "train": {"split": "train", "transforms": [{"name": "Jitter"}, {"_preset_": "../presets/aug.yaml"},
                                                            {"name": "CropPoints", "max_points": 10}]}},
        "model": {"_preset_": "../presets/model.yaml", "num_classes": 20}})
    cfg = load_config(child)
    flip, colour = {"name": "RandomFlip", "p": 0.5}, {"name": "NormalizeColor"}
    crop = {"name": "CropPoints", "max_points": 10}
    assert thaw(cfg.data.train.transforms) == [{"name": "Jitter"}, flip, colour, crop]
    assert thaw(cfg.data.kwargs["view_transforms"]) == [flip, colour]
    assert thaw(cfg.model) == {"name": "MinkUNet14A", "in_channels": 3, "num_classes": 20}


def test_preset_mistakes_name_the_referencing_file_and_key(tmp_path):
    presets = _preset_tree(tmp_path)
    child = tmp_path / "configs" / "s3dis" / "run.yaml"
    data = {"name": "S3DIS", "train": {"split": "train", "transforms": [{"_preset_": "../presets/none.yaml"}]}}
    _write(child, {**BASE, "data": data})
    with pytest.raises(ConfigError, match=rf"^{child}: data.train.transforms\[0\]._preset_: file "
                                          rf"{presets / 'none.yaml'} not found$"):
        load_config(child)
    _write(child, {**BASE, "model": {"_preset_": "../presets/aug.yaml", "num_classes": 20}})
    with pytest.raises(ConfigError, match=r"run.yaml: model._preset_: keys beside it \(num_classes\) are merged over "
                                          r"a mapping preset, but .*aug.yaml holds a list"):
        load_config(child)
    (presets / "colour.yaml").write_text("- {_preset_: aug.yaml}\n")
    data["train"]["transforms"] = [{"_preset_": "../presets/aug.yaml"}]
    _write(child, {**BASE, "data": data})
    with pytest.raises(ConfigError, match=r"colour.yaml: \[0\]._preset_: preset cycle: \S*run.yaml -> \S*aug.yaml -> "
                                          r"\S*colour.yaml -> \S*aug.yaml$"):
        load_config(child)
    _write(child, {**BASE, "model": {"_preset_": 3}})
    with pytest.raises(ConfigError, match=r"run.yaml: model._preset_: expected a YAML file path relative to this file, "
                                          r"got int 3"):
        load_config(child)


def test_mistakes_are_reported_against_the_file_that_made_them(tmp_path):
    (tmp_path / "configs" / "s3dis").mkdir(parents=True)
    base = tmp_path / "configs" / "base.yaml"
    child = tmp_path / "configs" / "s3dis" / "run.yaml"
    _write(child, {"_base_": "../base.yaml", "train": {"epochs": 3}})
    _write(base, {**BASE, "train": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=rf"^{base}: train.lrr unknown; known: amp,"):  # today: against the child
        load_config(child)
    _write(base, {**BASE, "data": {**BASE["data"], "batch_size": "four"}})
    with pytest.raises(ConfigError, match=rf"^{base}: data.batch_size: expected int, got str 'four'$"):
        load_config(child)
    _write(child, {"_base_": "../base.yaml", "data": {"batch_size": 2}})  # the child's value replaces the bad one
    assert load_config(child).data.batch_size == 2
    _write(child, {"_base_": "../base.yaml", "data": {"batch_size": 2, "budgett": "b"}})
    with pytest.raises(ConfigError, match=rf"^{child}: data.budgett unknown"):
        load_config(child)
    with pytest.raises(ConfigError, match=r"^command line: data.batch_size: expected int, got str 'x'$"):
        load_config(child, ["data.batch_size=x"])
    _write(child, {"_base_": "../base.yaml", "data": {"batch_size": 2}, "active": {"rounds": 2}})
    with pytest.raises(ConfigError, match=rf"^{child}: active.total_budget missing \(required\)$"):
        load_config(child)


def test_active_section_overrides_are_typed(tmp_path):
    path = _write(tmp_path / "x.yaml", {**BASE, "active": {"rounds": 5, "total_budget": 0.0007}})
    cfg = load_config(path, ["active.rounds=2", "active.total_budget=2e-2", "active.selection.radius=0.5"])
    assert (cfg.active.rounds, cfg.active.total_budget, cfg.active.initial_fraction) == (2, 0.02, 0.2)
    assert cfg.active.strategy == "hpal" and cfg.active.warm_start is False
    assert thaw(cfg.active.selection) == {"radius": 0.5}
    with pytest.raises(ConfigError, match=r"^command line: active.roundz unknown; known: initial_fraction, rounds, "
                                          r"selection, strategy, total_budget, warm_start$"):
        load_config(path, ["active.roundz=2"])
    with pytest.raises(ConfigError, match=r"^command line: active.rounds: expected int, got float 2.5$"):
        load_config(path, ["active.rounds=2.5"])
    assert load_config(_write(tmp_path / "y.yaml", BASE)).active is None
