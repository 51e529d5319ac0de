"""SLidR (CVPR'22): image-to-LiDAR self-supervised distillation driven by superpixels.

Data: :mod:`pcseg.data.lidar_camera` (images, calibration, projection, SLIC superpixels).
"""
from .losses import superpixel_info_nce
from .method import SLidR
from .pooling import pool_image_features, superpixel_pool
from .teacher import (TEACHERS, ImageTeacher, ResNet50Trunk, ResNetFeatures, SparseImageFeatures, build_teacher,
                      load_resnet_weights)
from .teacher_cache import CachedTeacher

__all__ = ["SLidR", "superpixel_info_nce", "superpixel_pool", "pool_image_features", "TEACHERS", "ImageTeacher",
           "ResNet50Trunk", "ResNetFeatures", "SparseImageFeatures", "build_teacher", "load_resnet_weights",
           "CachedTeacher"]
