"""Decoding image files (PNG, JPEG, TIFF, BMP, WebP) to float tensors, with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnimae.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def _to_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: image holds NaN or infinite values")
        return arr.astype(np.float32)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}")


def match_channels(arr: np.ndarray, in_chans: int, convert: bool, path: Path) -> np.ndarray:
    """arr [H, W, C] -> [H, W, in_chans]; a mismatch is an error unless conversion was asked for."""
    c = arr.shape[2]
    if c == in_chans:
        return arr
    if convert:
        if in_chans == 3 and c == 1:
            return np.repeat(arr, 3, axis=2)
        if in_chans == 3 and c == 4:
            return arr[..., :3]
        if in_chans == 1 and c in (3, 4):
            return (arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=arr.dtype))[..., None]
    hint = "" if convert else " (set data.convert=true to convert grey/RGB/RGBA)"
    raise DataError(f"{path}: image has {c} channels but the model expects in_chans={in_chans}{hint}")


_UINT16_MODES = ("I;16", "I;16B", "I;16L")


def _decoded_mode(mode: str) -> str:
    """The PIL mode an image of this mode is read as: kept, or converted to RGB (RGBA if it has alpha)."""
    if mode in ("L", "RGB", "RGBA", "1") or mode in _UINT16_MODES:
        return mode
    return "RGBA" if "A" in mode else "RGB"


def _tiff_layout(tif, path: Path) -> tuple[list[int], tuple[int, int, int]]:
    """The TIFF's series axes -> (the transpose to [H, W, C] once size-1 axes are dropped, that
    shape): a sample or channel axis (S, C) goes last; several planes or images are an error."""
    if len(tif.series) != 1:
        shapes = [tuple(s.shape) for s in tif.series]
        raise DataError(f"{path}: the TIFF holds {len(shapes)} images {shapes}; the image modality reads files of one")
    series = tif.series[0]
    axes, shape = series.axes.upper(), tuple(series.shape)
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: the TIFF's axes {axes} (shape {shape}) are not an image's (no Y and X)")
    channel = [i for i, (a, n) in enumerate(zip(axes, shape)) if a in "SC" and n > 1]
    extra = [i for i, (a, n) in enumerate(zip(axes, shape)) if a not in "YXSC" and n > 1] + channel[1:]
    if extra:
        raise DataError(
            f"{path}: a stack of {int(np.prod([shape[i] for i in extra]))} planes (axes {axes}, shape {shape}); "
            "the image modality reads single-plane images: use the microscopy or array modality for stacks"
        )
    y, x = axes.index("Y"), axes.index("X")
    order = [i for i in range(len(axes)) if i not in (y, x, *channel)] + [y, x] + channel
    return order, (shape[y], shape[x], shape[channel[0]] if channel else 1)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        order, hwc = _tiff_layout(tif, path)
        expected = tuple(tif.series[0].shape)
        arr = tif.series[0].asarray()
    if arr.shape != expected:  # truncated files can decode to a wrong shape
        raise DataError(f"{path}: decoded shape {arr.shape} differs from the header's {expected}")
    return arr.transpose(order).reshape(hwc)


def read_image(path: str | Path, in_chans: int, convert: bool = False) -> torch.Tensor:
    """Decode one image file to a float tensor [C, H, W] in [0, 1], or raise naming the file.

    A TIFF is read by its axes: (H, W), (H, W, S) or planar (S, H, W); a stack of planes (pages,
    Z, time) is an error."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr = _read_tiff(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()  # decodes fully: truncation raises here, not later
                mode = _decoded_mode(im.mode)
                if im.mode in _UINT16_MODES:
                    arr = np.asarray(im, dtype=np.uint16)
                elif mode != im.mode:
                    arr = np.asarray(im.convert(mode))
                else:
                    arr = np.asarray(im)
    except DataError:
        raise
    except Exception as e:  # PIL and tifffile errors do not name the file
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] > 4:
        raise DataError(
            f"{path}: expected an (H, W) or (H, W, C<=4) image, got shape {arr.shape}; "
            "multi-channel stacks belong to the microscopy modality"
        )
    arr = match_channels(_to_float(arr, path), in_chans, convert, path)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)  # [C, H, W]


def header_channels(path: Path) -> int:
    """Channel count from the header only (cheap), as read_image will decode it: validates a whole
    folder before training."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return _tiff_layout(tif, path)[1][2]
        from PIL import Image

        with Image.open(path) as im:
            return Image.getmodebands(_decoded_mode(im.mode))
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read image header ({type(e).__name__}: {e})") from e
