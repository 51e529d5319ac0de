"""Point clouds to PNG pictures, headless: Open3D's offscreen renderer, or a matplotlib fallback.

Both backends draw the same picture: unlit class colours on white, seen through one orthographic
camera looking obliquely down (+z is up) and fitted to the cloud's bounding box, so a figure made
on a machine without a working Open3D lines up with one made with it.

A legend (a swatch and a name per class, :func:`pcseg.vis.palette.legend_entries`) can be added
below the picture. Open3D's renderer draws no text, so for either backend the legend is composed
into the PNG with PIL after rendering.

Open3D's renderer needs a Vulkan driver (on a machine without a GPU, Mesa's lavapipe: Debian
packages ``libvulkan1 mesa-vulkan-drivers``); without one it aborts the whole process rather than
raising. So the first render of a process starts it once in a short subprocess and caches the
answer (:func:`open3d_unavailable_reason`); when it fails, ``backend="auto"`` falls back to
matplotlib with a warning that names the reason.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .palette import to_colors
from ..utils.atomic import atomic_path

__all__ = ["View", "LegendEntry", "render", "render_panels", "open3d_unavailable_reason"]

Backend = Literal["auto", "open3d", "matplotlib"]
_BACKENDS = ("auto", "open3d", "matplotlib")

_PROBE_TIMEOUT_S = 120
_PROBE_CODE = """
import numpy as np, open3d as o3d
from open3d.visualization import rendering
renderer = rendering.OffscreenRenderer(16, 16)
cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.zeros((1, 3))))
renderer.scene.add_geometry("probe", cloud, rendering.MaterialRecord())
renderer.render_to_image()
renderer.scene.clear_geometry()
del renderer
"""

_TITLE_HEIGHT = 32
_TITLE_FONT_SIZE = 20
_SEPARATOR_COLOR = (200, 200, 200)

LegendEntry = tuple[str, Sequence[int]]
"""One legend row item: a class name and its RGB colour (3 ints in 0..255)."""

_LEGEND_FONT_SIZE = 16
_LEGEND_ROW = 26        # height of one row of entries, pixels
_LEGEND_SWATCH = 16     # side of a colour square, pixels
_LEGEND_PAD = 8         # border of the legend strip; also between a swatch and its name
_LEGEND_GAP = 22        # between one entry's name and the next swatch
_LEGEND_OUTLINE = (90, 90, 90)  # 1-pixel frame around each swatch, so light colours show on white


@dataclass(frozen=True)
class View:
    """Direction of the orthographic camera; the picture is always fitted to the cloud.

    Attributes:
        azimuth: degrees, the camera's direction from the scene centre, counter-clockwise about +z
            from +x.
        elevation: degrees above the xy plane, in (0, 90]; 90 looks straight down (+y up in the
            picture).
        margin: blank border as a fraction of the cloud's extent.
    """

    azimuth: float = -60.0
    elevation: float = 55.0
    margin: float = 0.04

    def __post_init__(self) -> None:
        if not 0 < self.elevation <= 90:
            raise ValueError(f"View: elevation expected in (0, 90] degrees, got {self.elevation}")
        if self.margin < 0:
            raise ValueError(f"View: margin expected >= 0, got {self.margin}")


@dataclass(frozen=True)
class _Camera:
    """An orthographic camera: unit axes ``right, up, forward``, picture half-extents in metres."""

    center: np.ndarray
    eye: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    half_width: float
    half_height: float
    near: float
    far: float

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3) points -> picture coordinates ``u`` (right), ``v`` (up) and ``depth``, each (N,)."""
        rel = points - self.center
        return rel @ self.right, rel @ self.up, rel @ self.forward


