"""A tiny image dataset (the D=2 ImageFolder layout) and a config that trains on it in seconds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

NUM_CLASSES = 3
REPO = Path(__file__).resolve().parents[2]


def write_images(root: Path, split: str, count: int, size: int = 24, seed: int = 0) -> None:
    """``count`` images whose class is the colour channel that dominates each of a few rectangles."""
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = rng.integers(0, NUM_CLASSES, size=(size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
        image = rng.integers(0, 60, size=(size, size, 3))
        image[np.arange(size)[:, None], np.arange(size)[None, :], label] += 180
        label = label.astype(np.uint8)
        label[rng.random((size, size)) < 0.05] = 255  # some unlabelled pixels
        Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"img{i:02d}.png")
        Image.fromarray(label).save(root / split / "labels" / f"img{i:02d}.png")


def write_config(tmp: Path, num_train: int = 6, **train: object) -> Path:
    """Images under ``tmp/data`` and ``tmp/tiny.yaml``: MinkUNet14A (D=2), SGD, deterministic.

    ``train`` entries override the config's train section.
    """
    data = tmp / "data"
    write_images(data, "train", num_train, seed=0)
    write_images(data, "val", 2, seed=1)
    cfg = {
        "data": {"name": "ImageFolder", "kwargs": {"root": str(data), "num_classes": NUM_CLASSES},
                 "train": {"split": "train", "transforms": [{"name": "RandomFlip"}]},
                 "val": {"split": "val"}, "batch_size": 2},
        "model": {"name": "MinkUNet14A", "in_channels": 3, "num_classes": NUM_CLASSES, "D": 2},
        "train": {"epochs": 2, "lr": 0.02, "warmup_iters": 1, "log_period": 1, **train},
        "eval": {"period": 1},
        "deterministic": True,
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
