"""An offline, trained stand-in for CLIP's image tower: LSeg-style pixel features in a text space.

LSeg (Li et al., ICLR'22) trains a dense image encoder so that each pixel's feature lies close to
the text embedding of its class name: per-pixel logits are ``cos(pixel feature, class text
embedding) / temperature`` over the class names, with a cross-entropy against 2D label maps
(:func:`lseg_loss`). Free-text queries then work through the text encoder: a query embedded near
a class name (``couch`` near ``sofa`` with MiniLM sentence embeddings) picks that class's pixels.

Here the encoder is a small fully-convolutional network (:class:`LSegNet`, output at half
resolution) trained by :func:`train_lseg` on synthetic rooms whose seeds (``room_seed + i``, 1000
and up by default) are disjoint from the evaluated rooms (seeds 0, 1, 2, …), rendered with the
pipeline's cameras and splatting (:func:`~pcseg.methods.ovs.multiview.room_cameras`,
:func:`~pcseg.methods.ovs.multiview.splat_views`), with colour and horizontal-flip augmentation.

A checkpoint (:func:`save_lseg`, atomic) holds the weights, the :class:`LSegSettings`, the text
encoder's name, the class names and their embeddings, so training happens once and every later run
reuses it (:func:`load_or_train_lseg`). Loading with settings, a text encoder, class names or
embeddings that differ from the stored ones raises :class:`LSegMismatchError` naming what differs:
nothing is retrained or overwritten silently (delete the file or choose another path to retrain).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from pcseg.data.synthetic.indoor import generate_room
from pcseg.engine.checkpoint import load_checkpoint, save_checkpoint

from .encoders import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder
from .multiview import room_cameras, splat_views

__all__ = ["LSegSettings", "TextSpace", "LSegNet", "LSegImageEncoder", "LSegMismatchError", "lseg_loss",
           "render_training_views", "augment", "train_lseg", "save_lseg", "load_lseg", "load_or_train_lseg"]

_FORMAT = "pcseg.ovs.lseg/1"


@dataclass(frozen=True)
class LSegSettings:
    """Everything the trained weights depend on besides the text space.

    ``rooms`` training rooms (seeds ``room_seed`` … ``room_seed + rooms - 1``) of ``num_points``
    points, ``views_per_room`` cameras each, rendered at ``height`` x ``width`` with ``fov_deg``;
    network width ``channels``; ``epochs`` passes over all views in batches of ``batch_size``,
    Adam at ``lr``; fixed logit ``temperature``; ``seed`` for the weights, the order and the augmentation."""

    rooms: int = 24
    views_per_room: int = 16
    room_seed: int = 1000
    num_points: int = 60_000
    height: int = 48
    width: int = 64
    fov_deg: float = 75.0
    channels: int = 32
    epochs: int = 20
    batch_size: int = 16
    lr: float = 3e-3
    temperature: float = 0.07
    seed: int = 0


@dataclass(frozen=True)
class TextSpace:
    """The text side the encoder is trained against: ``encoder`` a name identifying the text
    encoder, ``class_names`` (C,) and their L2-normalised ``embeddings`` (C, D) float32."""

    encoder: str
    class_names: tuple[str, ...]
    embeddings: Tensor


class LSegMismatchError(ValueError):
    """A checkpoint was trained with other settings or another text space than requested."""


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LSegNet(nn.Module):
    """U-Net-like encoder: four stride-2 stages (1/2 … 1/16), then upsampling with skip
    connections back to 1/2 and a 1x1 projection to ``out_dim``.

    ``forward``: images (B, 3, H, W) float32 in [0, 1] → L2-normalised features (B, out_dim,
    ceil(H/2), ceil(W/2)) float32."""

    def __init__(self, out_dim: int, channels: int = 32) -> None:
        super().__init__()
        c = channels
        self.out_channels = out_dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.down = nn.ModuleList([nn.Sequential(_conv(3, c), _conv(c, c, 2)),
                                   nn.Sequential(_conv(c, 2 * c, 2), _conv(2 * c, 2 * c)),
                                   nn.Sequential(_conv(2 * c, 4 * c, 2), _conv(4 * c, 4 * c)),
                                   nn.Sequential(_conv(4 * c, 4 * c, 2), _conv(4 * c, 4 * c))])
        self.up = nn.ModuleList([_conv(8 * c, 4 * c), _conv(6 * c, 2 * c), _conv(3 * c, 2 * c)])
        self.head = nn.Conv2d(2 * c, out_dim, 1)

    def forward(self, images: Tensor) -> Tensor:
        x = (images - self.mean) / self.std
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for stage in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return F.normalize(self.head(x), dim=1)


class LSegImageEncoder(ImageEncoder):
    """A trained :class:`LSegNet` as a frozen :class:`~pcseg.methods.ovs.encoders.ImageEncoder`:
    images (B, 3, H, W) float32 in [0, 1] → (B, D, ceil(H/2), ceil(W/2)) L2-normalised features."""

    def __init__(self, net: LSegNet, batch_size: int = 32) -> None:
        self.net, self.batch_size = net.eval().requires_grad_(False), batch_size
        self.out_channels = net.out_channels

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"LSegImageEncoder: images expected (B, 3, H, W), got {tuple(images.shape)}")
        return torch.cat([self.net(images[i:i + self.batch_size].float())
                          for i in range(0, len(images), self.batch_size)])


def lseg_loss(features: Tensor, labels: Tensor, text: Tensor, temperature: float) -> Tensor:
    """LSeg's loss: mean cross-entropy over labelled pixels of ``cos(feature, text) / temperature``.

    Args:
        features: (B, D, h, w) float pixel features; when (h, w) is smaller than the labels' (H, W),
            the cosines (B, C, h, w) are bilinearly upsampled to (H, W) (cheaper than the features).
        labels: (B, H, W) int64 class indices into ``text``; pixels < 0 are ignored.
        text: (C, D) class-name embeddings.

    Returns:
        scalar loss; 0 (with a gradient) when no pixel is labelled.
    """
    cosine = torch.einsum("bdhw,cd->bchw", F.normalize(features, dim=1), F.normalize(text, dim=1))
    if cosine.shape[2:] != labels.shape[1:]:
        cosine = F.interpolate(cosine, size=labels.shape[1:], mode="bilinear", align_corners=False)
    valid = labels >= 0
    if not valid.any():
        return cosine.sum() * 0.0
    logits = (cosine / temperature).permute(0, 2, 3, 1)[valid]
    return F.cross_entropy(logits, labels[valid])


def render_training_views(settings: LSegSettings, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Views of the training rooms: images (N, 3, H, W) float32 in [0, 1] and labels (N, H, W)
    int64 (``IGNORE_INDEX`` where nothing is seen), N = ``rooms * views_per_room``."""
    images, labels = [], []
    for i in tqdm(range(settings.rooms), desc="render lseg rooms", disable=not progress):
        seed = settings.room_seed + i
        room = generate_room(seed, num_points=settings.num_points)
        K, c2w = room_cameras(room.coord, settings.views_per_room, settings.height, settings.width,
                              settings.fov_deg, seed)
        views = splat_views(room.coord, room.color, room.semantic, K, c2w, settings.height, settings.width)
        images.append(views.images.permute(0, 3, 1, 2))
        labels.append(views.labels)
    return torch.cat(images), torch.cat(labels)


