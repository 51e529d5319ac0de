"""A label-free 2D teacher for SLidR: dense contrastive pre-training on unlabelled images, then frozen.

SLidR distils a frozen MoCo-v2 ResNet-50, a network that never saw a segmentation label. This
module makes such a teacher from images alone: two augmented views of each image (random resized
crop, horizontal flip, colour jitter, greyscale: MoCo-v2's recipe without the blur, which little
images do not need), the image network's per-pixel features read at the same ``samples_per_image``
image locations in both views (the crops are known, so the correspondence is exact), a 2-layer MLP
projection, and a symmetric :func:`~.losses.info_nce` at temperature 0.2 in which a location must
find itself in the other view among every other sampled location of the batch (PixContrast /
DenseCL-style, not MoCo's pooled image embedding).

Why dense: SLidR's loss asks each superpixel's 3D feature to pick out its own 2D feature among the
other superpixels of the batch, mostly from the same images. A pooled image-level objective only
asks that whole images differ; with a few hundred synthetic images nothing then pushes two regions
of one image apart. The dense objective trains exactly the within-image discrimination the
distillation consumes, and its negatives come from the same images as SLidR's.

Labels cannot enter: :func:`train_contrastive` takes an :data:`ImageSource` (``len`` and
``source[i]`` → an (H, W, 3) uint8 image) and nothing else about the data; :class:`ImageFiles`
reads only the PNG files a glob pattern matches.

YAML (``method.teacher`` of a SLidR config; see :func:`Contrastive`)::

    teacher: {name: Contrastive, checkpoint: work_dirs/ssl_teacher/teacher.pth,
              images: "data/street_images/*/images/*.png",
              model: {name: MinkUNet14A, in_channels: 3, num_classes: 19, D: 2}, steps: 100}

The first build trains and writes ``checkpoint`` atomically; later builds with the same settings
load it (different settings raise). The checkpoint's ``model`` entry is the D=2 model's state
dict, so ``{name: SparseImageModel, model: …, checkpoint: …}`` loads the same teacher.
"""
from __future__ import annotations

import dataclasses
import glob
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from pcseg.engine.checkpoint import load_checkpoint, save_checkpoint
from pcseg.engine.config import config_diff
from pcseg.engine.lr import WarmupLR
from pcseg.models import build_model
from pcseg.utils.errors import InputError

from .losses import info_nce
from .teacher import TEACHERS, ImageTeacher, SparseImageFeatures

__all__ = ["ImageSource", "ImageFiles", "Augmentation", "ContrastiveSchedule", "ContrastiveLearner", "random_box",
           "crop_view", "colour_jitter", "view_pair", "contrastive_batch", "contrastive_step", "train_contrastive",
           "CHECKPOINT_KIND", "Contrastive"]

CHECKPOINT_KIND = "pcseg.slidr.contrastive_teacher"
"""``kind`` entry of a contrastive teacher checkpoint."""


