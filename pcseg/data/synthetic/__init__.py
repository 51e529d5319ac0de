"""Synthetic scenes written in the official raw layouts, so tests and demos run the real readers.

``make_scannet``, ``make_s3dis``, ``make_semantickitti`` and ``write_image_folder`` (street camera
images for D=2 segmentation) write whole datasets and return the generated scenes, which are the
oracle of what a reader must return.
"""
from .indoor import INDOOR_CLASSES, IndoorClass, IndoorScene, generate_room
from .outdoor import (LidarSweep, Street, generate_street, kitti_calibration, lidar_sweep, render_camera,
                      render_camera_labels)
from .write_images import StreetImage, render_street_image, write_image_folder
from .write_s3dis import S3DISRoom, make_s3dis, write_s3dis_room
from .write_scannet import make_scannet, write_scannet_scene
from .write_semantickitti import make_semantickitti, write_semantickitti_sequence, write_semantickitti_yaml

__all__ = [
    "INDOOR_CLASSES",
    "IndoorClass",
    "IndoorScene",
    "generate_room",
    "LidarSweep",
    "Street",
    "generate_street",
    "kitti_calibration",
    "lidar_sweep",
    "render_camera",
    "render_camera_labels",
    "StreetImage",
    "render_street_image",
    "write_image_folder",
    "S3DISRoom",
    "make_s3dis",
    "write_s3dis_room",
    "make_scannet",
    "write_scannet_scene",
    "make_semantickitti",
    "write_semantickitti_sequence",
    "write_semantickitti_yaml",
]
