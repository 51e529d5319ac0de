"""Pictures and coloured point-cloud files of segmentations (palettes, PLY export, headless PNG)."""
from pcseg.vis.palette import (
    PALETTES,
    S3DIS13_PALETTE,
    SCANNET20_PALETTE,
    SEMANTICKITTI19_PALETTE,
    colorize,
    error_colors,
    generic_palette,
    get_palette,
    legend_entries,
)
from pcseg.vis.ply import save_ply
from pcseg.vis.render import LegendEntry, View, open3d_unavailable_reason, render, render_panels
from pcseg.vis.scene import save_prediction_views

__all__ = [
    "PALETTES",
    "SCANNET20_PALETTE",
    "S3DIS13_PALETTE",
    "SEMANTICKITTI19_PALETTE",
    "colorize",
    "error_colors",
    "generic_palette",
    "get_palette",
    "legend_entries",
    "save_ply",
    "View",
    "LegendEntry",
    "render",
    "render_panels",
    "open3d_unavailable_reason",
    "save_prediction_views",
]
