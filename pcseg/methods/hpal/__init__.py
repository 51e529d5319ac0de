"""HPAL (ICCV'23): hierarchical point-based active learning + mean-teacher semi-supervised training."""
from .method import HPAL, MeanTeacher, ema_update, pseudo_labels, strong_features
from .selection import (CANDIDATE_FACTOR, STRATEGIES, ScenePool, SelectionSettings, annotatable, cumulative_targets,
                        merge_pools, model_selection, predict_raw_scene, predict_scene, random_selection, scene_pool)
from .suppression import MAX_COSINE, RADIUS, conflict_pairs, suppress
from .uncertainty import GRIDS, WEIGHTS, hierarchical_uncertainty, margin, region_margin

__all__ = ["HPAL", "MeanTeacher", "ema_update", "pseudo_labels", "strong_features",
           "CANDIDATE_FACTOR", "STRATEGIES", "ScenePool", "SelectionSettings", "annotatable", "cumulative_targets",
           "merge_pools", "model_selection", "predict_raw_scene", "predict_scene", "random_selection", "scene_pool",
           "MAX_COSINE", "RADIUS", "conflict_pairs", "suppress",
           "GRIDS", "WEIGHTS", "hierarchical_uncertainty", "margin", "region_margin"]
