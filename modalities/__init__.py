"""Modality adapters, one file each; importing this package registers them by name."""
from .image import ImageAdapter, ImageData

__all__ = ["ImageAdapter", "ImageData"]
