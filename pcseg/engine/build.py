"""Config → objects. The only engine module that reads a :class:`~pcseg.engine.config.Config`.

The tools call :func:`setup_runtime`, build the method (``pcseg.methods.build_method``) and then
:func:`build_trainer` (training) or :func:`build_model_from_config` + :func:`build_validation`
(testing). Everything below takes plain arguments.

Mistakes in the free-form sections (``model``, ``method``, ``data.kwargs``, a split's ``kwargs``
and ``transforms``) become :class:`~pcseg.engine.config.ConfigKeyError` naming the dotted key
(:func:`config_section`), which the tools print after the config file's name.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.optim import SGD, AdamW, Optimizer

from pcseg.data.collate import collate_sparse
from pcseg.data.datasets import DATASETS  # the module whose import registers the datasets
from pcseg.data.transforms import TRANSFORMS
from pcseg.data import views as _views  # noqa: F401  (registers the TwoViews wrapper)
from pcseg.data import lidar_camera as _lidar_camera  # noqa: F401  (registers the LidarCamera wrapper)
from pcseg.models import build_model
from pcseg.utils.errors import BadArgumentError, InputError
from pcseg.utils.memory import limit_heap_fragmentation
from pcseg.utils.registry import UnknownKeyError, UnknownNameError, build_from_config

from .checkpoint import load_checkpoint
from .config import Config, ConfigKeyError, SplitConfig, TrainConfig, thaw
from .distributed import DistInfo, init_distributed, resolve_device, wrap_model
from .evaluator import Evaluator
from .hooks import HOOKS, Hook, MethodHooks
from .loader import make_loader
from .lr import WarmupLR
from .metrics import SegmentationMetrics
from .seeding import seed_all, set_deterministic
from .trainer import Trainer, Validation

__all__ = ["Runtime", "setup_runtime", "config_section", "build_dataset", "build_model_from_config", "build_optimizer",
           "build_scheduler", "build_validation", "build_hooks", "build_trainer", "evaluate_checkpoint", "init_weights",
           "load_weights"]

_RESERVED_DATA_KEYS = ("split", "transforms", "budget", "seed")


@dataclass(frozen=True)
class Runtime:
    """Process placement resolved from the config and the environment."""

    dist: DistInfo
    device: torch.device


def setup_runtime(cfg: Config) -> Runtime:
    """Join the process group (if launched by torchrun), pick the device, set determinism and seeds.

    Each rank seeds its generators with ``cfg.seed + rank``; DDP copies rank 0's initial weights.
    On glibc the heap's mmap threshold is fixed (:func:`pcseg.utils.memory.limit_heap_fragmentation`).
    """
    limit_heap_fragmentation()
    dist = init_distributed(cfg.device)
    device = resolve_device(cfg.device, dist)
    set_deterministic(cfg.deterministic)
    seed_all(cfg.seed + dist.rank)
    return Runtime(dist, device)


@contextmanager
def config_section(section: str, key_of: Optional[Callable[[str], str]] = None) -> Iterator[None]:
    """Build from config section ``section`` (``model``, ``method``, ``data``): registry errors name the key.

    An unknown name becomes ``ConfigKeyError("<section>.name: <message>")``, an unknown or missing
    keyword ``ConfigKeyError("<key_of(key)>: <message>")``, e.g. ``model.chanels: model 'MinkUNet14A':
    unknown key(s) chanels; accepted: …``. key_of: the dotted key of a keyword (default
    ``<section>.<key>``).
    """
    try:
        yield
    except UnknownNameError as err:
        raise ConfigKeyError(f"{section}.name: {err}") from None
    except UnknownKeyError as err:
        key = (key_of or (lambda k: f"{section}.{k}"))(err.keys[0]) if err.keys else section
        raise ConfigKeyError(f"{key}: {err}") from None


def _split_key(cfg: Config, split: SplitConfig) -> str:
    """``data.train`` or ``data.val``: where ``split`` sits in ``cfg`` (``data.<split name>`` for another one)."""
    return next((f"data.{k}" for k in ("train", "val") if getattr(cfg.data, k) == split), f"data.{split.split}")


def check_transforms(key: str, cfgs: Sequence[Mapping[str, Any]]) -> None:
    """Build each transform of ``cfgs`` once, so that a mistake names its place, e.g. ``data.train.transforms[1].p``.

    An unknown name or keyword, or a value the transform rejects (ValueError), raises ConfigKeyError.
    """
    for i, cfg in enumerate(cfgs):
        where = f"{key}[{i}]"
        with config_section(where):
            try:
                build_from_config("transform", TRANSFORMS, cfg)
            except ValueError as err:
                raise ConfigKeyError(f"{where}: {err}") from None


def build_dataset(cfg: Config, split: SplitConfig, *, train: bool) -> Any:
    """``DATASETS[cfg.data.name]`` for ``split``; the label budget applies to the training split only.

    The dataset gets ``data.kwargs`` updated by the split's own ``kwargs`` (e.g. ``data.val.kwargs``).
    Mistakes raise ConfigKeyError naming the key (``data.name``, ``data.kwargs.<key>``,
    ``data.train.kwargs.<key>``, ``data.train.transforms[i]…``), also for a value the dataset rejects
    (:class:`~pcseg.utils.errors.BadArgumentError`: ``data.val.split``, ``data.kwargs.voxel_size``).
    """
    where = _split_key(cfg, split)
    check_transforms(f"{where}.transforms", split.transforms)
    sources = (("data.kwargs", cfg.data.kwargs), (f"the kwargs of split '{split.split}'", split.kwargs))
    clash = [(where, k) for where, kwargs in sources for k in _RESERVED_DATA_KEYS if k in kwargs]
    if clash:
        raise ConfigKeyError(f"{clash[0][0]}: {clash[0][1]}: set by the engine (data.train / data.val, data.budget, "
                          f"seed); remove it")
    spec = {"name": cfg.data.name, **thaw(cfg.data.kwargs), **thaw(split.kwargs), "split": split.split,
            "transforms": thaw(split.transforms), "budget": cfg.data.budget if train else None, "seed": cfg.seed}
    def key_of(arg: str) -> str:
        """The config key of the dataset argument ``arg``."""
        if arg == "split":
            return f"{where}.split"
        return f"{where}.kwargs.{arg}" if arg in split.kwargs else f"data.kwargs.{arg}"

    with config_section("data", key_of):
        try:
            return DATASETS.build(spec)
        except BadArgumentError as err:
            raise ConfigKeyError(f"{key_of(err.argument)}: {err}") from None


def build_model_from_config(cfg: Config, num_classes: int, device: torch.device) -> nn.Module:
    """``build_model(cfg.model)`` on ``device``, checking ``model.num_classes`` against the dataset's.

    ``model.init_from`` is not passed to ``build_model``: :func:`build_trainer` applies it (:func:`init_weights`).
    """
    if cfg.model.get("num_classes") != num_classes:
        raise ConfigKeyError(f"model.num_classes: expected {num_classes} (classes of dataset {cfg.data.name}), "
                          f"got {cfg.model.get('num_classes')}")
    spec = thaw(cfg.model)
    spec.pop("init_from", None)
    with config_section("model"):
        return build_model(spec).to(device)


def init_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load the ``"model"`` entry of checkpoint ``path`` into ``model`` (``model.init_from``: pre-trained weights).

    Every key of the file must exist in ``model`` with the same shape; model keys the file lacks (e.g.
    the classifier of a backbone-only checkpoint) keep their fresh initialisation and are returned.
    """
    state = load_checkpoint(path)
    if "model" not in state:
        raise ConfigKeyError(f"model.init_from: {path} has no 'model' entry; keys: {', '.join(sorted(state))}")
    misfit = _misfit(model, state["model"], allow_missing=True)
    if misfit:
        raise ConfigKeyError(f"model.init_from: {path} does not fit {type(model).__name__}: {misfit}")
    return model.load_state_dict(state["model"], strict=False).missing_keys


