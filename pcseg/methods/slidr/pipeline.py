"""SLidR's protocol as resumable stages: pre-train the 3D backbone, then export it for fine-tuning.

:func:`pretrain` writes, under the work directory:

    pretrain.stage.json   stage ``pretrain`` (:class:`pcseg.engine.stages.Stage`): the config
    config.yaml, model_last.pth, log.jsonl, …   the training run (the engine's trainer; DDP under torchrun)
    export.stage.json     stage ``export``
    backbone.pth          ``{"model": …}``: the weights of ``model_last.pth`` without the classifier
                          ``head.*`` (never trained by SLidR), the form ``model.init_from`` loads

A finished stage is reused when its settings match and refused with the differences listed when they
don't; an interrupted pre-training continues from its ``model_last.pth``. Then fine-tune with
``pcseg-train --config configs/semantickitti/slidr_finetune_1pct.yaml model.init_from=<work dir>/backbone.pth``.
"""
from __future__ import annotations

import functools
from pathlib import Path

from pcseg.engine.build import Runtime, build_trainer, config_section
from pcseg.engine.checkpoint import load_checkpoint, save_checkpoint
from pcseg.engine.config import Config, ConfigKeyError, config_to_dict, save_config
from pcseg.engine.stages import Stage
from pcseg.methods.registry import build_method
from pcseg.utils.errors import InputError

__all__ = ["BACKBONE_FILE", "CLASSIFIER_PREFIX", "export_backbone", "pretrain"]

BACKBONE_FILE = "backbone.pth"
CLASSIFIER_PREFIX = "head."
_LAST = "model_last.pth"


def export_backbone(checkpoint: Path, out: Path) -> None:
    """Write ``out`` = ``{"model": weights of checkpoint's model without head.*}`` atomically."""
    state = load_checkpoint(checkpoint)["model"]
    save_checkpoint({"model": {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}}, out)


def _train(folder: Path, cfg: Config, runtime: Runtime) -> None:
    """Stage ``pretrain``: the trainer on ``cfg`` into ``folder``, continuing a started run."""
    with config_section("method"):
        method = build_method(cfg.method)
    trainer = build_trainer(cfg, method, runtime, folder)
    if runtime.dist.is_main:
        save_config(cfg, folder / "config.yaml")
    trainer.train(resume=(folder / _LAST).is_file())


def pretrain(cfg: Config, runtime: Runtime, work_dir: Path, resume: bool = False) -> Path:
    """Pre-train ``cfg`` (method ``SLidR``) into ``work_dir`` and export the backbone; its path.

    resume: continue (or reuse) the stages in ``work_dir``; without it a started pre-training is refused.
    Every process of a torchrun launch calls this; only the main one writes stage files and exports.
    """
    if cfg.method.get("name") != "SLidR":
        raise ConfigKeyError(f"method.name expected 'SLidR', got {cfg.method.get('name')!r}")
    work_dir = Path(work_dir)
    train = Stage("pretrain", work_dir, {"config": config_to_dict(cfg)})
    if train.manifest.is_file() and not resume:
        raise InputError(f"{work_dir}: holds a started pre-training ({train.manifest}); pass --resume to continue "
                         f"it or choose another --work-dir")
    main = runtime.dist.is_main
    train.run(functools.partial(_train, cfg=cfg, runtime=runtime), write=main)
    out = work_dir / BACKBONE_FILE
    if main:
        Stage("export", work_dir, {"checkpoint": _LAST, "without": CLASSIFIER_PREFIX}).run(
            lambda folder: export_backbone(folder / _LAST, out))
    return out
