"""TIFF and OME-TIFF microscopy images -> ChannelImage (tifffile), checked for damage and truncation."""
from __future__ import annotations

import contextlib
import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from omnimae.data.files import check_file
from omnimae.errors import DataError

from .microscopy import ChannelImage, arrange_axes, arrange_unnamed, channel_image

_UNKNOWN_AXES = "IQ"  # letters tifffile uses for axes whose meaning it had to guess


class TiffArray(NamedTuple):
    """A TIFF's first series as decoded, with what its metadata says about it."""

    array: np.ndarray
    axes: str | None  # from the metadata; None where it states none
    sizes: dict[str, int] | None  # the OME Size* attributes (OME-TIFF only)
    names: list[str | None] | None  # the OME channel names (OME-TIFF only)


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """tifffile logs (instead of raising) when it drops a damaged tag or page: collect those errors."""
    logger, handler = logging.getLogger("tifffile"), _Collect()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_pixels(xml: str, path) -> tuple[dict[str, int], list[str | None]]:
    """The first OME Image's Size* attributes and one (possibly None) name per channel sample."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise DataError(f"{path}: unreadable OME-XML metadata ({e})") from e
    image = next((e for e in root.iter() if _local(e.tag) == "Image"), None)
    pixels = None if image is None else next((e for e in image if _local(e.tag) == "Pixels"), None)
    if pixels is None:
        raise DataError(f"{path}: the OME-XML metadata has no Image/Pixels element")
    sizes, names = {}, []
    try:
        for k in "XYCZT":
            if pixels.get(f"Size{k}") is not None:
                sizes[k] = int(pixels.get(f"Size{k}"))
        for ch in pixels:
            if _local(ch.tag) == "Channel":
                spp, name = int(ch.get("SamplesPerPixel") or 1), ch.get("Name") or None
                # one Channel may hold several samples (interleaved storage): name each of them
                names += [name] if spp == 1 else [f"{name}[{s}]" if name else None for s in range(spp)]
    except ValueError as e:
        raise DataError(f"{path}: bad number in the OME-XML metadata ({e})") from e
    return sizes, names


def _check_data_present(series, path) -> None:
    """Truncated files can decode to zeros without an error: every plane's bytes must lie in the file."""
    pages = list(series.pages)
    for i, page in enumerate(pages):
        if page is None:
            raise DataError(
                f"{path}: image plane {i} of {len(pages)} is missing (a damaged file, or a multi-file "
                "OME-TIFF whose other files are absent)"
            )
        fh = page.parent.filehandle
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if ends and max(ends) > fh.size:
            name = path if Path(fh.path).resolve() == path.resolve() else fh.path  # another file of a set
            raise DataError(
                f"{name}: truncated: image data runs to byte {max(ends)} but the file has {fh.size} bytes"
            )
    if series.dataoffset is not None and pages:
        size = pages[0].parent.filehandle.size
        if series.dataoffset + series.nbytes > size:
            raise DataError(
                f"{path}: truncated: image data runs to byte {series.dataoffset + series.nbytes} "
                f"but the file has {size} bytes"
            )


def _metadata_axes(tif, series) -> str | None:
    """The series' axes when metadata states them (OME, ImageJ, tifffile's shape description)."""
    if tif.is_ome or tif.is_imagej:
        axes = series.axes
    elif tif.is_shaped and (tif.shaped_metadata or [{}])[0].get("axes"):
        axes = series.axes
    else:
        return None
    if any(a in _UNKNOWN_AXES and n > 1 for a, n in zip(axes, series.shape)):
        return None  # e.g. an ImageJ stack of unnamed planes: as ambiguous as no metadata
    return axes.upper()


def read_tiff_array(path: Path) -> TiffArray:
    """The first series as decoded, with its metadata; checked for damage and truncation."""
    import tifffile

    check_file(path)
    with _tifffile_errors() as logged:
        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.series:
                    raise DataError(f"{path}: the TIFF holds no image (empty, damaged or truncated)")
                series = tif.series[0]
                header = tuple(series.shape)
                axes = _metadata_axes(tif, series)
                sizes, names = _ome_pixels(tif.ome_metadata, path) if tif.is_ome else (None, None)
                if not logged:  # a dropped page or tag already condemns the file (reported below)
                    _check_data_present(series, path)
                    arr = series.asarray()
        except DataError:
            raise
        except Exception as e:  # tifffile's errors do not name the file
            extra = f"; {'; '.join(logged)}" if logged else ""
            raise DataError(f"{path}: cannot read TIFF, damaged or truncated? ({type(e).__name__}: {e}{extra})") from e
    if logged:
        raise DataError(f"{path}: damaged or truncated TIFF ({'; '.join(logged)})")
    if arr.shape != header:
        raise DataError(f"{path}: decoded shape {arr.shape} differs from the header's {header} (truncated?)")
    if sizes is not None:
        declared = math.prod(sizes.get(k, 1) for k in "XYCZT")
        if arr.size != declared:
            sizes_text = ", ".join(f"Size{k}={v}" for k, v in sizes.items())
            raise DataError(f"{path}: decoded shape {arr.shape} disagrees with the OME metadata ({sizes_text})")
    return TiffArray(arr, axes, sizes, names)


def read_tiff(
    path: str | Path, channel_axis: int | None = None, channel_names: Sequence[str] | None = None
) -> ChannelImage:
    """A multi-channel TIFF or OME-TIFF -> ChannelImage.

    Axes come from the file's metadata (OME-XML, ImageJ, or tifffile's shape description with axes);
    size-1 Z/T axes are dropped, several Z planes or time points are an error. Without metadata a 2-D
    image is one channel and a 3-D one needs channel_axis (0: CYX, -1/2: YXC). Channel names come from
    the OME Channel Name attributes (ch0, ch1, ... where absent); channel_names, if given, names the
    channels of files that do not and must agree with those that do.
    """
    path = Path(path).expanduser()
    arr, axes, sizes, names = read_tiff_array(path)
    if axes is not None:
        pixels = arrange_axes(arr, axes, path, "the TIFF metadata")
    else:
        hint = ""
        if path.name.lower().endswith((".ome.tif", ".ome.tiff")):
            hint = " (the name says OME-TIFF but the file has no OME-XML metadata)"
        pixels = arrange_unnamed(arr, channel_axis, path, hint)
    if sizes is not None:
        got = {"C": pixels.shape[0], "Y": pixels.shape[1], "X": pixels.shape[2]}
        bad = {k: (sizes[k], v) for k, v in got.items() if k in sizes and sizes[k] != v}
        if bad:
            text = ", ".join(f"Size{k}={d} but {g} decoded" for k, (d, g) in bad.items())
            raise DataError(f"{path}: the image disagrees with its OME metadata: {text}")
    return channel_image(pixels, names, channel_names, path)

