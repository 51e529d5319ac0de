"""Convert a MinkowskiEngine MinkUNet / Res16UNet checkpoint into pcseg weights.

    python tools/convert_checkpoint.py --input Res16UNet34C_scannet.pth --model Res16UNet34C --out res16unet34c.pth
    python tools/train.py --config configs/scannet/supervised.yaml model.init_from=res16unet34c.pth
    python tools/test.py --config configs/scannet/supervised.yaml --checkpoint res16unet34c.pth

--input is a MinkowskiEngine training checkpoint (the weights at its top level or under
``state_dict`` / ``model_state`` / ``model``, a DataParallel ``module.`` prefix allowed) in the
layout of MinkowskiEngine's ``examples/minkunet.py`` (``--model MinkUNet34C``: 5³ stem) or of
SpatioTemporalSegmentation's Res16UNet (``--model Res16UNet34C``: 3³ stem). The input channels and
classes are read from the first and last layers; --model names the pcseg architecture of the same
depth and widths (``pcseg.models.MODELS``); a wrong one fails with the mismatching tensors named.
The output is ``{"model": state dict, "converted_from": …, "architecture": …}``, written
atomically: the form ``model.init_from`` and ``tools/test.py --checkpoint`` read. The mapping of
names and kernel offsets is documented in :mod:`pcseg.models.convert`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from pcseg.engine.checkpoint import save_checkpoint
from pcseg.engine.cli import tool_errors
from pcseg.models import MODELS, build_model
from pcseg.models.convert import convert_minkowski_state_dict, read_minkowski_state_dict
from pcseg.utils.errors import InputError

STEM, CLASSIFIER = "conv0p1s1.kernel", "final.kernel"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="MinkowskiEngine checkpoint (.pth)")
    parser.add_argument("--model", required=True, choices=sorted(MODELS), help="pcseg architecture of the same layout")
    parser.add_argument("--dim", type=int, default=3, help="spatial dimension D of the network (default 3)")
    parser.add_argument("--out", required=True, help="pcseg checkpoint to write")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = parse_args(argv)
    with tool_errors():
        try:
            state = read_minkowski_state_dict(args.input)
        except (FileNotFoundError, ValueError) as err:
            raise InputError(f"--input: {err}") from None
        weights = {k.removeprefix("module."): v for k, v in state.items()}
        for key in (STEM, CLASSIFIER):
            if key not in weights:
                raise InputError(f"--input {args.input}: no {key!r}, which gives the input channels and classes; "
                                 f"is it a MinkUNet / Res16UNet checkpoint? keys: {', '.join(list(weights)[:8])}, …")
        in_channels, num_classes = weights[STEM].shape[-2], weights[CLASSIFIER].shape[-1]
        model = build_model({"name": args.model, "in_channels": in_channels, "num_classes": num_classes, "D": args.dim})
        try:
            converted = convert_minkowski_state_dict(weights, model, source=args.input)
        except ValueError as err:
            raise InputError(f"--input: {err} (check --model and --dim)") from None
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint({"model": converted, "converted_from": str(Path(args.input).resolve()),
                         "architecture": {"name": args.model, "in_channels": in_channels, "num_classes": num_classes,
                                          "D": args.dim}}, out)
        print(f"converted {len(state)} MinkowskiEngine tensors into {args.model} (in_channels={in_channels}, "
              f"num_classes={num_classes}, D={args.dim}) → {out}")
        return out


if __name__ == "__main__":
    main()
