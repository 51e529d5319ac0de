"""Pre-train a 3D backbone with SLidR, then export it for fine-tuning.

    python tools/pretrain_slidr.py --config configs/semantickitti/slidr_pretrain.yaml [--resume] [--work-dir DIR] …
    python tools/train.py --config configs/semantickitti/slidr_finetune_1pct.yaml model.init_from=DIR/backbone.pth

Trains exactly as ``tools/train.py`` (same arguments and work directory; the config's method must
be ``SLidR``), then writes ``<work dir>/backbone.pth``: ``{"model": …}`` holding the weights of
``model_last.pth`` without the classifier ``head.*`` (never trained by SLidR), the form
``model.init_from`` loads.
"""
from __future__ import annotations

import os
import runpy
from pathlib import Path
from typing import Optional, Sequence

from pcseg.engine.checkpoint import load_checkpoint, save_checkpoint
from pcseg.engine.cli import tool_errors
from pcseg.engine.config import ConfigError, load_config

_TRAIN = runpy.run_path(str(Path(__file__).with_name("train.py")))  # tools/ is not a package
BACKBONE_FILE = "backbone.pth"
_CLASSIFIER_PREFIX = "head."


def export_backbone(checkpoint: Path, out: Path) -> None:
    """Write ``out`` = ``{"model": weights of checkpoint's model without head.*}`` atomically."""
    state = load_checkpoint(checkpoint)["model"]
    save_checkpoint({"model": {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIX)}}, out)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Train, export and return the path of ``backbone.pth``."""
    args = _TRAIN["parse_args"](argv)
    with tool_errors(args.config):
        cfg = load_config(args.config, args.overrides)
        if cfg.method.get("name") != "SLidR":
            raise ConfigError(f"{args.config}: method.name expected 'SLidR', got {cfg.method.get('name')!r}")
        _TRAIN["main"](argv)
        work_dir = Path(args.work_dir or cfg.work_dir or _TRAIN["default_work_dir"](args.config))
        out = work_dir / BACKBONE_FILE
        if int(os.environ.get("RANK", "0")) == 0:
            export_backbone(work_dir / "model_last.pth", out)
            print(f"backbone written to {out}")
        return out


if __name__ == "__main__":
    main()
