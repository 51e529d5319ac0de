"""Experiment configuration: YAML → per-section frozen dataclasses, checked at load.

A config file is a mapping with the sections of :class:`Config`::

    _base_: ../base.yaml          # optional; a path (or list of paths) relative to this file
    data:  {name: S3DIS, kwargs: {root: data/s3dis}, batch_size: 4,
            train: {split: train, transforms: [{_preset_: ../presets/indoor_augmentation.yaml},
                                               {name: CropPoints, max_points: 400000}]}}
    model: {name: MinkUNet14A, in_channels: 3, num_classes: 13, D: 3}   # passed to build_model
    method: {name: Supervised}                                          # passed to METHODS.build
    train: {epochs: 100, lr: 0.01}
    eval:  {period: 5}
    active: {rounds: 5, total_budget: 0.0007, strategy: hpal}          # optional: active-learning rounds
    seed: 0

Bases are merged first (mappings merge key by key, everything else is replaced), then the file,
then command-line overrides ``train.epochs=3 data.budget=work/budget``, each parsed by the type of
the field it sets. Unknown keys and wrongly typed values raise :class:`ConfigError` naming the
source and the field, e.g. ``configs/x.yaml: train.lrr unknown; known: amp, betas, …``; the source
is the file that set the key (a ``_base_`` file, or ``command line``), for missing keys the file loaded.

Presets reuse a value without copying it, lists included (which a ``_base_`` cannot merge): a
mapping ``{_preset_: <path relative to this file>}`` is replaced by the content of that YAML file;
as an item of a list whose preset is a list, the preset's items are spliced in its place; keys
beside ``_preset_`` are merged over a mapping preset. Presets may reference presets.

``model``, ``method`` and the ``kwargs`` of ``data`` are free-form mappings: the callee checks
them (``build_model`` / the registries name unknown keys; :mod:`pcseg.engine.build` turns those
into :class:`ConfigKeyError` naming the dotted key). After loading everything is read-only:
mappings are ``MappingProxyType`` and lists are tuples; :func:`thaw` gives plain copies.

:func:`check_resume_config` compares a run's saved ``config.yaml`` (:func:`save_config`) with the
config it resumes with; :func:`work_dir_of` picks a run's work directory.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union

import yaml

from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError
from pcseg.utils.yaml_io import load_yaml_file

__all__ = ["Config", "ConfigError", "ConfigKeyError", "DataConfig", "SplitConfig", "TrainConfig", "EvalConfig",
           "ActiveConfig", "PRESET_KEY", "load_config", "config_from_dict", "config_to_dict", "thaw", "config_diff",
           "check_resume_config", "save_config", "default_work_dir", "work_dir_of"]

PRESET_KEY = "_preset_"


class ConfigError(InputError):
    """A config file or override that does not fit the schema; the message names source and field."""


class ConfigKeyError(ConfigError):
    """A value of a loaded config found wrong while building from it; the message starts with the dotted key.

    The message does not name the config file (the objects built from a :class:`Config` do not know
    it); the tools' guard (:func:`pcseg.engine.cli.tool_errors`) prefixes it.
    """


@dataclass(frozen=True)
class SplitConfig:
    """One split of the dataset: its name, the transforms applied to each sample and its own dataset arguments."""

    split: str
    transforms: tuple[Mapping[str, Any], ...] = ()  # [{name: RandomRotate, ...}, ...] for build_transforms
    # this split's dataset arguments on top of data.kwargs, e.g. SemanticKITTI's {sequences: [00]}
    kwargs: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class DataConfig:
    """Which registered dataset to read and how to batch it."""

    name: str                                   # key of pcseg.data.DATASETS
    kwargs: Mapping[str, Any] = field(default_factory=lambda: freeze({}))  # dataset arguments (root, voxel_size, …)
    train: SplitConfig = SplitConfig("train")
    val: SplitConfig = SplitConfig("val")
    budget: Optional[str] = None                # label-budget directory (pcseg.data.load_budget) for train
    batch_size: int = 2                         # per process
    val_batch_size: int = 1                     # per process
    num_workers: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: optimiser, LR schedule (stepped per iteration), precision, logging periods."""

    epochs: int = 100
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9                       # sgd
    nesterov: bool = True                       # sgd
    betas: tuple[float, float] = (0.9, 0.999)   # adamw
    weight_decay: float = 1e-4
    scheduler: Literal["poly", "cosine", "constant"] = "poly"
    poly_power: float = 0.9
    min_lr_ratio: float = 0.0                   # cosine: final lr / base lr
    warmup_iters: int = 0
    warmup_ratio: float = 0.1                   # lr factor at the first warmup iteration
    grad_clip: Optional[float] = None           # max global L2 norm of the gradients
    amp: Literal["none", "bf16", "fp16"] = "none"  # fp16 only on cuda (with a GradScaler)
    log_period: int = 10                        # iterations between log records
    checkpoint_period: int = 0                  # iterations between mid-epoch checkpoints; 0 = epoch ends only
    hooks: tuple[Mapping[str, Any], ...] = ()   # [{name: StepTimer}, {name: Profiler, ...}]: pcseg.engine.hooks.HOOKS


