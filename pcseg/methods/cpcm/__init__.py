"""CPCM (ICCV'23): region-wise masking + contextual masked training for sparse labels."""
from .losses import js_divergence, labelled_cross_entropy, rampup_weight
from .method import CPCM, mask_generator
from .region_mask import RegionMask, region_boundaries, region_ids

__all__ = ["CPCM", "RegionMask", "region_boundaries", "region_ids", "js_divergence", "labelled_cross_entropy",
           "rampup_weight", "mask_generator"]
