"""Readers for the official raw dataset layouts; each returns the raw scene dict of docs/contracts.md."""
from ._common import IGNORE_INDEX, LoadReport, SceneReader
from .s3dis import S3DIS_CLASS_NAMES, S3DISReader, read_s3dis_txt
from .scannet import SCANNET20_CLASS_NAMES, SCANNET20_NYU40_IDS, ScanNetReader, nyu40_to_scannet20
from .semantickitti import SEMANTICKITTI_CLASS_NAMES, SemanticKITTIReader, parse_calib

__all__ = [
    "IGNORE_INDEX",
    "LoadReport",
    "SceneReader",
    "S3DISReader",
    "S3DIS_CLASS_NAMES",
    "read_s3dis_txt",
    "ScanNetReader",
    "SCANNET20_CLASS_NAMES",
    "SCANNET20_NYU40_IDS",
    "nyu40_to_scannet20",
    "SemanticKITTIReader",
    "SEMANTICKITTI_CLASS_NAMES",
    "parse_calib",
]
