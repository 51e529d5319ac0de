"""Write synthetic street sequences in the SemanticKITTI raw layout (see
:mod:`pcseg.data.formats.semantickitti`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ..formats.semantickitti import (
    SEMANTICKITTI_LABELS,
    SEMANTICKITTI_LEARNING_MAP,
    SEMANTICKITTI_LEARNING_MAP_INV,
    SEMANTICKITTI_SPLITS,
)
from .outdoor import LidarSweep, generate_street, image_size, kitti_calibration, lidar_sweep, render_camera

__all__ = ["write_semantickitti_sequence", "write_semantickitti_yaml", "make_semantickitti"]

_FRAME_STEP = 1.0  # m driven between frames (10 Hz at 36 km/h)


def _row_major(matrix: np.ndarray) -> str:
    """Matrix values in row-major order, space separated."""
    return " ".join(f"{v:.12e}" for v in np.asarray(matrix).ravel())


def _matrix_line(key: str, matrix: np.ndarray) -> str:
    return f"{key}: {_row_major(matrix)}\n"


def _write_calib(path: Path, calib: dict[str, np.ndarray]) -> None:
    """calib.txt in the SemanticKITTI form: P0..P3 (3x4) and Tr (3x4), one row-major line each."""
    p2 = calib["P2"]
    k = p2[:, :3]
    focal = k[0, 0]
    cameras = {"P0": np.c_[k, np.zeros(3)], "P1": np.c_[k, [-0.54 * focal, 0, 0]], "P2": p2,
               "P3": np.c_[k, [-0.48 * focal, 0, 0]]}
    lines = [_matrix_line(name, m) for name, m in cameras.items()]
    path.write_text("".join(lines) + _matrix_line("Tr", calib["Tr"][:3]))


def write_semantickitti_yaml(root: str | Path) -> None:
    """``<root>/semantic-kitti.yaml`` with the standard labels, learning maps and splits."""
    content = {
        "labels": SEMANTICKITTI_LABELS,
        "learning_map": SEMANTICKITTI_LEARNING_MAP,
        "learning_map_inv": SEMANTICKITTI_LEARNING_MAP_INV,
        "split": {"train": [int(s) for s in SEMANTICKITTI_SPLITS["train"]],
                  "valid": [int(s) for s in SEMANTICKITTI_SPLITS["val"]],
                  "test": [int(s) for s in SEMANTICKITTI_SPLITS["test"]]},
    }
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / "semantic-kitti.yaml").write_text(yaml.safe_dump(content, sort_keys=False))


def write_semantickitti_sequence(root: str | Path, seq: str, rng: np.random.Generator, num_frames: int,
                                 azimuth_steps: int = 2048, image_scale: float = 0.5) -> dict[str, LidarSweep]:
    """Drive along one generated street and write ``<root>/sequences/<seq>/``.

    Writes ``velodyne/<frame>.bin``, ``labels/<frame>.label`` (raw ids, instance << 16),
    ``image_2/<frame>.png`` (``IMAGE_SIZE`` x ``image_scale``, ``P2`` scaled to match),
    ``calib.txt``, ``poses.txt`` (camera-0 poses in the first frame's camera-0 frame) and
    ``times.txt``.

    Returns:
        scene name ``<seq>/<frame>`` -> the sweep that was written (the oracle).
    """
    folder = Path(root) / "sequences" / seq
    for sub in ("velodyne", "labels", "image_2"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    street = generate_street(rng, length=num_frames * _FRAME_STEP)
    calib = kitti_calibration(image_scale)
    _write_calib(folder / "calib.txt", calib)
    tr, tr_inv = calib["Tr"], np.linalg.inv(calib["Tr"])
    sweeps, poses = {}, []
    for i in range(num_frames):
        x = i * _FRAME_STEP
        frame = f"{i:06d}"
        sweep = lidar_sweep(street, x, rng, azimuth_steps)
        np.c_[sweep.points, sweep.remission].astype("<f4").tofile(folder / "velodyne" / f"{frame}.bin")
        (sweep.label | (sweep.instance << 16)).astype("<u4").tofile(folder / "labels" / f"{frame}.label")
        image = render_camera(street, x, calib, image_size(image_scale), rng)
        Image.fromarray(image).save(folder / "image_2" / f"{frame}.png")
        motion = np.eye(4)
        motion[0, 3] = x
        poses.append(_row_major((tr @ motion @ tr_inv)[:3]) + "\n")
        sweeps[f"{seq}/{frame}"] = sweep
    (folder / "poses.txt").write_text("".join(poses))
    (folder / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(num_frames)))
    return sweeps


def make_semantickitti(out: str | Path, num_frames: int, seed: int, sequences: tuple[str, ...] = ("00", "08"),
                       azimuth_steps: int = 2048, image_scale: float = 0.5) -> dict[str, LidarSweep]:
    """Write ``num_frames`` frames for each of ``sequences`` (one street each) plus semantic-kitti.yaml.

    Sequence ``s`` depends only on ``(seed, int(s))``.

    Returns:
        scene name -> the written sweep.
    """
    write_semantickitti_yaml(out)
    sweeps = {}
    for seq in sequences:
        sweeps.update(write_semantickitti_sequence(out, seq, np.random.default_rng([seed, int(seq)]), num_frames,
                                                   azimuth_steps, image_scale))
    return sweeps
