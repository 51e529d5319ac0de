"""SLidR (CVPR'22): image-to-LiDAR self-supervised distillation driven by superpixels.

Data: :mod:`pcseg.data.lidar_camera` (images, calibration, projection, SLIC superpixels).
Teachers: :mod:`.teacher` (ResNet-50 / MoCo-v2 weights, a pcseg D=2 model) and :mod:`.ssl_teacher`
(a label-free one trained here by dense contrastive learning: ``teacher: {name: Contrastive, …}``).
"""
from .losses import info_nce, point_info_nce
from .method import SLidR, SLidRModel
from .pooling import pool_image_features, superpixel_pool
from .ssl_teacher import Augmentation, ContrastiveLearner, ContrastiveSchedule, ImageFiles, train_contrastive
from .teacher import (TEACHERS, ImageTeacher, ResNet50Trunk, ResNetFeatures, SparseImageFeatures, build_teacher,
                      load_resnet_weights)
from .teacher_cache import CachedTeacher

__all__ = ["SLidR", "SLidRModel", "info_nce", "point_info_nce", "superpixel_pool", "pool_image_features", "TEACHERS",
           "ImageTeacher", "ResNet50Trunk", "ResNetFeatures", "SparseImageFeatures", "build_teacher",
           "load_resnet_weights", "CachedTeacher", "Augmentation", "ContrastiveLearner", "ContrastiveSchedule",
           "ImageFiles", "train_contrastive"]
