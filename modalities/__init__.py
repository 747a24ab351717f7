"""Modality adapters, one file each; importing this package registers them by name."""
from .image import ImageAdapter, ImageData
from .timeseries import TimeSeriesAdapter

__all__ = ["ImageAdapter", "ImageData", "TimeSeriesAdapter"]