@dataclass(frozen=True)
class EvalConfig:
    """Validation during training."""

    period: int = 1                             # epochs between evaluations; 0 = never


@dataclass(frozen=True)
class ActiveConfig:
    """An active-learning protocol (:mod:`pcseg.methods.hpal.rounds`): train, select, label, repeat.

    Round 0 labels ``initial_fraction`` of the final budget at random; each later round adds an equal
    share chosen by ``strategy`` until ``total_budget`` (a fraction of all raw training points) is
    labelled after round ``rounds - 1``. ``selection``: the strategy's settings (HPAL: grids, weights,
    radius, max_cosine, candidate_factor), checked by the method.
    """

    rounds: int
    total_budget: float
    initial_fraction: float = 0.2
    strategy: str = "hpal"
    warm_start: bool = False                    # rounds k > 0 start from round k-1's model_last.pth
    selection: Mapping[str, Any] = field(default_factory=lambda: freeze({}))


@dataclass(frozen=True)
class Config:
    """A whole experiment. ``work_dir`` None lets the tools pick ``work_dirs/<config name>``."""

    data: DataConfig
    model: Mapping[str, Any]
    method: Mapping[str, Any] = field(default_factory=lambda: freeze({"name": "Supervised"}))
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    active: Optional[ActiveConfig] = None       # only for active learning (pcseg-active-learn)
    work_dir: Optional[str] = None
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    deterministic: bool = False


# ---------------------------------------------------------------------------------------------
# type checking of plain values against dataclass field types


