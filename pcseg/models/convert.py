"""MinkowskiEngine checkpoints → weights of pcseg's :class:`~pcseg.models.MinkUNet` family.

MinkowskiEngine's MinkUNet (its ``examples/minkunet.py``) and Res16UNet (SpatioTemporalSegmentation's
``models/res16unet.py``) have the layers of pcseg's MinkUNet; only the names and the kernel layout
differ:

================================================  =============================================
MinkowskiEngine                                   pcseg
================================================  =============================================
``conv0p1s1.kernel``, ``bn0.bn.*``                ``stem.0.weight``, ``stem.1.module.*``
``conv{i}p{2^(i-1)}s2``, ``bn{i}``, i = 1..4      ``down.{i-1}.0``, ``down.{i-1}.1``
``block{i}.{j}.…``, i = 1..4                      ``enc.{i-1}.{j}.…``
``convtr{i}p{2^(8-i)}s2``, ``bntr{i}``, i = 4..7  ``up.{i-4}.0``, ``up.{i-4}.1``
``block{i}.{j}.…``, i = 5..8                      ``dec.{i-5}.{j}.…``
``final.kernel`` (C, classes), ``final.bias``     ``head.module.weight`` (classes, C), ``.bias``
================================================  =============================================

Inside a block the names agree (``conv1``, ``norm1``, ``conv2``, ``norm2``, ``downsample.{0,1}``);
a MinkowskiBatchNorm's ``bn.`` is pcseg's ``module.``. Kernels are ``(K, C_in, C_out)`` in both, with
the same offsets (odd sizes centred, even sizes anchored at the lower corner), but MinkowskiEngine
enumerates them with the *first* axis fastest and pcseg with the *last* axis fastest
(:mod:`pcseg.sparse.kmap`); a kernel of one offset at stride 1 is stored ``(C_in, C_out)``. This was
measured on MinkowskiEngine 0.5.4 (``benchmarks/me_checkpoint_parity.py`` runs both networks).
"""
from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["me_kernel_to_pcseg", "me_key_to_pcseg", "convert_minkowski_state_dict", "read_minkowski_state_dict"]

_LEVEL_RULES = [  # (ME name pattern, pcseg prefix built from the match)
    (re.compile(r"^conv0p1s1\."), lambda m: "stem.0."),
    (re.compile(r"^bn0\."), lambda m: "stem.1."),
    (re.compile(r"^conv([1-4])p\d+s2\."), lambda m: f"down.{int(m[1]) - 1}.0."),
    (re.compile(r"^bn([1-4])\."), lambda m: f"down.{int(m[1]) - 1}.1."),
    (re.compile(r"^block([1-4])\."), lambda m: f"enc.{int(m[1]) - 1}."),
    (re.compile(r"^convtr([4-7])p\d+s2\."), lambda m: f"up.{int(m[1]) - 4}.0."),
    (re.compile(r"^bntr([4-7])\."), lambda m: f"up.{int(m[1]) - 4}.1."),
    (re.compile(r"^block([5-8])\."), lambda m: f"dec.{int(m[1]) - 5}."),
    (re.compile(r"^final\."), lambda m: "head.module."),
]
_STATE_ENTRIES = ("state_dict", "model_state", "model")  # where training scripts put the weights


def me_key_to_pcseg(key: str) -> str:
    """The pcseg name of MinkowskiEngine parameter ``key`` (e.g. ``block5.0.norm1.bn.weight`` →
    ``dec.0.0.norm1.module.weight``); raises KeyError for a name outside the MinkUNet layout."""
    for pattern, prefix_of in _LEVEL_RULES:
        match = pattern.match(key)
        if match:
            rest = key[match.end():]
            rest = re.sub(r"(^|\.)bn\.", r"\1module.", rest)  # MinkowskiBatchNorm wraps nn.BatchNorm1d as .bn
            return prefix_of(match) + re.sub(r"(^|\.)kernel$", r"\1weight", rest)
    raise KeyError(f"{key!r} is not a parameter of MinkowskiEngine's MinkUNet / Res16UNet layout")


