"""SLidR (CVPR'22): image-to-LiDAR superpixel-driven distillation as a :class:`MethodHooks` plug-in.

Per batch (:mod:`pcseg.data.lidar_camera` samples):

- 3D: backbone ``forward_features`` → 1x1 head (``nn.Linear``) to ``projection_dim`` → L2-normalised
  per voxel → read per point through ``inverse``;
- 2D: frozen :class:`~.teacher.ImageTeacher` on the images → 1x1 ``nn.Conv2d`` head to
  ``projection_dim`` → bilinear upsampling to the image size → L2-normalised per pixel;
- ``pooling: superpixel`` (SLidR): both averaged per superpixel (:mod:`.pooling`); the superpixels
  holding at least one point enter :func:`~.losses.info_nce` (temperature 0.07), logged as ``nce``;
- ``pooling: point`` (the paper's ablation without superpixels, PPKT-style): up to ``num_matches``
  points with a pixel, each point's feature against its pixel's feature, the other sampled points
  as negatives (:func:`~.losses.point_info_nce`), logged as ``nce``.

The model the trainer trains is a :class:`SLidRModel`: the backbone, the two heads and the frozen
teacher in one module, whose ``forward`` computes both embeddings, so DistributedDataParallel
synchronises the backbone's and the heads' gradients. The teacher has ``requires_grad`` False (the
optimiser and DDP's all-reduce skip it; DDP gives every process rank 0's copy when it is built and
broadcasts its BatchNorm buffers, unchanged in eval mode, before each forward) and is rebuilt from
``method.teacher`` rather than checkpointed. The backbone's classifier ``head`` takes no part and
is frozen. Optimiser groups: the trained backbone parameters at ``train.lr``, the heads' at
``head_lr``. Checkpoints hold the backbone as ``"model"`` (exported as ``backbone.pth``) and the
heads as ``"method": {"heads": …}``.

With ``torchrun`` the superpixel rows of every process are gathered
(:func:`pcseg.engine.distributed.gather_rows`, differentiable) before the InfoNCE, so the negatives
are those of the joined batch and two processes compute the loss and gradients of one process on
the joined batch. ``pooling: point`` samples ``num_matches`` pairs per process and its InfoNCE
stays per process (its negatives come from the process's own batch).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from pcseg.data.lidar_camera import CAMERA_BATCH_KEYS
from pcseg.engine.distributed import gather_rows, unwrap_model
from pcseg.engine.hooks import MethodHooks, MethodModel, TrainState, sparse_input
from pcseg.methods.registry import METHODS

from .losses import info_nce, point_info_nce
from .pooling import pool_image_features, superpixel_pool
from .teacher import ImageTeacher, build_teacher
from .teacher_cache import CachedTeacher

__all__ = ["SLidR", "SLidRModel"]


class SLidRModel(MethodModel):
    """The backbone, the heads ``heads["points"]`` (Linear), ``heads["pixels"]`` (1x1 Conv2d), the frozen ``teacher``.

    The backbone's classifier ``backbone.head`` is frozen (never used). ``teacher`` is rebuilt from
    the config, not checkpointed (:attr:`MethodModel.rebuilt`).
    """

    rebuilt = ("teacher",)

    def __init__(self, backbone: nn.Module, teacher: ImageTeacher | CachedTeacher, projection_dim: int) -> None:
        super().__init__(backbone)
        classifier = getattr(backbone, "head", None)
        if isinstance(classifier, nn.Module):
            classifier.requires_grad_(False)
        self.heads = nn.ModuleDict({
            "points": nn.Linear(backbone.feature_channels, projection_dim),
            "pixels": nn.Conv2d(teacher.out_channels, projection_dim, kernel_size=1),
        })
        self.teacher = teacher

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """Per-point (ΣN, D) and per-pixel (B, D, H, W) L2-normalised projected features of a camera batch."""
        voxels = self.heads["points"](self.backbone.forward_features(sparse_input(batch)).F)
        points = F.normalize(voxels.float(), dim=1)[batch["inverse"]]
        images = batch["images"]
        maps = self.heads["pixels"](self.teacher(images.float() / 255.0))
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return points, F.normalize(maps.float(), dim=1)


@METHODS.register
class SLidR(MethodHooks):
    """Superpixel-driven image-to-LiDAR distillation (see the module docstring).

    teacher: an ``nn.Module`` mapping images (B, 3, H, W) in [0, 1] to feature maps, or a config
        mapping naming a :data:`~.teacher.TEACHERS` entry (``{name: ResNet50, weights: …}``).
    projection_dim: output width of both heads (paper: 64). temperature: InfoNCE temperature (0.07).
    head_lr: learning rate of the two heads; None = ``train.lr``.
    teacher_cache: keep the teacher's feature maps of this many images in memory (a
        :class:`~.teacher_cache.CachedTeacher`), so a frame seen again skips the 2D forward; 0: none.
    pooling: ``superpixel`` (SLidR) or ``point`` (PPKT-style point-pixel pairs, no superpixels).
    num_matches: ``point`` only: pairs sampled per batch from torch's global generator (SLidR's
        PPKT: 4096); None: every point with a pixel.
    """

    def __init__(self, teacher: Mapping[str, Any] | nn.Module, projection_dim: int = 64, temperature: float = 0.07,
                 head_lr: Optional[float] = None, teacher_cache: int = 0,
                 pooling: Literal["superpixel", "point"] = "superpixel", num_matches: Optional[int] = 4096) -> None:
        if not isinstance(teacher, nn.Module) and not (isinstance(teacher, Mapping) and "name" in teacher):
            raise ValueError(f"SLidR.teacher: expected an nn.Module or a mapping with a 'name' "
                             f"(e.g. {{name: ResNet50, weights: <file>}}), got {teacher!r}")
        if projection_dim < 1 or temperature <= 0 or (head_lr is not None and head_lr <= 0) or teacher_cache < 0:
            raise ValueError(f"SLidR: expected projection_dim >= 1, temperature > 0, head_lr > 0 or None, "
                             f"teacher_cache >= 0; got {projection_dim}, {temperature}, {head_lr}, {teacher_cache}")
        if pooling not in ("superpixel", "point"):
            raise ValueError(f"SLidR.pooling: expected 'superpixel' or 'point', got {pooling!r}")
        if num_matches is not None and num_matches < 1:
            raise ValueError(f"SLidR.num_matches: expected >= 1 or None, got {num_matches}")
        self.teacher_spec = teacher
        self.pooling = pooling
        self.num_matches = num_matches
        self.projection_dim = projection_dim
        self.temperature = float(temperature)
        self.head_lr = head_lr
        self.teacher_cache = teacher_cache

    def wrap(self, backbone: nn.Module) -> SLidRModel:
        """The backbone with the heads and the teacher (built here, on the backbone's device, from ``teacher``)."""
        device = next(backbone.parameters()).device
        teacher: ImageTeacher | CachedTeacher = build_teacher(self.teacher_spec).to(device)
        if self.teacher_cache:
            teacher = CachedTeacher(teacher, self.teacher_cache)
        return SLidRModel(backbone, teacher, self.projection_dim).to(device)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Groups: the trained backbone parameters (``train.lr``), the heads (``head_lr``)."""
        if not isinstance(model, SLidRModel):
            raise TypeError(f"SLidR: expected the SLidRModel of SLidR.wrap(backbone) (build_trainer makes it), "
                            f"got {type(model).__name__}")
        heads = {"params": list(model.heads.parameters())}
        if self.head_lr is not None:
            heads["lr"] = self.head_lr
        return [{"params": [p for p in model.backbone.parameters() if p.requires_grad]}, heads]

    def losses(self, model: nn.Module, batch: Mapping[str, Any], state: TrainState) -> dict[str, Tensor]:
        missing = [k for k in CAMERA_BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"SLidR needs camera data but the batch lacks {', '.join(missing)}; use data.name: "
                           f"LidarCamera (pcseg.data.lidar_camera) with kwargs.dataset naming the LiDAR dataset")
        if not isinstance(unwrap_model(model), SLidRModel):
            raise TypeError(f"SLidR: expected the SLidRModel of SLidR.wrap(backbone) (build_trainer makes it), "
                            f"got {type(unwrap_model(model)).__name__}")
        points, pixels = model(batch)
        if self.pooling == "point":
            image_index = batch["coords"][batch["inverse"], 0].long()
            return {"nce": point_info_nce(points, pixels, image_index, batch["pixel"], self.temperature,
                                          self.num_matches)}
        count = batch["num_superpixels"]
        pooled_points, point_counts = superpixel_pool(points, batch["point_superpixel"], count)
        pooled_pixels, pixel_counts = pool_image_features(pixels, batch["superpixels"], count)
        keep = (point_counts > 0) & (pixel_counts > 0)
        return {"nce": info_nce(gather_rows(pooled_points[keep]), gather_rows(pooled_pixels[keep]), self.temperature)}
