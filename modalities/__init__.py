"""Modality adapters, one file each; importing this package registers them by name."""
from .audio import AudioAdapter, AudioData
from .image import ImageAdapter, ImageData
from .timeseries import TimeSeriesAdapter
from .video import VideoAdapter, VideoData

__all__ = ["AudioAdapter", "AudioData", "ImageAdapter", "ImageData", "TimeSeriesAdapter", "VideoAdapter", "VideoData"]