def me_kernel_to_pcseg(kernel: Tensor, kernel_size: Sequence[int]) -> Tensor:
    """Reorder a MinkowskiEngine kernel to pcseg's offset order.

    kernel: (K, C_in, C_out), offsets first axis fastest, or (C_in, C_out) for a one-offset kernel;
    kernel_size: the D sizes, prod = K. Returns (K, C_in, C_out), offsets last axis fastest.
    """
    volume, dim = math.prod(kernel_size), len(kernel_size)
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(0)
    if kernel.dim() != 3 or kernel.shape[0] != volume:
        raise ValueError(f"kernel of shape {tuple(kernel.shape)} does not fit kernel_size {tuple(kernel_size)} "
                         f"(expected ({volume}, C_in, C_out))")
    c_in, c_out = kernel.shape[1:]
    # first axis fastest = row-major over the reversed axes: view as (k_D, ..., k_1), then reverse them
    grid = kernel.reshape(*reversed(kernel_size), c_in, c_out)
    return grid.permute(*reversed(range(dim)), dim, dim + 1).reshape(volume, c_in, c_out).contiguous()


def convert_minkowski_state_dict(state: Mapping[str, Tensor], model: nn.Module,
                                 source: str = "state dict") -> dict[str, Tensor]:
    """``model``'s state dict filled from MinkowskiEngine weights ``state`` (a ``module.`` prefix is dropped).

    model: a pcseg MinkUNet / Res16UNet of the same depth, widths, input channels and classes; its
    kernel sizes decide the reordering. Raises ValueError naming ``source`` and the keys when a
    parameter is missing, left over or of another shape.
    """
    own = model.state_dict()
    converted: dict[str, Tensor] = {}
    unknown, mismatched = [], []
    for key, value in state.items():
        key = key.removeprefix("module.")
        try:
            name = me_key_to_pcseg(key)
        except KeyError:
            unknown.append(key)
            continue
        if name not in own:
            unknown.append(key)
            continue
        value = value.detach().cpu()
        if name == "head.module.weight":
            value = value.t()
        elif name == "head.module.bias":
            value = value.reshape(-1)
        elif name.endswith(".weight") and own[name].dim() == 3:  # a sparse convolution kernel
            conv = model.get_submodule(name.removesuffix(".weight"))
            try:
                value = me_kernel_to_pcseg(value, conv.kernel_size)
            except ValueError as err:
                mismatched.append(f"{key}: {err}")
                continue
        if value.shape != own[name].shape:
            mismatched.append(f"{key} {tuple(value.shape)} → {name} expects {tuple(own[name].shape)}")
            continue
        converted[name] = value.to(own[name].dtype)
    for name in own:  # checkpoints from before torch 0.4.1 have no BatchNorm step counters
        if name.endswith("num_batches_tracked") and name not in converted:
            converted[name] = own[name]
    missing = [k for k in own if k not in converted]
    if unknown or mismatched or missing:
        raise ValueError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(
            f"{what} ({len(keys)}): {', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}"
            for what, keys in (("unknown keys", unknown), ("shape mismatches", mismatched),
                               ("missing keys", missing)) if keys))
    return converted


def read_minkowski_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The weights in a MinkowskiEngine training checkpoint: the file itself or its ``state_dict`` /
    ``model_state`` / ``model`` entry. Loads with ``weights_only`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: holds Python objects that weights_only loading refuses ({err}); re-save its "
                         f"state dict alone with torch.save(ckpt['state_dict'], …) from a trusted session") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    for entry in _STATE_ENTRIES:
        if isinstance(obj.get(entry), dict):
            obj = obj[entry]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors at the top level or under {', '.join(_STATE_ENTRIES)}; "
                         f"keys: {', '.join(map(str, list(obj)[:10]))}")
    return tensors