def _misfit(model: nn.Module, weights: Mapping[str, torch.Tensor], allow_missing: bool) -> str:
    """What keeps the state dict ``weights`` from loading into ``model`` (first keys of each kind); "" if it fits."""
    own = model.state_dict()
    unexpected = [k for k in weights if k not in own]
    missing = [] if allow_missing else [k for k in own if k not in weights]
    mismatched = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in weights.items()
                  if k in own and v.shape != own[k].shape]
    return "; ".join(f"{what} ({len(keys)}): {', '.join(keys[:5])}{', …' if len(keys) > 5 else ''}"
                     for what, keys in (("unknown keys", unexpected), ("missing keys", missing),
                                        ("shape mismatches", mismatched)) if keys)


def build_optimizer(params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], cfg: TrainConfig) -> Optimizer:
    """SGD (momentum, nesterov, weight decay) or AdamW from ``train`` over parameters or parameter groups."""
    if cfg.optimizer == "sgd":
        return SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                   weight_decay=cfg.weight_decay)
    return AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, max_steps: int) -> WarmupLR:
    """The per-iteration LR schedule of ``train`` over ``max_steps`` iterations."""
    return WarmupLR(optimizer, max_steps, cfg.scheduler, warmup_steps=cfg.warmup_iters,
                    warmup_ratio=cfg.warmup_ratio, power=cfg.poly_power, min_lr_ratio=cfg.min_lr_ratio)