def _fit_camera(points: np.ndarray, view: View, width: int, height: int) -> _Camera:
    """The camera of ``view`` that frames the bounding box of (N, 3) ``points`` in width x height."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo)) / 2 or 1.0
    az, el = math.radians(view.azimuth), math.radians(view.elevation)
    to_eye = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    forward = -to_eye
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-6:  # straight down: +y is up in the picture
        right = np.array([1.0, 0.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    half_w = float(np.abs((corners - center) @ right).max()) or radius
    half_h = float(np.abs((corners - center) @ up).max()) or radius
    aspect = width / height
    half_w, half_h = max(half_w, half_h * aspect), max(half_h, half_w / aspect)
    scale = 1 + view.margin
    return _Camera(center=center, eye=center + 2 * radius * to_eye, right=right, up=up, forward=forward,
                   half_width=half_w * scale, half_height=half_h * scale, near=0.5 * radius, far=3.5 * radius)


@functools.cache
def open3d_unavailable_reason() -> str | None:
    """Why Open3D's offscreen renderer cannot run in this process, or ``None`` when it can.

    Starts the renderer once in a subprocess (a few seconds), since a failing start aborts the
    process; the answer is cached for the life of the process.
    """
    if importlib.util.find_spec("open3d") is None:
        return "open3d is not installed (pip install open3d-cpu)"
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_CODE], capture_output=True, text=True,
                              timeout=_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the renderer did not start within {_PROBE_TIMEOUT_S} s"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    detail = lines[-1] if lines else "no output"
    how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    return f"the renderer failed to start ({how}): {detail}"


def _choose_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend {backend!r} unknown; known: {', '.join(_BACKENDS)}")
    if backend == "matplotlib":
        return backend
    reason = open3d_unavailable_reason()
    if reason is None:
        return "open3d"
    if backend == "open3d":
        raise RuntimeError(f"Open3D offscreen rendering unavailable: {reason}")
    warnings.warn(f"Open3D offscreen rendering unavailable ({reason}); drawing with the matplotlib fallback",
                  RuntimeWarning, stacklevel=4)
    return "matplotlib"


@contextmanager
def _stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: Filament prints its start-up banner straight to it.

    Output of other threads to fd 1 meanwhile is lost too; nothing is silenced when fd 1 is closed.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _draw_open3d(points: np.ndarray, panels: list[np.ndarray], camera: _Camera, width: int, height: int,
                 point_size: float) -> list[np.ndarray]:
    import open3d as o3d
    from open3d.visualization import rendering

    material = rendering.MaterialRecord()
    material.shader = "defaultUnlit"
    material.point_size = point_size
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    images = []
    with _stdout_silenced(), o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        renderer = rendering.OffscreenRenderer(width, height)
        try:
            scene = renderer.scene
            scene.set_background([1.0, 1.0, 1.0, 1.0])
            scene.view.set_post_processing(False)  # no tone mapping: pixels keep the palette colours
            scene.camera.look_at(camera.center, camera.eye, camera.up)
            scene.camera.set_projection(rendering.Camera.Projection.Ortho, -camera.half_width, camera.half_width,
                                        -camera.half_height, camera.half_height, camera.near, camera.far)
            for colors in panels:
                cloud.colors = o3d.utility.Vector3dVector(colors / 255.0)
                scene.clear_geometry()
                scene.add_geometry("cloud", cloud, material)
                images.append(np.asarray(renderer.render_to_image())[..., :3].copy())
            scene.clear_geometry()
        finally:
            del renderer  # before interpreter exit, or Filament aborts while tearing down
    return images


def _draw_matplotlib(points: np.ndarray, panels: list[np.ndarray], camera: _Camera, width: int, height: int,
                     point_size: float) -> list[np.ndarray]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("pcseg.vis: the matplotlib fallback needs matplotlib (pip install matplotlib)") from err
    u, v, depth = camera.project(points)
    order = np.argsort(-depth, kind="stable")  # far to near: near points are drawn on top
    dpi = 100
    marker_area = (point_size * 72 / dpi) ** 2  # scatter sizes are in points^2
    images = []
    for colors in panels:
        figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
        axes = figure.add_axes((0, 0, 1, 1))
        axes.set_axis_off()
        axes.set_xlim(-camera.half_width, camera.half_width)
        axes.set_ylim(-camera.half_height, camera.half_height)
        axes.scatter(u[order], v[order], s=marker_area, c=colors[order] / 255.0, marker="s", linewidths=0)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        images.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    return images


_DRAW = {"open3d": _draw_open3d, "matplotlib": _draw_matplotlib}


def _draw(points: object, panels: Sequence[object], palette: np.ndarray | None, width: int, height: int,
          view: View, point_size: float, backend: str, ignore_index: int) -> tuple[list[np.ndarray], str]:
    """Check the inputs, pick the backend and draw one (height, width, 3) uint8 picture per panel."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0:
        raise ValueError(f"points expected (N, 3) with N >= 1, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("points contain NaN or infinite coordinates")
    if width < 1 or height < 1:
        raise ValueError(f"picture size expected >= 1 x 1 pixels, got {width} x {height}")
    colors = [to_colors(panel, palette, ignore_index) for panel in panels]
    for i, panel_colors in enumerate(colors):
        if len(panel_colors) != len(points):
            raise ValueError(f"panel {i}: {len(panel_colors)} colours or labels for {len(points)} points")
    used = _choose_backend(backend)
    camera = _fit_camera(points, view, width, height)
    return _DRAW[used](points, colors, camera, width, height, point_size), used


def _legend_strip(entries: Sequence[LegendEntry], width: int) -> Image.Image:
    """A white strip ``width`` pixels wide: per entry a solid swatch of its colour, framed, then its
    name, left to right in rows of :data:`_LEGEND_ROW` pixels (wrapped at ``width``)."""
    font = ImageFont.load_default(size=_LEGEND_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    places, x, y = [], _LEGEND_PAD, _LEGEND_PAD
    for name, color in entries:
        rgb = tuple(int(c) for c in color)
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError(f"legend entry {name!r}: colour expected 3 ints in [0, 255], got {color!r}")
        entry_width = _LEGEND_SWATCH + _LEGEND_PAD + math.ceil(measure.textlength(name, font=font))
        if x > _LEGEND_PAD and x + entry_width > width - _LEGEND_PAD:
            x, y = _LEGEND_PAD, y + _LEGEND_ROW
        places.append((x, y, name, rgb))
        x += entry_width + _LEGEND_GAP
    strip = Image.new("RGB", (width, y + _LEGEND_ROW + _LEGEND_PAD), "white")
    draw = ImageDraw.Draw(strip)
    top = (_LEGEND_ROW - _LEGEND_SWATCH) // 2
    for x, y, name, rgb in places:
        draw.rectangle((x - 1, y + top - 1, x + _LEGEND_SWATCH, y + top + _LEGEND_SWATCH), outline=_LEGEND_OUTLINE)
        draw.rectangle((x, y + top, x + _LEGEND_SWATCH - 1, y + top + _LEGEND_SWATCH - 1), fill=rgb)
        draw.text((x + _LEGEND_SWATCH + _LEGEND_PAD, y + _LEGEND_ROW / 2), name, fill="black", font=font, anchor="lm")
    return strip


def _with_legend(picture: Image.Image, legend: Sequence[LegendEntry]) -> Image.Image:
    """``picture`` with the strip of ``legend`` below it; ``picture`` itself when ``legend`` is empty."""
    if not legend:
        return picture
    strip = _legend_strip(legend, picture.width)
    sheet = Image.new("RGB", (picture.width, picture.height + strip.height), "white")
    sheet.paste(picture, (0, 0))
    sheet.paste(strip, (0, picture.height))
    return sheet


def _save_png(image: Image.Image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def render(points: object, colors_or_labels: object, path: str | Path, palette: np.ndarray | None = None, *,
           width: int = 960, height: int = 720, view: View = View(), point_size: float = 2.5,
           backend: Backend = "auto", ignore_index: int = -100, legend: Sequence[LegendEntry] = ()) -> str:
    """Render a point cloud to a PNG file.

    Args:
        points: (N, 3) float coordinates, +z up.
        colors_or_labels: (N, 3) uint8 RGB (or floats in [0, 1]), or (N,) integer labels coloured
            with ``palette`` (``None``: a generic palette; ``ignore_index`` in grey).
        path: output ``.png``; parent folders are created, the file is replaced atomically.
        width, height: picture size in pixels.
        view: camera direction; the camera is fitted to the cloud's bounding box.
        point_size: point diameter in pixels.
        backend: ``"open3d"`` (raise if it cannot run), ``"matplotlib"``, or ``"auto"``: Open3D when
            it works here, else matplotlib with a ``RuntimeWarning`` naming why.
        legend: (name, RGB) entries (e.g. :func:`pcseg.vis.palette.legend_entries`) drawn as swatches
            and names in a strip below the picture, which then is taller than ``height``; none: no strip.

    Returns:
        The backend used: ``"open3d"`` or ``"matplotlib"``.
    """
    images, used = _draw(points, [colors_or_labels], palette, width, height, view, point_size, backend,
                         ignore_index)
    _save_png(_with_legend(Image.fromarray(images[0]), legend), path)
    return used


def render_panels(points: object, panels: Sequence[object], titles: Sequence[str], path: str | Path,
                  palette: np.ndarray | None = None, *, width: int = 640, height: int = 480, view: View = View(),
                  point_size: float = 2.0, backend: Backend = "auto", ignore_index: int = -100,
                  legend: Sequence[LegendEntry] = ()) -> str:
    """Render one cloud several times side by side under titles, e.g. prediction | ground truth | errors.

    Args:
        points: (N, 3) float coordinates, +z up.
        panels: per panel, (N,) labels or (N, 3) colours (as in :func:`render`); for an error map
            pass :func:`pcseg.vis.palette.error_colors` of the prediction and ground truth.
        titles: one title per panel, drawn above it.
        path: output ``.png``, ``len(panels) * width`` x ``height + 32`` pixels, plus the legend's
            strip below (one for all panels) when ``legend`` is given.
        width, height: size of each panel in pixels; the other arguments are those of :func:`render`.

    Returns:
        The backend used: ``"open3d"`` or ``"matplotlib"``.
    """
    if len(titles) != len(panels) or not panels:
        raise ValueError(f"render_panels: expected one title per panel and >= 1 panel, "
                         f"got {len(panels)} panels and {len(titles)} titles")
    images, used = _draw(points, panels, palette, width, height, view, point_size, backend, ignore_index)
    sheet = Image.new("RGB", (width * len(images), _TITLE_HEIGHT + height), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=_TITLE_FONT_SIZE)
    for i, (image, title) in enumerate(zip(images, titles)):
        left = i * width
        sheet.paste(Image.fromarray(image), (left, _TITLE_HEIGHT))
        x0, y0, x1, y1 = draw.textbbox((0, 0), title, font=font)
        draw.text((left + (width - (x1 - x0)) / 2 - x0, (_TITLE_HEIGHT - (y1 - y0)) / 2 - y0), title,
                  fill="black", font=font)
        if i:
            draw.line([(left, 0), (left, sheet.height - 1)], fill=_SEPARATOR_COLOR)
    _save_png(_with_legend(sheet, legend), path)
    return used
