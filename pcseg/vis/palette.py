"""Class colour palettes and the label -> RGB mapping used by every pcseg picture and PLY file.

A palette is a read-only ``(C, 3) uint8`` array: row ``c`` is the RGB colour of train id ``c``.
The dataset palettes are the official or customary ones of each benchmark, so a pcseg picture reads
like the figures users already know: ScanNet's NYU40 colours (``create_color_palette`` of the ScanNet
repository's ``BenchmarkScripts/util.py``) at the 20 benchmark ids, the S3DIS colours common to
MMDetection3D and others, and SemanticKITTI's ``color_map`` of ``semantic-kitti.yaml`` (stored
there as BGR, here as RGB) at the classes of ``learning_map_inv``. Points whose label is ``ignore_index``
are drawn in :data:`IGNORE_COLOR` grey.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

__all__ = [
    "IGNORE_COLOR",
    "IGNORE_LEGEND_NAME",
    "ERROR_CORRECT_COLOR",
    "ERROR_WRONG_COLOR",
    "ERROR_IGNORED_COLOR",
    "SCANNET20_PALETTE",
    "S3DIS13_PALETTE",
    "SEMANTICKITTI19_PALETTE",
    "PALETTES",
    "generic_palette",
    "get_palette",
    "colorize",
    "to_colors",
    "error_colors",
    "legend_entries",
]

IGNORE_COLOR = (128, 128, 128)
"""RGB of points labelled ``ignore_index``."""

IGNORE_LEGEND_NAME = "ignored"
"""Name of the legend entry of :data:`IGNORE_COLOR` (:func:`legend_entries`)."""

ERROR_CORRECT_COLOR = (150, 150, 150)
ERROR_WRONG_COLOR = (220, 30, 30)
ERROR_IGNORED_COLOR = (215, 215, 215)
"""RGB of correct, wrong and ignored points in :func:`error_colors`."""


def _table(rows: list[tuple[int, int, int]]) -> np.ndarray:
    out = np.array(rows, dtype=np.uint8)
    out.flags.writeable = False
    return out


SCANNET20_PALETTE = _table([
    (174, 199, 232),  # wall
    (152, 223, 138),  # floor
    (31, 119, 180),   # cabinet
    (255, 187, 120),  # bed
    (188, 189, 34),   # chair
    (140, 86, 75),    # sofa
    (255, 152, 150),  # table
    (214, 39, 40),    # door
    (197, 176, 213),  # window
    (148, 103, 189),  # bookshelf
    (196, 156, 148),  # picture
    (23, 190, 207),   # counter
    (247, 182, 210),  # desk
    (219, 219, 141),  # curtain
    (255, 127, 14),   # refrigerator
    (158, 218, 229),  # shower curtain
    (44, 160, 44),    # toilet
    (112, 128, 144),  # sink
    (227, 119, 194),  # bathtub
    (82, 84, 163),    # otherfurniture
])
"""(20, 3) uint8: the ScanNet NYU40 colours of the 20 benchmark classes, in train-id order."""

S3DIS13_PALETTE = _table([
    (0, 255, 0),      # ceiling
    (0, 0, 255),      # floor
    (0, 255, 255),    # wall
    (255, 255, 0),    # beam
    (255, 0, 255),    # column
    (100, 100, 255),  # window
    (200, 200, 100),  # door
    (170, 120, 200),  # table
    (255, 0, 0),      # chair
    (200, 100, 100),  # sofa
    (10, 200, 100),   # bookcase
    (200, 200, 200),  # board
    (50, 50, 50),     # clutter
])
"""(13, 3) uint8: the usual S3DIS class colours, in train-id order (ceiling ... clutter)."""

SEMANTICKITTI19_PALETTE = _table([
    (100, 150, 245),  # car
    (100, 230, 245),  # bicycle
    (30, 60, 150),    # motorcycle
    (80, 30, 180),    # truck
    (0, 0, 255),      # other-vehicle
    (255, 30, 30),    # person
    (255, 40, 200),   # bicyclist
    (150, 30, 90),    # motorcyclist
    (255, 0, 255),    # road
    (255, 150, 255),  # parking
    (75, 0, 75),      # sidewalk
    (175, 0, 75),     # other-ground
    (255, 200, 0),    # building
    (255, 120, 50),   # fence
    (0, 175, 0),      # vegetation
    (135, 60, 0),     # trunk
    (150, 240, 80),   # terrain
    (255, 240, 150),  # pole
    (255, 0, 0),      # traffic-sign
])
"""(19, 3) uint8: ``semantic-kitti.yaml`` colours (as RGB) of the 19 classes, in train-id order."""

PALETTES = {
    "scannet": SCANNET20_PALETTE,
    "s3dis": S3DIS13_PALETTE,
    "semantickitti": SEMANTICKITTI19_PALETTE,
}
"""Dataset name -> palette."""


def generic_palette(num_classes: int) -> np.ndarray:
    """Distinct colours for any class count: hues stepped by the golden ratio, two shades.

    Returns:
        (num_classes, 3) uint8; the same ``num_classes`` always gives the same colours, and the
        first ``k`` rows do not depend on ``num_classes``.
    """
    if num_classes < 1:
        raise ValueError(f"generic_palette: num_classes expected >= 1, got {num_classes}")
    rows = []
    for c in range(num_classes):
        hue = (0.05 + c * 0.618033988749895) % 1.0
        saturation, value = (0.75, 0.95) if c % 2 == 0 else (0.55, 0.7)
        rows.append(tuple(round(255 * x) for x in colorsys.hsv_to_rgb(hue, saturation, value)))
    return _table(rows)


def get_palette(name_or_num_classes: str | int) -> np.ndarray:
    """A dataset palette by name (``scannet``, ``s3dis``, ``semantickitti``) or a generic one by size.

    Returns:
        (C, 3) uint8, read-only.
    """
    if isinstance(name_or_num_classes, str):
        try:
            return PALETTES[name_or_num_classes.lower()]
        except KeyError:
            raise KeyError(f"palette {name_or_num_classes!r} unknown; known: {', '.join(PALETTES)} "
                           f"(or pass a class count for a generic palette)") from None
    return generic_palette(int(name_or_num_classes))


def _labels_array(labels: object, name: str) -> np.ndarray:
    out = np.asarray(labels)
    if out.ndim != 1 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"{name}: expected (N,) integer labels, got shape {out.shape} dtype {out.dtype}")
    return out.astype(np.int64, copy=False)


def colorize(labels: object, palette: np.ndarray | None = None, ignore_index: int = -100) -> np.ndarray:
    """Colour each point by its class.

    Args:
        labels: (N,) integer class ids (numpy or CPU torch), each in ``[0, C)`` or ``ignore_index``.
        palette: (C, 3) uint8; ``None`` takes :func:`generic_palette` sized to the largest label.
        ignore_index: label drawn in :data:`IGNORE_COLOR`.

    Returns:
        (N, 3) uint8 RGB.
    """
    labels = _labels_array(labels, "colorize")
    valid = labels != ignore_index
    if palette is None:
        palette = generic_palette(int(labels[valid].max()) + 1 if valid.any() else 1)
    palette = np.asarray(palette)
    if palette.ndim != 2 or palette.shape[1] != 3 or palette.dtype != np.uint8:
        raise ValueError(f"colorize: palette expected (C, 3) uint8, got shape {palette.shape} dtype {palette.dtype}")
    bad = valid & ((labels < 0) | (labels >= len(palette)))
    if bad.any():
        raise ValueError(f"colorize: {int(bad.sum())} labels outside [0, {len(palette)}) and not "
                         f"ignore_index={ignore_index}, e.g. {int(labels[bad][0])}")
    out = np.empty((len(labels), 3), dtype=np.uint8)
    out[valid] = palette[labels[valid]]
    out[~valid] = IGNORE_COLOR
    return out


def to_colors(colors_or_labels: object, palette: np.ndarray | None = None, ignore_index: int = -100) -> np.ndarray:
    """Per-point RGB from either colours or labels.

    Args:
        colors_or_labels: (N, 3) colours (uint8 0..255, or floats in [0, 1]) or (N,) integer
            labels coloured by :func:`colorize` with ``palette`` and ``ignore_index``.

    Returns:
        (N, 3) uint8 RGB.
    """
    values = np.asarray(colors_or_labels)
    if values.ndim == 1:
        return colorize(values, palette, ignore_index)
    if values.ndim != 2 or values.shape[1] != 3:
        raise ValueError(f"expected (N,) labels or (N, 3) colours, got shape {values.shape}")
    if np.issubdtype(values.dtype, np.floating):
        if values.size and (values.min() < 0 or values.max() > 1):
            raise ValueError(f"float colours expected in [0, 1], got [{values.min()}, {values.max()}]")
        return np.round(values * 255).astype(np.uint8)
    if values.dtype != np.uint8 and values.size and (values.min() < 0 or values.max() > 255):
        raise ValueError(f"integer colours expected in [0, 255], got [{values.min()}, {values.max()}]")
    return values.astype(np.uint8)


def error_colors(pred: object, target: object, ignore_index: int = -100) -> np.ndarray:
    """The error map of a prediction: correct points grey, wrong ones red, ignored ones light grey.

    Args:
        pred, target: (N,) integer class ids; points with ``target == ignore_index`` are ignored.

    Returns:
        (N, 3) uint8 RGB.
    """
    pred = _labels_array(pred, "error_colors: pred")
    target = _labels_array(target, "error_colors: target")
    if pred.shape != target.shape:
        raise ValueError(f"error_colors: pred has {len(pred)} points, target {len(target)}")
    out = np.empty((len(pred), 3), dtype=np.uint8)
    out[:] = ERROR_CORRECT_COLOR
    out[pred != target] = ERROR_WRONG_COLOR
    out[target == ignore_index] = ERROR_IGNORED_COLOR
    return out


def legend_entries(label_arrays: Sequence[object], class_names: Sequence[str], palette: np.ndarray,
                   ignore_index: int = -100) -> list[tuple[str, tuple[int, int, int]]]:
    """The legend of the classes present in a picture: ``(name, (r, g, b))`` per class.

    Args:
        label_arrays: the (N_i,) integer label arrays drawn (e.g. prediction and ground truth).
        class_names: name of each class id, ``len(palette)`` of them.
        palette: (C, 3) uint8 colours of the class ids.
        ignore_index: label drawn in :data:`IGNORE_COLOR`.

    Returns:
        One entry per class id present in any array, in id order, then ``("ignored", IGNORE_COLOR)``
        when some label is ``ignore_index``; absent classes have no entry.
    """
    palette = np.asarray(palette)
    if len(class_names) != len(palette):
        raise ValueError(f"legend_entries: {len(class_names)} class names for a palette of {len(palette)} colours")
    labels = np.concatenate([np.zeros(0, dtype=np.int64)] +
                            [_labels_array(a, "legend_entries") for a in label_arrays])
    ignored = labels == ignore_index
    present = np.unique(labels[~ignored])
    bad = present[(present < 0) | (present >= len(palette))]
    if len(bad):
        raise ValueError(f"legend_entries: labels outside [0, {len(palette)}) and not ignore_index={ignore_index}, "
                         f"e.g. {int(bad[0])}")
    entries = [(class_names[c], tuple(int(v) for v in palette[c])) for c in present]
    if ignored.any():
        entries.append((IGNORE_LEGEND_NAME, IGNORE_COLOR))
    return entries