class ImageSource(Protocol):
    """Images only: ``len(source)`` and ``source[i]`` → (H, W, 3) uint8 RGB array."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> np.ndarray: ...


class ImageFiles:
    """The PNG (or any PIL-readable) images matching a glob ``pattern``, sorted by path; nothing else is read.

    ``pattern`` e.g. ``data/street_images/*/images/*.png`` (an image folder without its label maps)
    or ``data/semantickitti/sequences/*/image_2/*.png`` (camera frames). ``source[i]`` is (H, W, 3) uint8.
    """

    def __init__(self, pattern: str | Path) -> None:
        self.pattern = str(pattern)
        self.paths = sorted(Path(p) for p in glob.glob(self.pattern, recursive=True) if Path(p).is_file())
        if not self.paths:
            raise InputError(f"{self.pattern}: images: expected image files matching this pattern, found none")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.paths[index]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as err:
            raise InputError(f"{path}: image: expected a readable image file, cannot read it ({err})") from None


# ---------------------------------------------------------------------------------------------
# augmentations


@dataclass(frozen=True)
class Augmentation:
    """Two-view augmentation (MoCo-v2's, without blur).

    crop_size: (h, w) of every view; scale: range of the crop's area as a fraction of the image;
    ratio: range of the crop's aspect ratio relative to ``crop_size``'s (1 = undistorted);
    flip_p: horizontal flip probability; jitter: brightness / contrast / saturation factors drawn
    from ``[1 - jitter, 1 + jitter]``, applied with probability ``jitter_p``; grayscale_p: probability
    of a greyscale view.
    """

    crop_size: tuple[int, int] = (32, 96)
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: float = 0.4
    jitter_p: float = 0.8
    grayscale_p: float = 0.2

    def __post_init__(self) -> None:
        h, w = self.crop_size
        lo, hi = self.scale
        if h < 1 or w < 1 or not 0 < lo <= hi <= 1 or not 0 < self.ratio[0] <= self.ratio[1] \
                or not 0 <= self.jitter < 1 or not all(0 <= p <= 1 for p in (self.flip_p, self.jitter_p,
                                                                               self.grayscale_p)):
            raise ValueError(f"Augmentation: expected crop_size >= 1, 0 < scale <= 1 (low <= high), 0 < ratio "
                             f"(low <= high), 0 <= jitter < 1, probabilities in [0, 1]; got {self}")


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def random_box(height: int, width: int, aug: Augmentation, generator: torch.Generator) -> Tensor:
    """A random resized crop of an ``height`` x ``width`` image: (4,) float64 ``(x0, y0, x1, y1)`` in
    [0, 1] image-normalised coordinates (x along columns). Its area is ``scale`` of the image's and its
    aspect ratio ``crop_size``'s times a factor in ``ratio`` (log-uniform), clipped to the image."""
    area = _uniform(generator, *aug.scale) * height * width
    aspect = aug.crop_size[1] / aug.crop_size[0] * math.exp(_uniform(generator, *np.log(aug.ratio)))
    w, h = min(math.sqrt(area * aspect), width), min(math.sqrt(area / aspect), height)
    x0, y0 = _uniform(generator, 0.0, width - w), _uniform(generator, 0.0, height - h)
    return torch.tensor([x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height], dtype=torch.float64)


def _to_view(points: Tensor, box: Tensor, flip: bool) -> Tensor:
    """Image-normalised (..., 2) (x, y) → ``grid_sample`` coordinates in [-1, 1] of the view of ``box``."""
    v = (points - box[:2]) / (box[2:] - box[:2])
    if flip:
        v = torch.stack([1.0 - v[..., 0], v[..., 1]], -1)
    return 2.0 * v - 1.0


def crop_view(image: Tensor, box: Tensor, flip: bool, size: tuple[int, int]) -> Tensor:
    """The view of ``box`` (see :func:`random_box`), mirrored left-right when ``flip``, resized to ``size``.

    image: (3, H, W) float. Returns (3, h, w) float32, bilinear (pixel centres: ``align_corners=False``).
    """
    h, w = size
    rows, cols = torch.meshgrid((torch.arange(h, dtype=torch.float64) + 0.5) / h,
                                (torch.arange(w, dtype=torch.float64) + 0.5) / w, indexing="ij")
    view = torch.stack([cols, rows], -1)
    if flip:
        view = torch.stack([1.0 - view[..., 0], view[..., 1]], -1)
    source = box[:2] + view * (box[2:] - box[:2])
    grid = (2.0 * source - 1.0).to(torch.float32)[None]
    return F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def colour_jitter(view: Tensor, aug: Augmentation, generator: torch.Generator) -> Tensor:
    """Brightness, contrast and saturation jitter (probability ``jitter_p``), then greyscale
    (probability ``grayscale_p``). view: (3, h, w) float in [0, 1] → same shape, clamped to [0, 1]."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=view.dtype).view(3, 1, 1)
    if _uniform(generator) < aug.jitter_p:
        low, high = 1.0 - aug.jitter, 1.0 + aug.jitter
        view = (view * _uniform(generator, low, high)).clamp(0, 1)
        mean = (view * weights).sum(0).mean()
        view = (mean + (view - mean) * _uniform(generator, low, high)).clamp(0, 1)
        grey = (view * weights).sum(0, keepdim=True)
        view = (grey + (view - grey) * _uniform(generator, low, high)).clamp(0, 1)
    if _uniform(generator) < aug.grayscale_p:
        view = (view * weights).sum(0, keepdim=True).expand(3, -1, -1).clone()
    return view


def view_pair(image: Tensor, aug: Augmentation, samples: int,
              generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two augmented views of one image and ``samples`` image locations seen by both.

    image: (3, H, W) uint8. Returns ``view1, view2`` (3, h, w) float32 in [0, 1] and ``grid1, grid2``
    (samples, 2) float32: the same image locations, drawn uniformly in the overlap of the two crops,
    as ``grid_sample`` (x, y) coordinates of each view. The second crop is redrawn up to 10 times
    until it overlaps the first; failing that it is the first crop (flip and colours still differ).
    """
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"view_pair: image expected (3, H, W) uint8, got {tuple(image.shape)} {image.dtype}")
    if samples < 1:
        raise ValueError(f"view_pair: samples expected >= 1, got {samples}")
    height, width = image.shape[1:]
    box1 = random_box(height, width, aug, generator)
    for _ in range(10):
        box2 = random_box(height, width, aug, generator)
        if (torch.minimum(box1[2:], box2[2:]) > torch.maximum(box1[:2], box2[:2])).all():
            break
    else:
        box2 = box1
    low, high = torch.maximum(box1[:2], box2[:2]), torch.minimum(box1[2:], box2[2:])
    points = low + torch.rand(samples, 2, generator=generator, dtype=torch.float64) * (high - low)
    pixels = image.float() / 255.0
    views, grids = [], []
    for box in (box1, box2):
        flip = _uniform(generator) < aug.flip_p
        views.append(colour_jitter(crop_view(pixels, box, flip, aug.crop_size), aug, generator))
        grids.append(_to_view(points, box, flip).to(torch.float32))
    return views[0], views[1], grids[0], grids[1]


def contrastive_batch(images: ImageSource, indices: Sequence[int], aug: Augmentation, samples: int,
                      generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`view_pair` of ``images[i]`` for each of ``indices``, stacked: views (B, 3, h, w) float32,
    grids (B, samples, 2) float32."""
    pairs = [view_pair(torch.from_numpy(np.array(images[int(i)])).permute(2, 0, 1), aug, samples,
                       generator) for i in indices]
    return tuple(torch.stack(parts) for parts in zip(*pairs))  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# the learner and its training


class ContrastiveLearner(nn.Module):
    """Image network + projection MLP, trained by the dense two-view InfoNCE (module docstring).

    network: images (B, 3, h, w) float in [0, 1] → per-pixel feature maps (B, C, h, w) (e.g.
    :class:`~.teacher.SparseImageFeatures` of a D=2 model). feature_channels: C; hidden, projection_dim:
    widths of the MLP ``Linear(C, hidden) → ReLU → Linear(hidden, projection_dim)``.
    """

    def __init__(self, network: nn.Module, feature_channels: int, hidden: int = 128, projection_dim: int = 64,
                 temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0 or min(feature_channels, hidden, projection_dim) < 1:
            raise ValueError(f"ContrastiveLearner: expected widths >= 1 and temperature > 0, got "
                             f"{feature_channels}, {hidden}, {projection_dim}, {temperature}")
        self.network = network
        self.projector = nn.Sequential(nn.Linear(feature_channels, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, projection_dim))
        self.temperature = temperature

    def forward(self, view1: Tensor, view2: Tensor, grid1: Tensor, grid2: Tensor) -> Tensor:
        """Symmetric InfoNCE of the B x K sampled locations. views (B, 3, h, w); grids (B, K, 2) → scalar."""
        maps = self.network(torch.cat([view1, view2]))
        feats = F.grid_sample(maps, torch.cat([grid1, grid2])[:, None], mode="bilinear", padding_mode="border",
                              align_corners=False)[:, :, 0]  # (2B, C, K)
        z = self.projector(feats.permute(0, 2, 1).reshape(-1, maps.shape[1]))
        z1, z2 = z.chunk(2)
        return 0.5 * (info_nce(z1, z2, self.temperature) + info_nce(z2, z1, self.temperature))


@dataclass(frozen=True)
class ContrastiveSchedule:
    """Optimisation of :func:`train_contrastive`: ``steps`` AdamW steps (cosine LR from ``lr``) of
    ``batch_size`` images (distinct within a batch when the source has that many), ``samples_per_image``
    locations each; step ``s`` draws its images and augmentations from ``(seed, s)`` only."""

    steps: int = 100
    batch_size: int = 16
    lr: float = 0.002
    weight_decay: float = 1e-4
    samples_per_image: int = 64
    seed: int = 0
    augmentation: Augmentation = Augmentation()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.samples_per_image < 1 or self.lr <= 0 \
                or self.weight_decay < 0:
            raise ValueError(f"ContrastiveSchedule: expected steps, batch_size, samples_per_image >= 1, lr > 0, "
                             f"weight_decay >= 0; got {self}")


def _step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator depending only on ``(seed, step)``."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def contrastive_step(learner: ContrastiveLearner, optimizer: torch.optim.Optimizer,
                     batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> float:
    """One optimiser step on ``batch`` (:func:`contrastive_batch`, on the learner's device); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = learner(*batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_contrastive(learner: ContrastiveLearner, images: ImageSource, schedule: ContrastiveSchedule,
                      progress: bool = False) -> list[float]:
    """Train ``learner`` in place on ``images`` (no labels: nothing but ``len`` and ``images[i]`` is used).

    Returns the loss of every step. progress: a ``tqdm`` bar with the loss on stderr.
    """
    if len(images) == 0:
        raise ValueError("train_contrastive: the image source is empty")
    device = next(learner.parameters()).device
    optimizer = torch.optim.AdamW(learner.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = WarmupLR(optimizer, schedule.steps, "cosine")
    learner.train()
    history = []
    bar = tqdm(range(schedule.steps), desc="contrastive teacher", disable=not progress, dynamic_ncols=True)
    for step in bar:
        generator = _step_generator(schedule.seed, step)
        indices = torch.randperm(len(images), generator=generator)[:schedule.batch_size]
        if len(indices) < schedule.batch_size:  # fewer images than a batch: repeat them
            indices = indices.repeat(math.ceil(schedule.batch_size / len(indices)))[:schedule.batch_size]
        batch = contrastive_batch(images, indices.tolist(), schedule.augmentation, schedule.samples_per_image,
                                  generator)
        history.append(contrastive_step(learner, optimizer, tuple(t.to(device) for t in batch)))
        scheduler.step()
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history


# ---------------------------------------------------------------------------------------------
# the teacher entry


def _plain(value: Any) -> Any:
    """Tuples → lists, recursively (checkpoint settings compare as plain YAML-like data)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@TEACHERS.register
def Contrastive(checkpoint: str, images: str, model: Mapping[str, Any], steps: int = 100, batch_size: int = 16,
                lr: float = 0.002, weight_decay: float = 1e-4, temperature: float = 0.2,
                samples_per_image: int = 64, hidden: int = 128, projection_dim: int = 64,
                crop_size: Sequence[int] = (32, 96), scale: Sequence[float] = (0.2, 1.0), seed: int = 0,
                device: Optional[str] = None) -> ImageTeacher:
    """A label-free teacher: the D=2 pcseg ``model`` (as :class:`~.teacher.SparseImageFeatures`, C =
    ``feature_channels``) trained by :func:`train_contrastive` on the images matching ``images`` (an
    :class:`ImageFiles` pattern), frozen.

    checkpoint: where the trained teacher is kept. When it exists and holds the same settings it is
    loaded without reading a single image; other settings raise :class:`InputError` (delete the file
    or name another one). Otherwise the teacher trains on ``device`` (None: CUDA when available) and
    the checkpoint is written atomically at the end. The other arguments are
    :class:`ContrastiveLearner`'s, :class:`ContrastiveSchedule`'s and :class:`Augmentation`'s.
    """
    aug = Augmentation(crop_size=tuple(crop_size), scale=tuple(scale))
    schedule = ContrastiveSchedule(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                   samples_per_image=samples_per_image, seed=seed, augmentation=aug)
    with torch.random.fork_rng(devices=[]):  # initial weights from ``seed``; the caller's generator untouched
        torch.manual_seed(seed)
        net = build_model(dict(model))
        learner = ContrastiveLearner(SparseImageFeatures(net), net.feature_channels, hidden, projection_dim,
                                     temperature)
    settings = _plain({"images": images, "model": dict(model), "temperature": temperature, "hidden": hidden,
                       "projection_dim": projection_dim, **dataclasses.asdict(schedule)})
    path = Path(checkpoint)
    if path.is_file():
        saved = load_checkpoint(path)
        if saved.get("kind") != CHECKPOINT_KIND:
            raise InputError(f"{path}: kind: expected a contrastive teacher checkpoint ({CHECKPOINT_KIND!r}), "
                             f"found {saved.get('kind')!r}")
        changed = config_diff(saved["settings"], settings)
        if changed:
            listing = "; ".join(f"{key}: {old!r} there, {new!r} asked" for key, (old, new) in changed.items())
            raise InputError(f"{path}: settings: expected a teacher trained with the settings asked for, found "
                             f"other ones ({listing}); delete the file to retrain, or name another checkpoint")
        net.load_state_dict(saved["model"])
    else:
        source = ImageFiles(images)
        target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        history = train_contrastive(learner.to(target), source, schedule, progress=True)
        learner.cpu()
        save_checkpoint({"kind": CHECKPOINT_KIND, "settings": settings, "model": net.state_dict(),
                         "projector": learner.projector.state_dict(), "history": history,
                         "images": [str(p) for p in source.paths]}, path)
    return ImageTeacher(SparseImageFeatures(net), out_channels=net.feature_channels)
