"""The frozen image network of SLidR: camera images → feature maps.

Interface: :class:`ImageTeacher` maps images (B, 3, H, W) float in [0, 1] to feature maps
(B, C, h, w) without gradients and with frozen BatchNorm; ``out_channels`` is C. It wraps any
``nn.Module`` with that mapping, or one built by name from a config (``TEACHERS``):

- ``{name: ResNet50, weights: <local path>, dilation: [false, true, true]}``: torchvision's
  ResNet-50 layout (parameter names ``conv1``, ``bn1``, ``layer1.0.conv1``, … ``layer4.2.bn3``),
  ImageNet-normalised input, ``layer4`` output (C = 2048, stride 32; 8 with SLidR's dilated
  ``[false, true, true]``). ``weights`` is a torchvision state dict or a MoCo-v2 checkpoint
  (``{"state_dict": {"module.encoder_q.conv1.weight": …}}``, ``fc`` projection dropped). Nothing
  is downloaded. torchvision's module is used when it imports; otherwise :class:`ResNet50Trunk`,
  the same layout defined here, so the default install needs no torchvision.
- ``{name: SparseImageModel, model: {name: MinkUNet14A, in_channels: 3, num_classes: 19, D: 2},
  checkpoint: <path>}``: a pcseg D=2 model (e.g. trained by ``configs/image2d``) run on every
  pixel; its ``forward_features`` become the maps (stride 1). With a checkpoint trained on 2D labels
  (``configs/image2d``) this is the *supervised* comparison teacher: it has seen segmentation labels.
- ``{name: Contrastive, images: <glob>, checkpoint: <path>, model: {…}, …}`` (:mod:`.ssl_teacher`): the
  same D=2 model trained without labels by dense contrastive learning on the images, then frozen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from pcseg.models import build_model
from pcseg.sparse import SparseTensor
from pcseg.utils.registry import Registry

__all__ = ["ImageTeacher", "ResNet50Trunk", "ResNetFeatures", "SparseImageFeatures", "TEACHERS", "build_teacher",
           "load_resnet_weights", "ResNet50", "SparseImageModel"]

TEACHERS = Registry("teacher")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_MOCO_PREFIX = "module.encoder_q."


class ImageTeacher(nn.Module):
    """A frozen image network: (B, 3, H, W) float in [0, 1] → (B, C, h, w).

    network: the module doing that mapping. out_channels: C; when None it is read from the output
    of a 64 x 64 black image. Parameters never require gradients and the module stays in eval mode.
    """

    def __init__(self, network: nn.Module, out_channels: Optional[int] = None) -> None:
        super().__init__()
        self.network = network.requires_grad_(False)
        self.train(False)
        if out_channels is None:
            out_channels = int(self(torch.zeros(1, 3, 64, 64, device=_device_of(network))).shape[1])
        self.out_channels = out_channels

    def train(self, mode: bool = True) -> "ImageTeacher":
        """Always eval mode (frozen BatchNorm statistics), whatever ``mode`` says."""
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageTeacher: images expected (B, 3, H, W), got {tuple(images.shape)}")
        with torch.no_grad():
            maps = self.network(images)
        if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
            raise ValueError(f"ImageTeacher: the network returned {tuple(maps.shape)}, expected (B, C, h, w) "
                             f"feature maps for images {tuple(images.shape)}")
        return maps


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters(), torch.zeros(())).device


# ---------------------------------------------------------------------------------------------
# ResNet-50 in torchvision's layout


class _Bottleneck(nn.Module):
    """1x1 → 3x3 (stride, dilation) → 1x1 x4 residual block, torchvision's names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: Optional[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Trunk(nn.Module):
    """ResNet-50 without its classifier, parameter names as torchvision's ``resnet50`` (v1.5: stride in
    the 3x3 conv). dilation: per stage 2..4, replace its stride 2 by dilation (torchvision's
    ``replace_stride_with_dilation``). Run it through :class:`ResNetFeatures`.
    """

    def __init__(self, dilation: Sequence[bool] = (False, False, False)) -> None:
        super().__init__()
        if len(dilation) != 3:
            raise ValueError(f"ResNet50Trunk.dilation: expected 3 flags (stages 2-4), got {list(dilation)}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, rate = 64, 1
        for index, (planes, blocks, dilate) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3),
                                                             (False, *dilation))):
            stride, previous_rate = (1 if index == 0 else 2), rate
            if dilate:
                rate, stride = rate * stride, 1
            downsample = None
            if stride != 1 or inplanes != planes * 4:
                downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes * 4))
            layers = [_Bottleneck(inplanes, planes, stride, previous_rate, downsample)]
            inplanes = planes * 4
            layers += [_Bottleneck(inplanes, planes, 1, rate, None) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))


