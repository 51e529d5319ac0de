"""What several methods share: loss terms (CPCM, HPAL) and per-step generators from the run seed.

Every method may import this package; it imports no method.
"""
from .losses import js_divergence, kl_consistency, labelled_cross_entropy, rampup_weight
from .rng import step_generator

__all__ = ["labelled_cross_entropy", "js_divergence", "kl_consistency", "rampup_weight", "step_generator"]
