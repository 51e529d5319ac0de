"""A MinkowskiEngine U-Net and its converted pcseg twin give the same logits; one JSON line per model.

    PYTHONPATH=. /work/peers/.venv/bin/python benchmarks/me_checkpoint_parity.py [--voxels 40000] [--models …]

Needs MinkowskiEngine (benchmarks/peers.md). For each model the script builds the network in
MinkowskiEngine with the layer names of its MinkUNet / SpatioTemporalSegmentation Res16UNet
(``conv0p1s1``, ``block1`` … ``block8``, ``convtr4p16s2`` …, ``final``), randomises every weight and
BatchNorm statistic, saves ``{"state_dict": …}`` like those training scripts, converts the file with
``tools/convert_checkpoint.py`` and runs both networks in eval mode on the same voxels of a
synthetic room. It reports the largest absolute logit difference and the share of voxels whose
predicted class differs.
"""
from __future__ import annotations

import argparse
import collections
import collections.abc
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

collections.Sequence = collections.abc.Sequence  # MinkowskiEngine 0.5.4 imports it from collections
warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY")
import MinkowskiEngine as ME  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pcseg.cli.convert_checkpoint import main as convert_checkpoint  # noqa: E402
from pcseg.data.synthetic import generate_room  # noqa: E402
from pcseg.engine.checkpoint import load_checkpoint  # noqa: E402
from pcseg.models import build_model  # noqa: E402
from pcseg.models.minkunet import LAYERS, PLANES  # noqa: E402
from pcseg.sparse import SparseTensor, voxelize  # noqa: E402

ARCHITECTURES = {"Res16UNet34C": (34, "C", 3), "Res16UNet14A": (14, "A", 3), "MinkUNet34C": (34, "C", 5),
                 "MinkUNet18A": (18, "A", 5)}


class MEBlock(nn.Module):
    """MinkowskiEngine basic residual block (conv1, norm1, conv2, norm2, downsample)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ME.MinkowskiConvolution(c_in, c_out, kernel_size=3, dimension=3)
        self.norm1 = ME.MinkowskiBatchNorm(c_out)
        self.conv2 = ME.MinkowskiConvolution(c_out, c_out, kernel_size=3, dimension=3)
        self.norm2 = ME.MinkowskiBatchNorm(c_out)
        self.relu = ME.MinkowskiReLU()
        self.downsample = None if c_in == c_out else nn.Sequential(
            ME.MinkowskiConvolution(c_in, c_out, kernel_size=1, dimension=3), ME.MinkowskiBatchNorm(c_out))

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        out = self.norm2(self.conv2(self.relu(self.norm1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class MEUNet(nn.Module):
    """MinkowskiEngine's MinkUNet / Res16UNet with their parameter names."""

    def __init__(self, c_in: int, classes: int, layers: tuple, planes: tuple, stem: int) -> None:
        super().__init__()
        relu = ME.MinkowskiReLU()
        width = 32
        self.conv0p1s1 = ME.MinkowskiConvolution(c_in, width, kernel_size=stem, dimension=3)
        self.bn0 = ME.MinkowskiBatchNorm(width)
        skips = [width]
        for i in range(1, 5):
            setattr(self, f"conv{i}p{2 ** (i - 1)}s2",
                    ME.MinkowskiConvolution(width, width, kernel_size=2, stride=2, dimension=3))
            setattr(self, f"bn{i}", ME.MinkowskiBatchNorm(width))
            blocks = [MEBlock(width if j == 0 else planes[i - 1], planes[i - 1]) for j in range(layers[i - 1])]
            setattr(self, f"block{i}", nn.Sequential(*blocks))
            width = planes[i - 1]
            skips.append(width)
        skips.pop()
        for i in range(4, 8):
            setattr(self, f"convtr{i}p{2 ** (8 - i)}s2",
                    ME.MinkowskiConvolutionTranspose(width, planes[i], kernel_size=2, stride=2, dimension=3))
            setattr(self, f"bntr{i}", ME.MinkowskiBatchNorm(planes[i]))
            c = planes[i] + skips.pop()
            setattr(self, f"block{i + 1}", nn.Sequential(*[MEBlock(c if j == 0 else planes[i], planes[i])
                                                           for j in range(layers[i])]))
            width = planes[i]
        self.final = ME.MinkowskiConvolution(width, classes, kernel_size=1, bias=True, dimension=3)
        self.relu = relu

    def forward(self, x: ME.SparseTensor) -> ME.SparseTensor:
        out = self.relu(self.bn0(self.conv0p1s1(x)))
        skips = [out]
        for i in range(1, 5):
            out = self.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}p{2 ** (i - 1)}s2")(out)))
            out = getattr(self, f"block{i}")(out)
            skips.append(out)
        skips.pop()
        for i in range(4, 8):
            out = self.relu(getattr(self, f"bntr{i}")(getattr(self, f"convtr{i}p{2 ** (8 - i)}s2")(out)))
            out = getattr(self, f"block{i + 1}")(ME.cat(out, skips.pop()))
        return self.final(out)


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Every parameter and BatchNorm statistic drawn at random (so no layer can hide a wrong mapping)."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or name.endswith("bn.weight"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:
                fan = tensor.shape[-2] * (tensor.shape[0] if tensor.dim() == 3 else 1) if tensor.dim() >= 2 else 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan) ** 0.5)


def parity(name: str, voxels: int, seed: int) -> dict:
    layers, planes, stem = ARCHITECTURES[name]
    generator = torch.Generator().manual_seed(seed)
    room = generate_room(seed, num_points=4 * voxels)
    vox = voxelize(torch.as_tensor(room.coord, dtype=torch.float32), 0.02,
                   feats=torch.as_tensor(room.color, dtype=torch.float32) / 255.0)
    sites = vox.coords[:voxels] - vox.coords[:voxels].min(0).values  # a slab of the room, lexicographic order
    coords = torch.cat([torch.zeros(len(sites), 1, dtype=torch.int32), sites.int()], 1)
    feats = vox.feats[:voxels]
    me_net = MEUNet(3, 20, LAYERS[layers], PLANES[planes], stem).eval()
    randomise(me_net, generator)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "me.pth", Path(tmp) / "pcseg.pth"
        torch.save({"state_dict": me_net.state_dict(), "epoch": 1}, source)
        convert_checkpoint(["--input", str(source), "--model", name, "--out", str(target)])
        pc_net = build_model({"name": name, "in_channels": 3, "num_classes": 20, "D": 3}).eval()
        pc_net.load_state_dict(load_checkpoint(target)["model"])
    with torch.no_grad():
        me_out = me_net(ME.SparseTensor(feats, coords))
        order = {tuple(c): i for i, c in enumerate(me_out.C.tolist())}
        rows = torch.tensor([order[tuple(c)] for c in coords.tolist()])
        me_logits = me_out.F[rows]
        pc_logits = pc_net(SparseTensor(feats, coords)).F
    scale = me_logits.abs().max().item()
    return {"model": name, "voxels": len(coords), "max_abs_logit": round(scale, 4),
            "max_abs_diff": float(f"{(me_logits - pc_logits).abs().max().item():.3g}"),
            "argmax_disagreement": float((me_logits.argmax(1) != pc_logits.argmax(1)).float().mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voxels", type=int, default=40000)
    parser.add_argument("--models", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.models:
        print(json.dumps({"case": "me_checkpoint_parity", "minkowskiengine": ME.__version__,
                          **parity(name, args.voxels, args.seed)}), flush=True)


if __name__ == "__main__":
    main()