class ResNetFeatures(nn.Module):
    """Images in [0, 1] → ImageNet normalisation → ``layer4`` maps of a torchvision-layout ResNet ``net``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1((images - self.mean) / self.std))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _resnet50_layout(dilation: Sequence[bool]) -> nn.Module:
    """torchvision's ``resnet50`` (random init) when importable, else :class:`ResNet50Trunk`."""
    try:
        from torchvision.models import resnet50
    except ImportError:
        return ResNet50Trunk(dilation)
    return resnet50(weights=None, replace_stride_with_dilation=list(dilation))


def load_resnet_weights(net: nn.Module, path: str | Path) -> None:
    """Load a torchvision or MoCo-v2 ResNet checkpoint at the local ``path`` into ``net`` (in place).

    Accepted: a plain state dict, or ``{"state_dict": …}``; MoCo's ``module.encoder_q.`` keys are
    kept with the prefix removed (the key encoder and queue dropped), a bare ``module.`` prefix is
    removed, and ``fc.*`` (classifier or MoCo projection MLP) is ignored. Every other parameter and
    buffer of ``net`` must be present with the same shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher weights {path} not found (nothing is downloaded; give a local file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (or {{'state_dict': …}}), got {type(state).__name__}")
    if any(k.startswith(_MOCO_PREFIX) for k in state):
        state = {k[len(_MOCO_PREFIX):]: v for k, v in state.items() if k.startswith(_MOCO_PREFIX)}
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: not a ResNet-50 in torchvision's layout: missing {missing[:5]} "
                         f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")


@TEACHERS.register
def ResNet50(weights: Optional[str] = None, dilation: Sequence[bool] = (False, False, False)) -> ImageTeacher:
    """ResNet-50 teacher (C = 2048); ``weights`` a local torchvision / MoCo-v2 file, None = random init."""
    net = _resnet50_layout(tuple(dilation))
    if weights is not None:
        load_resnet_weights(net, weights)
    return ImageTeacher(ResNetFeatures(net), out_channels=2048)


# ---------------------------------------------------------------------------------------------
# a pcseg D=2 model as the teacher


class SparseImageFeatures(nn.Module):
    """A pcseg D=2 model on every pixel: images (B, 3, H, W) in [0, 1] → ``forward_features`` (B, C, H, W).

    Pixel (row r, column c) of image b is the point (b, c, r) with colour in [-1, 1], as
    :class:`~pcseg.data.datasets.ImageFolderReader` + ``NormalizeColor`` feed such a model in training.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        b, _, h, w = images.shape
        batch, row, col = torch.meshgrid(torch.arange(b), torch.arange(h), torch.arange(w), indexing="ij")
        coords = torch.stack([batch, col, row], -1).reshape(-1, 3).to(torch.int32).to(images.device)
        feats = images.permute(0, 2, 3, 1).reshape(-1, 3) * 2.0 - 1.0
        out = self.model.forward_features(SparseTensor(feats, coords)).F
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


@TEACHERS.register
def SparseImageModel(model: Mapping[str, Any], checkpoint: str) -> ImageTeacher:
    """A pcseg D=2 model (``build_model(model)``) with the ``"model"`` weights of ``checkpoint`` (a
    ``tools/train.py`` checkpoint) as the teacher; C = the model's ``feature_channels``."""
    net = build_model(model)
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"teacher checkpoint {path} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in state:
        raise ValueError(f"{path}: expected a checkpoint with a 'model' entry, got keys {sorted(state)}")
    net.load_state_dict(state["model"])
    return ImageTeacher(SparseImageFeatures(net), out_channels=net.feature_channels)


def build_teacher(spec: Mapping[str, Any] | nn.Module) -> ImageTeacher:
    """An :class:`ImageTeacher` from a module (wrapped as is) or a config mapping naming a ``TEACHERS`` entry."""
    if isinstance(spec, ImageTeacher):
        return spec
    if isinstance(spec, nn.Module):
        return ImageTeacher(spec)
    return TEACHERS.build(spec)
