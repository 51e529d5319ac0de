"""The dataset registry: configs pick a dataset by the name of its builder function.

Builders register themselves in :mod:`pcseg.data.datasets`.
"""
from pcseg.utils.registry import Registry

__all__ = ["DATASETS"]

DATASETS = Registry("dataset")