def augment(images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random per-image brightness (x0.7–1.3), contrast (x0.7–1.3 about the image mean), channel
    gains (x0.9–1.1) and horizontal flips (p = 0.5) of images (B, 3, H, W) in [0, 1] and their labels (B, H, W)."""
    def uniform(lo: float, hi: float, channels: int = 1) -> Tensor:  # (B, channels, 1, 1)
        return lo + (hi - lo) * torch.rand(len(images), channels, 1, 1, generator=generator)

    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    out = (images - mean) * uniform(0.7, 1.3) + mean
    out = (out * uniform(0.7, 1.3) * uniform(0.9, 1.1, 3)).clamp(0, 1)
    flip = torch.rand(len(images), generator=generator) < 0.5
    return (torch.where(flip[:, None, None, None], out.flip(3), out),
            torch.where(flip[:, None, None], labels.flip(2), labels))


def _new_net(settings: LSegSettings, out_dim: int) -> LSegNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return LSegNet(out_dim, settings.channels)


def train_lseg(settings: LSegSettings, text: TextSpace, progress: bool = False) -> tuple[LSegNet, list[float]]:
    """Train an :class:`LSegNet` from scratch on :func:`render_training_views` against the class
    embeddings ``text.embeddings`` (C, D) (label ``c`` of the rooms ↔ row ``c``). Deterministic
    given ``settings.seed`` (and the torch thread count). Returns the network (eval mode) and the
    mean loss of each epoch."""
    images, labels = render_training_views(settings, progress)
    if int(labels.max()) >= len(text.embeddings):
        raise ValueError(f"train_lseg: labels reach {int(labels.max())} but only {len(text.embeddings)} class "
                         "embeddings were given")
    net = _new_net(settings, text.embeddings.shape[1])
    optim = torch.optim.Adam(net.parameters(), lr=settings.lr)
    steps_per_epoch = -(-len(images) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, settings.lr, total_steps=settings.epochs * steps_per_epoch)
    g = torch.Generator().manual_seed(settings.seed)
    history = []
    net.train()
    for _ in tqdm(range(settings.epochs), desc="train lseg", disable=not progress):
        order, total = torch.randperm(len(images), generator=g), 0.0
        for start in range(0, len(images), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            x, y = augment(images[batch], labels[batch], g)
            loss = lseg_loss(net(x), y, text.embeddings, settings.temperature)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            total += loss.item() * len(batch)
        history.append(total / len(images))
    return net.eval(), history


def save_lseg(path: str | Path, net: LSegNet, settings: LSegSettings, text: TextSpace,
              history: list[float] | None = None) -> None:
    """Write the weights, settings and text space to ``path`` atomically."""
    save_checkpoint({"format": _FORMAT, "state_dict": net.state_dict(), "settings": asdict(settings),
                     "text_encoder": text.encoder, "class_names": list(text.class_names),
                     "class_embeddings": text.embeddings.float().clone(), "history": list(history or [])}, path)


def _differences(ckpt: dict, settings: LSegSettings, text: TextSpace) -> list[str]:
    stored = ckpt["settings"]
    diffs = [f"{k}: stored {stored.get(k)!r}, requested {v!r}" for k, v in asdict(settings).items()
             if stored.get(k) != v]
    if ckpt["text_encoder"] != text.encoder:
        diffs.append(f"text encoder: stored {ckpt['text_encoder']!r}, requested {text.encoder!r}")
    if tuple(ckpt["class_names"]) != text.class_names:
        diffs.append("class names differ")
    elif ckpt["class_embeddings"].shape != text.embeddings.shape or not torch.allclose(
            ckpt["class_embeddings"], text.embeddings.float(), atol=1e-4):
        diffs.append("class-name embeddings differ (another text model behind the same name?)")
    return diffs


def load_lseg(path: str | Path, settings: LSegSettings, text: TextSpace) -> LSegNet:
    """The network stored at ``path`` (eval mode). Raises FileNotFoundError when missing and
    :class:`LSegMismatchError` when it was trained with other settings or another text space."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path}: not an LSeg checkpoint (format {ckpt.get('format')!r}, expected {_FORMAT!r})")
    diffs = _differences(ckpt, settings, text)
    if diffs:
        raise LSegMismatchError(f"{path}: LSeg checkpoint trained differently — " + "; ".join(diffs)
                                + ". Delete it to retrain, or set features.lseg_checkpoint to another path")
    net = LSegNet(text.embeddings.shape[1], settings.channels)
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def load_or_train_lseg(path: str | Path, settings: LSegSettings, text: TextSpace,
                       progress: bool = False) -> LSegImageEncoder:
    """:func:`load_lseg` when ``path`` exists (mismatches raise), else :func:`train_lseg` then
    :func:`save_lseg` to ``path``."""
    if Path(path).is_file():
        return LSegImageEncoder(load_lseg(path, settings, text))
    net, history = train_lseg(settings, text, progress)
    save_lseg(path, net, settings, text, history)
    return LSegImageEncoder(net)
