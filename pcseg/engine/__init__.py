"""The training engine: one trainer loop, evaluation, checkpoints, logging, distributed helpers.

Config-reading code lives in :mod:`pcseg.engine.build` (imported explicitly by the tools).
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, ConfigError, load_config
from .distributed import DistInfo
from .evaluator import Evaluator
from .hooks import MethodHooks, Supervised, TrainState
from .loader import EpochSampler, make_loader
from .lr import WarmupLR, lr_factor
from .metrics import SegmentationMetrics, compute_metrics, confusion_matrix, format_table
from .trainer import Trainer, Validation

__all__ = ["Config", "ConfigError", "load_config", "Trainer", "Validation", "MethodHooks", "Supervised", "TrainState",
           "Evaluator", "SegmentationMetrics", "compute_metrics", "confusion_matrix", "format_table",
           "WarmupLR", "lr_factor", "EpochSampler", "make_loader", "DistInfo", "save_checkpoint", "load_checkpoint"]
