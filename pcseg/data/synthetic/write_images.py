"""Write synthetic street camera images in the image-folder layout (D=2 segmentation).

Layout written (read by :class:`pcseg.data.datasets.ImageFolderReader`)::

    <out>/<split>/images/<name>.png    RGB, (H, W, 3) uint8
    <out>/<split>/labels/<name>.png    (H, W) uint8: SemanticKITTI train ids 0..18, 255 = ignore

Each image is the front camera of a freshly generated street (:mod:`.outdoor`) at a random
position along it, rendered small (default 160 x 48: the KITTI intrinsics scaled by 160 / 1241) so
that training on a handful of images takes seconds. Labels are what each pixel sees, mapped
through the SemanticKITTI learning map; sky and surfaces without a class (learning id 0) are 255.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..formats.semantickitti import SEMANTICKITTI_LEARNING_MAP
from .outdoor import IMAGE_SIZE, generate_street, image_size, kitti_calibration, render_camera_labels

__all__ = ["IGNORE_LABEL", "StreetImage", "render_street_image", "write_image_folder"]

IGNORE_LABEL = 255
"""Label-map value of pixels that are not trained on or evaluated (``ImageFolderReader``'s default)."""

_STREET_LENGTH = 20.0  # m; the camera stands somewhere along it, the street extends 80 m beyond


def _train_id_table() -> np.ndarray:
    """(max raw id + 1,) uint8: raw SemanticKITTI id -> train id, IGNORE_LABEL for learning id 0."""
    table = np.full(max(SEMANTICKITTI_LEARNING_MAP) + 1, IGNORE_LABEL, dtype=np.uint8)
    for raw, learning_id in SEMANTICKITTI_LEARNING_MAP.items():
        if learning_id > 0:
            table[raw] = learning_id - 1
    return table


_TRAIN_ID = _train_id_table()


@dataclass
class StreetImage:
    """One rendered camera image and its label map (what was written; the oracle for tests).

    Attributes:
        image: (H, W, 3) uint8 RGB.
        label: (H, W) uint8 train ids 0..18, :data:`IGNORE_LABEL` where unlabelled.
    """

    image: np.ndarray
    label: np.ndarray


def render_street_image(rng: np.random.Generator, width: int = 160) -> StreetImage:
    """Generate a street and render its front camera at ``width`` x ``round(376 * width / 1241)`` pixels."""
    if width < 8:
        raise ValueError(f"render_street_image: width expected >= 8 pixels, got {width}")
    scale = width / IMAGE_SIZE[0]
    street = generate_street(rng, length=_STREET_LENGTH)
    x = rng.uniform(0.0, _STREET_LENGTH)
    image, raw = render_camera_labels(street, x, kitti_calibration(scale), image_size(scale), rng)
    return StreetImage(image, _TRAIN_ID[raw])


def _split_sizes(num_images: int) -> dict[str, int]:
    """The last quarter of the images (at least one when there are two or more) form the val split."""
    num_val = (num_images + 3) // 4 if num_images > 1 else 0
    return {"train": num_images - num_val, "val": num_val}


def write_image_folder(out: str | Path, num_images: int, seed: int,
                       width: int = 160) -> dict[str, dict[str, StreetImage]]:
    """Write ``num_images`` street images ``street0000``... under ``out`` (train, then val).

    The last quarter (at least one when there are two or more) form the val split, as in
    :func:`~pcseg.data.synthetic.make_scannet`. Image ``i`` depends only on ``(seed, i)``.

    Returns:
        split -> image name -> the written :class:`StreetImage`.
    """
    if num_images < 1:
        raise ValueError(f"write_image_folder: num_images expected >= 1, got {num_images}")
    out = Path(out)
    written: dict[str, dict[str, StreetImage]] = {}
    index = 0
    for split, count in _split_sizes(num_images).items():
        written[split] = {}
        for sub in ("images", "labels"):
            (out / split / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(count):
            name = f"street{index:04d}"
            rendered = render_street_image(np.random.default_rng([seed, index]), width)
            Image.fromarray(rendered.image).save(out / split / "images" / f"{name}.png")
            Image.fromarray(rendered.label).save(out / split / "labels" / f"{name}.png")
            written[split][name] = rendered
            index += 1
    return written