@dataclass(frozen=True)
class _Sources:
    """Which file set each dotted key (``origins``); ``default`` for the others.

    default None: messages start with the dotted key and are :class:`ConfigKeyError` (the caller does
    not know the file; the tools' guard names it).
    """

    default: Optional[str]
    origins: Mapping[str, str] = field(default_factory=dict)

    def at(self, where: str) -> Optional[str]:
        """The file of ``where`` or of its closest enclosing key (``a.b[2]`` → ``a.b`` → ``a``)."""
        key = where
        while key:
            if key in self.origins:
                return self.origins[key]
            key = key[:key.rindex("[")] if key.endswith("]") else key.rpartition(".")[0]
        return self.default

    def error(self, where: str, detail: str, missing: bool = False) -> ConfigError:
        """``<file of where>: <where><detail>``; ``missing``: a key no file set, named against ``default``."""
        source = self.default if missing else self.at(where)
        return ConfigKeyError(f"{where}{detail}") if source is None else ConfigError(f"{source}: {where}{detail}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, source: _Sources) -> Any:
    """Check ``value`` (plain YAML data) against ``tp`` and return it frozen and converted.

    ints and numeric strings (``1e-3``) are accepted for float fields, lists for tuple fields.
    Raises ConfigError.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail() -> ConfigError:
        return source.error(where, f": expected {_type_name(tp)}, got {type(value).__name__} {value!r}")

    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise fail()
        return _build_dataclass(tp, value, where, source)
    if origin is Literal:
        if value not in args:
            raise fail()
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if sections == [a for a in args if a is not type(None)] and len(sections) == 1 and isinstance(value, Mapping):
            return _convert(value, sections[0], where, source)  # an optional section: its own messages
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where, source)
            except ConfigError:
                pass
        raise fail()
    if tp is Any:
        return freeze(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads ``1e-3`` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise fail()
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise source.error(where, f": expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (Mapping, dict, typing.get_origin(Mapping[str, Any])):
        if not isinstance(value, Mapping):
            raise fail()
        return freeze(value)
    raise TypeError(f"config schema: unsupported field type {tp!r} at {where}")


def _build_dataclass(cls: type, raw: Mapping[str, Any], where: str, source: _Sources) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = [k for k in raw if k not in fields]
    if unknown:
        raise source.error(prefix + unknown[0], f" unknown; known: {', '.join(sorted(fields))}")
    missing = [name for name, f in fields.items() if name not in raw
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise source.error(prefix + missing[0], " missing (required)", missing=True)
    values = {}
    for key, value in raw.items():
        default = fields[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            value = _merge(thaw(default), value)  # a partly given sub-section keeps its defaults
        values[key] = _convert(value, hints[key], prefix + key, source)
    return cls(**values)


def freeze(value: Any) -> Any:
    """Recursively make plain YAML data read-only: mappings → MappingProxyType, lists → tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts and lists (fresh copies), e.g. for ``build_model``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: thaw(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# files, bases, overrides


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _key_origins(raw: Mapping[str, Any], source: str, prefix: str = "") -> dict[str, str]:
    """Dotted key → ``source`` for every key of ``raw``, nested mappings included."""
    out = {}
    for key, value in raw.items():
        out[prefix + key] = source
        if isinstance(value, Mapping):
            out.update(_key_origins(value, source, f"{prefix}{key}."))
    return out


def _present(raw: Mapping[str, Any], dotted: str) -> bool:
    """Whether the dotted key exists in ``raw`` (through nested mappings)."""
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _preset(ref: Mapping[str, Any], shown: str, where: str, chain: tuple[Path, ...]) -> Any:
    """The content of the ``{_preset_: file, …}`` mapping ``ref`` found at ``where`` in the file ``shown``."""
    target = ref[PRESET_KEY]
    here = f"{shown}: {where + '.' if where else ''}{PRESET_KEY}"
    if not isinstance(target, str):
        raise ConfigError(f"{here}: expected a YAML file path relative to this file, got "
                          f"{type(target).__name__} {target!r}")
    path = (chain[-1].parent / target).resolve()
    if path in chain:
        raise ConfigError(f"{here}: preset cycle: {' -> '.join(str(p) for p in chain + (path,))}")
    if not path.is_file():
        raise ConfigError(f"{here}: file {path} not found")
    preset_shown = os.path.normpath(os.path.join(os.path.dirname(shown), target))
    content = _resolve_presets(load_yaml_file(path), preset_shown, "", chain + (path,))
    rest = {k: v for k, v in ref.items() if k != PRESET_KEY}
    if not rest:
        return content
    if not isinstance(content, dict):
        raise ConfigError(f"{here}: keys beside it ({', '.join(rest)}) are merged over a mapping preset, but "
                          f"{preset_shown} holds a {type(content).__name__}")
    return _merge(content, _resolve_presets(rest, shown, where, chain))


def _resolve_presets(value: Any, shown: str, where: str, chain: tuple[Path, ...]) -> Any:
    """``value`` (read from the file ``chain[-1]``, shown as ``shown``) with its presets expanded.

    A list item whose preset is a list is replaced by the preset's items.
    """
    if isinstance(value, dict):
        if PRESET_KEY in value:
            return _preset(value, shown, where, chain)
        return {k: _resolve_presets(v, shown, f"{where}.{k}" if where else str(k), chain) for k, v in value.items()}
    if isinstance(value, list):
        out: list[Any] = []
        for i, item in enumerate(value):
            expanded = _resolve_presets(item, shown, f"{where}[{i}]", chain)
            if isinstance(item, dict) and PRESET_KEY in item and isinstance(expanded, list):
                out.extend(expanded)
            else:
                out.append(expanded)
        return out
    return value


def _read_yaml(path: Path, shown: str, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], dict[str, str]]:
    """Read ``path`` (named ``shown`` in messages) with its presets expanded and its ``_base_`` files
    merged underneath; returns the data and which file set each dotted key."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(str(p) for p in chain + (path,))}")
    if not path.is_file():
        raise ConfigError(f"{chain[-1] if chain else 'config'}: file {path} not found")
    raw = load_yaml_file(path) or {}  # duplicate keys refused, BOM stripped
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: expected a mapping at the top level, got {type(raw).__name__}")
    bases = raw.pop("_base_", [])
    raw = _resolve_presets(raw, shown, "", (path,))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        data, their = _read_yaml(path.parent / base, os.path.normpath(os.path.join(os.path.dirname(shown), base)),
                                 chain + (path,))
        merged = _merge(merged, data)
        origins.update(their)
    merged = _merge(merged, raw)
    origins.update(_key_origins(raw, shown))
    return merged, {key: source for key, source in origins.items() if _present(merged, key)}


def _field_type(cls: type, keys: Sequence[str], source: str) -> Any:
    """Type of the field at the dotted path ``keys`` (Any inside free-form mappings)."""
    tp: Any = cls
    for i, key in enumerate(keys):
        if typing.get_origin(tp) in (Union, types.UnionType):  # an optional section (``active``)
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else tp
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if key not in hints:
                where = ".".join(keys[: i + 1])
                raise ConfigError(f"{source}: {where} unknown; known: {', '.join(sorted(hints))}")
            tp = hints[key]
        else:
            return Any
    return tp


def _parse_override_value(text: str, tp: Any) -> Any:
    """Parse the right-hand side of ``key=value`` for a field of type ``tp``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        if text.lower() in ("null", "none", "~"):
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else Any
    if tp is str:
        return text
    if typing.get_origin(tp) is Literal and text in typing.get_args(tp):
        return text
    return yaml.safe_load(text)


def _override(item: str, schema: type = Config) -> dict[str, Any]:
    """``section.key=value`` as the nested mapping it merges into the config data (like a YAML file)."""
    if "=" not in item:
        raise ConfigError(f"command line: override {item!r} must look like section.key=value")
    key, text = item.split("=", 1)
    keys = key.strip().split(".")
    tp = _field_type(schema, keys, "command line")
    value = _parse_override_value(text, tp)
    if tp is not Any:
        _convert(value, tp, key, _Sources("command line"))  # fail here, naming the command line
    update: Any = value
    for k in reversed(keys):
        update = {k: update}
    return update


def config_from_dict(raw: Mapping[str, Any], source: Optional[str] = "config", schema: type = Config, *,
                     where: str = "", origins: Optional[Mapping[str, str]] = None) -> Any:
    """Validate plain data (as read from YAML) into a :class:`Config` (or another frozen dataclass
    ``schema`` checked by the same rules, e.g. a tool's or a method's own settings).

    source: prefixes errors (None: :class:`ConfigKeyError` starting with the dotted key); where: the
    dotted key of ``raw`` inside a larger config (``active.selection``); origins: dotted key → the file
    that set it, named instead of ``source`` for that key.
    """
    sources = _Sources(source, origins or {})
    cfg = _build_dataclass(schema, raw, where, sources)
    if isinstance(cfg, Config):
        for section in ("model", "method"):  # free-form, but built by name from a registry
            if "name" not in getattr(cfg, section):
                raise sources.error(f"{section}.name", f" missing (required: the registered {section} to build)",
                                    missing=True)
    return cfg


def load_config(path: str | Path, overrides: Sequence[str] = (), schema: type = Config) -> Any:
    """Read a YAML config (with its ``_base_`` chain) and apply ``key=value`` overrides.

    ``schema`` is the dataclass to validate into (default :class:`Config`).
    Raises ConfigError naming the file that set the field (or ``command line``) and the dotted field.
    """
    raw, origins = _read_yaml(Path(path), str(path))
    for item in overrides:
        update = _override(item, schema)
        raw = _merge(raw, update)
        origins.update(_key_origins(update, "command line"))
    return config_from_dict(raw, str(path), schema, origins=origins)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-data form of ``cfg`` (YAML-dumpable; ``config_from_dict`` reads it back)."""
    return thaw(cfg)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML at ``path`` (the :func:`config_to_dict` form, key order kept), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")


_ABSENT = "<absent>"


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two plain configs (:func:`config_to_dict` form).

    Mappings are compared key by key (also the free-form ``model``, ``method``, ``data.kwargs``);
    a key present on one side only shows ``"<absent>"`` on the other. Returns key -> (old, new).
    """
    changed: dict[str, tuple[Any, Any]] = {}
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed.update(config_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            changed[f"{prefix}{key}"] = (a, b)
    return changed


def check_resume_config(saved: str | Path, cfg: Config, allowed: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """Compare the ``config.yaml`` a run saved with the config ``cfg`` it is resumed with.

    allowed: dotted keys (or section prefixes such as ``train``) that may change. Returns the
    changed keys (all allowed) -> (old, new). Raises ConfigError naming ``saved`` and listing every
    change that is not allowed, with the ``--allow-changed`` value that would accept them.
    """
    saved = Path(saved)
    old = config_to_dict(config_from_dict(load_yaml_file(saved), str(saved)))  # defaults filled like cfg's
    changed = config_diff(old, config_to_dict(cfg))
    refused = [k for k in changed if not any(k == a or k.startswith(f"{a}.") for a in allowed)]
    if refused:
        listing = "; ".join(f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}" for k in refused)
        raise ConfigError(f"{saved}: --resume with a changed config ({listing}); resume with the saved config, "
                          f"or pass --allow-changed {','.join(refused)} to accept the change")
    return changed


def default_work_dir(config: str | Path) -> Path:
    """``work_dirs/<path under configs/ without .yaml>``, or ``work_dirs/<file stem>`` elsewhere."""
    parts = Path(config).with_suffix("").parts
    if "configs" in parts:
        return Path("work_dirs", *parts[parts.index("configs") + 1:])
    return Path("work_dirs", parts[-1])


def work_dir_of(config: str | Path, cfg: Config, given: Optional[str | Path] = None) -> Path:
    """A run's work directory: ``given`` (``--work-dir``), else ``cfg.work_dir``, else :func:`default_work_dir`."""
    return Path(given or cfg.work_dir or default_work_dir(config))
