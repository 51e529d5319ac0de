"""CPCM (ICCV'23): region-wise masking + contextual masked training for sparse labels.

Its loss terms live in :mod:`pcseg.methods.common` (shared with HPAL).
"""
from .method import CPCM
from .region_mask import RegionMask, region_boundaries, region_ids

__all__ = ["CPCM", "RegionMask", "region_boundaries", "region_ids"]