def build_validation(cfg: Config, runtime: Runtime) -> Validation:
    """Validation loader (disjoint shards, in order) and evaluator with the dataset's class names."""
    dataset = build_dataset(cfg, cfg.data.val, train=False)
    loader = make_loader(dataset, batch_size=cfg.data.val_batch_size, collate_fn=collate_sparse, train=False,
                         seed=cfg.seed, dist=runtime.dist, num_workers=cfg.data.num_workers)
    evaluator = Evaluator(dataset.num_classes, dataset.class_names, device=runtime.device, dist=runtime.dist)
    return Validation(loader, evaluator, cfg.eval.period)


def build_hooks(cfgs: Sequence[Mapping[str, Any]]) -> list[Hook]:
    """The plain hooks of ``train.hooks`` (:data:`~pcseg.engine.hooks.HOOKS`), in order.

    A mistake names its place: ``train.hooks[1].name: hook 'Timer' unknown; known: …``, or a
    keyword or value the hook rejects (``train.hooks[0].num_steps``).
    """
    hooks = []
    for i, cfg in enumerate(cfgs):
        where = f"train.hooks[{i}]"
        with config_section(where):
            try:
                hooks.append(HOOKS.build(thaw(cfg)))
            except ValueError as err:
                raise ConfigKeyError(f"{where}: {err}") from None
    return hooks


def build_trainer(cfg: Config, method: MethodHooks, runtime: Runtime, work_dir: str | Path) -> Trainer:
    """Everything the :class:`Trainer` needs, from ``cfg``.

    The backbone is built (with ``model.init_from``'s weights), the method gets the run seed and
    wraps it (:meth:`~pcseg.engine.hooks.MethodHooks.wrap`), and that one module is moved to the
    device, given to the optimiser through ``method.param_groups`` and to DDP when the world is > 1.
    """
    train_set = build_dataset(cfg, cfg.data.train, train=True)
    collate = getattr(train_set, "collate_fn", collate_sparse)  # e.g. pcseg.data.views.TwoViewDataset's
    loader = make_loader(train_set, batch_size=cfg.data.batch_size, collate_fn=collate, train=True,
                         seed=cfg.seed, dist=runtime.dist, num_workers=cfg.data.num_workers)
    model = build_model_from_config(cfg, train_set.num_classes, runtime.device)
    init_from = cfg.model.get("init_from")
    fresh = init_weights(model, init_from) if init_from is not None else []
    method.set_seed(cfg.seed)  # per-sample draws keyed by the joined-batch position: equal on every rank
    model = method.wrap(model).to(runtime.device)
    optimizer = build_optimizer(method.param_groups(model), cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, cfg.train.epochs * len(loader))
    validation: Optional[Validation] = build_validation(cfg, runtime) if cfg.eval.period else None
    trainer = Trainer(wrap_model(model, runtime.dist, runtime.device), method, optimizer, scheduler, loader,
                      max_epochs=cfg.train.epochs, work_dir=work_dir, device=runtime.device, validation=validation,
                      amp=cfg.train.amp, grad_clip=cfg.train.grad_clip, log_period=cfg.train.log_period,
                      checkpoint_period=cfg.train.checkpoint_period, dist=runtime.dist,
                      hooks=build_hooks(cfg.train.hooks))
    if init_from is not None:
        trainer.logger.info("model.init_from: loaded %s; %d tensors keep their fresh initialisation: %s",
                            init_from, len(fresh), ", ".join(fresh) or "none")
    return trainer


def load_weights(model: nn.Module, checkpoint: str | Path, device: torch.device) -> nn.Module:
    """Load the ``"model"`` entry of ``checkpoint`` into ``model`` (all keys, same shapes); returns ``model``.

    Raises InputError naming the file when it has no ``"model"`` entry or holds another architecture.
    """
    ckpt = load_checkpoint(checkpoint, map_location=device)
    if "model" not in ckpt:
        raise InputError(f"{checkpoint}: no 'model' entry; keys: {', '.join(sorted(ckpt))}")
    misfit = _misfit(model, ckpt["model"], allow_missing=False)
    if misfit:
        raise InputError(f"{checkpoint}: expected the weights of the config's {type(model).__name__}; {misfit}")
    model.load_state_dict(ckpt["model"])
    return model


def evaluate_checkpoint(cfg: Config, method: MethodHooks, runtime: Runtime, checkpoint: str | Path,
                        save_dir: Optional[str | Path] = None) -> tuple[SegmentationMetrics, tuple[str, ...]]:
    """Evaluate the weights in ``checkpoint`` on the validation split of ``cfg`` at point level.

    save_dir: when given, receives ``<scene>.npy`` (N,) int32 point predictions per validation scene.
    Returns the metrics and the dataset's class names.
    """
    validation = build_validation(cfg, runtime)
    evaluator = validation.evaluator
    model = build_model_from_config(cfg, evaluator.num_classes, runtime.device)
    load_weights(model, checkpoint, runtime.device)
    metrics = evaluator.evaluate(model, validation.loader, method.predict,
                                 save_dir=Path(save_dir) if save_dir is not None else None)
    return metrics, tuple(evaluator.class_names)
