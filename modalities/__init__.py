"""Modality adapters, one file each; importing this package registers them by name."""
from .array import ArrayAdapter, ArrayData
from .audio import AudioAdapter, AudioData
from .image import ImageAdapter, ImageData
from .microscopy import MicroscopyAdapter, MicroscopyData
from .timeseries import TimeSeriesAdapter
from .video import VideoAdapter, VideoData

__all__ = ["ArrayAdapter", "ArrayData", "AudioAdapter", "AudioData", "ImageAdapter", "ImageData", "MicroscopyAdapter", "MicroscopyData", "TimeSeriesAdapter", "VideoAdapter", "VideoData"]
