"""Synthetic scenes written in the official raw layouts, so tests and demos run the real readers.

``make_scannet``, ``make_s3dis`` and ``make_semantickitti`` write whole datasets and return the
generated scenes, which are the oracle of what a reader must return.
"""
from .indoor import INDOOR_CLASSES, IndoorClass, IndoorScene, generate_room
from .outdoor import LidarSweep, Street, generate_street, kitti_calibration, lidar_sweep, render_camera
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
    "S3DISRoom",
    "make_s3dis",
    "write_s3dis_room",
    "make_scannet",
    "write_scannet_scene",
    "make_semantickitti",
    "write_semantickitti_sequence",
    "write_semantickitti_yaml",
]
