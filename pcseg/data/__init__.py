"""Datasets, raw-format readers and sparse-annotation budgets."""
from .formats import IGNORE_INDEX, S3DISReader, ScanNetReader, SemanticKITTIReader

__all__ = ["IGNORE_INDEX", "S3DISReader", "ScanNetReader", "SemanticKITTIReader"]
