"""Multi-channel microscopy images whose channels differ from file to file: the image and its checks.

Every reader (readers.ome_tiff for TIFF / OME-TIFF, zarr / OME-Zarr here, readers.manifest for plate-imaging
manifests with one single-channel file per channel) returns a ChannelImage: float32 pixels [C, H, W] with
their values kept (not normalized) and one name per channel, so channels can be matched by name across
files. Axes come from metadata only (OME-XML, OME-Zarr `multiscales`, ImageJ, or tifffile's own shape
description when it carries axes); a 3-D array without such metadata needs `channel_axis`.
Every problem is a DataError whose message starts with the file at fault.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from omnimae.data.files import walk
from omnimae.errors import ConfigError, DataError

TIFF_SUFFIXES = (".tif", ".tiff")  # .ome.tif / .ome.tiff included
_EXACT_INT = 2**24  # float32 holds every integer up to this exactly


@dataclass
class ChannelImage:
    """pixels float32 [C, H, W] (values as stored); channels: one name each; source: the file or
    manifest row id; files: the file(s) read (for a manifest, one per channel, in channel order)."""

    pixels: np.ndarray
    channels: list[str]
    source: str
    files: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.pixels.ndim != 3 or self.pixels.shape[0] != len(self.channels):
            raise ValueError(
                f"{self.source}: pixels {self.pixels.shape} must be [C, H, W] with one name per channel, "
                f"got {len(self.channels)} names"
            )


# --- pixels ----------------------------------------------------------------------------------
def to_float32(arr: np.ndarray, path: str | Path) -> np.ndarray:
    """Integers keep their values (an error past 2**24, where float32 would round); floats must be finite."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.itemsize > 2 and arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if max(-lo, hi) > _EXACT_INT:
                raise DataError(
                    f"{path}: {arr.dtype} values in [{lo}, {hi}] cannot be kept exactly in float32 (limit 2**24)"
                )
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        finite = np.isfinite(out)
        if not finite.all():
            if np.isfinite(arr).all():
                raise DataError(f"{path}: {arr.dtype} values exceed the float32 range")
            raise DataError(f"{path}: image holds {int((~finite).sum())} NaN or infinite values")
        return out
    raise DataError(f"{path}: unsupported pixel type {arr.dtype} (use uint8, uint16 or float32/64)")


def _check_channel_axis(channel_axis) -> None:
    if channel_axis is not None and channel_axis not in (0, 2, -1):
        raise ConfigError("channel_axis", f"must be 0 (CYX), -1 or 2 (YXC), or unset; got {channel_axis!r}")


def arrange_axes(arr: np.ndarray, axes: str, path: str | Path, where: str) -> np.ndarray:
    """arr with named axes -> [C, H, W]: C and S (samples) become channels, size-1 axes are dropped,
    any other axis of size > 1 (several Z planes, time points) is an error; `where` (what gave the
    axes, e.g. "the TIFF metadata") goes into the messages."""
    if len(axes) != arr.ndim:
        raise DataError(f"{path}: {where} gives axes {axes!r} for an array of shape {arr.shape}")
    if len(set(axes)) != len(axes) or "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: {where} gives axes {axes!r}: need Y and X, each axis once")
    for ax, n in zip(axes, arr.shape):
        if ax in "CSYX" or n == 1:
            continue
        what = {"Z": "Z planes", "T": "time points"}.get(ax)
        if what:
            raise DataError(
                f"{path}: {n} {what} (axes {axes}, shape {arr.shape}); only single-plane images are "
                "supported: choose one plane or project the stack first"
            )
        raise DataError(
            f"{path}: axis {ax!r} of size {n} (axes {axes}, shape {arr.shape}) is neither a channel nor Y/X"
        )
    order = [axes.index(a) for a in "CS" if a in axes] + [axes.index("Y"), axes.index("X")]
    rest = [i for i in range(arr.ndim) if i not in order]  # all of size 1
    arr = np.transpose(arr, order + rest)
    h, w = arr.shape[len(order) - 2], arr.shape[len(order) - 1]
    return arr.reshape(-1, h, w)


def arrange_unnamed(arr: np.ndarray, channel_axis: int | None, path: str | Path, hint: str = "") -> np.ndarray:
    """An array without axes metadata: 2-D is one channel, 3-D needs channel_axis."""
    _check_channel_axis(channel_axis)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        if channel_axis is None:
            raise DataError(
                f"{path}: shape {arr.shape} has no axes metadata, so it could be CYX or YXC; set channel_axis "
                f"(0 for CYX, -1 for YXC){hint}"
            )
        return arr if channel_axis == 0 else np.moveaxis(arr, -1, 0)
    raise DataError(
        f"{path}: shape {arr.shape} has {arr.ndim} dimensions and no axes metadata; without metadata only "
        f"2-D (YX) or 3-D (CYX / YXC, set channel_axis) images can be read{hint}"
    )


def _names(found: list[str | None] | None, given: Sequence[str] | None, n: int, path) -> list[str]:
    """Channel names: the file's (missing ones become ch0, ch1, ...), checked against channel_names if given."""
    found = list(found) if found else [None] * n
    if len(found) != n:
        raise DataError(f"{path}: the metadata names {len(found)} channels {found} but the image has {n}")
    if given is not None:
        given = [str(g) for g in given]
        if len(given) != n:
            raise DataError(f"{path}: the image has {n} channels but channel_names gives {len(given)}: {given}")
        if any(f is not None and f != g for f, g in zip(found, given)):
            raise DataError(f"{path}: the file names its channels {found}, which differ from channel_names {given}")
        names = given
    else:
        names = [f if f else f"ch{i}" for i, f in enumerate(found)]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise DataError(f"{path}: channel names {names} repeat {dupes}; channels must be told apart by name")
    return names


def channel_image(pixels: np.ndarray, names: list[str | None] | None, channel_names: Sequence[str] | None,
                  path: str | Path) -> ChannelImage:
    """A [C, H, W] array read from one file, as float32 with its channel names: the file's (`names`),
    checked against the configured `channel_names`."""
    if pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise DataError(f"{path}: empty image of shape {pixels.shape}")
    return ChannelImage(
        pixels=np.ascontiguousarray(to_float32(pixels, path)),
        channels=_names(names, channel_names, pixels.shape[0], path),
        source=str(path),
        files=[str(path)],
    )


# --- zarr / OME-Zarr -------------------------------------------------------------------------
def _zarr_axis_letter(axis) -> str:
    """An OME-Zarr axis (a dict with name/type, or a bare name in old versions) -> T, C, Z, Y, X or '?'."""
    name = str(axis.get("name", "") if isinstance(axis, dict) else axis).lower()
    kind = str(axis.get("type", "")).lower() if isinstance(axis, dict) else ""
    if name in ("t", "c", "z", "y", "x"):
        return name.upper()
    return {"channel": "C", "time": "T"}.get(kind, "?")


def _first_level(group, path: Path) -> tuple[Any, str | None, list[str | None] | None]:
    """An (OME-)Zarr group -> (its first resolution level's array, axes letters from `multiscales` or
    None, channel names from `omero.channels[].label` or None)."""
    import zarr

    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
    multiscales = ome.get("multiscales") or []
    key, axes, names = "0", None, None
    if multiscales:
        datasets = multiscales[0].get("datasets") or []
        key = str(datasets[0]["path"]) if datasets else "0"
        if multiscales[0].get("axes"):
            axes = "".join(_zarr_axis_letter(a) for a in multiscales[0]["axes"])
            if "?" in axes:
                raise DataError(f"{path}: unknown axis in the multiscales metadata {multiscales[0]['axes']}")
    labels = (ome.get("omero") or {}).get("channels")
    if labels:
        names = [c.get("label") if isinstance(c, dict) else None for c in labels]
    if key not in group or not isinstance(group[key], zarr.Array):
        raise DataError(f"{path}: zarr group has no array {key!r} (the first resolution level)")
    return group[key], axes, names


def read_zarr(
    path: str | Path, channel_axis: int | None = None, channel_names: Sequence[str] | None = None
) -> ChannelImage:
    """A zarr array, or an OME-Zarr image group -> ChannelImage.

    For a group: the first multiscale level (datasets[0], usually "0"), axes from `multiscales` (then
    channel_axis is not used), names from `omero.channels[].label` (OME-Zarr 0.5 nests both under "ome").
    A plain array (or a group without `multiscales`, whose array "0" is read) has no axes metadata:
    as for a TIFF, 2-D is one channel and 3-D needs channel_axis (0: CYX, -1/2: YXC).
    """
    import zarr

    path = Path(path).expanduser()
    _check_channel_axis(channel_axis)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as e:
        raise DataError(f"{path}: cannot open as zarr ({type(e).__name__}: {e})") from e
    axes, names = None, None
    try:
        if isinstance(node, zarr.Group):
            node, axes, names = _first_level(node, path)
        arr = np.asarray(node[...])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read zarr data ({type(e).__name__}: {e})") from e
    if axes is not None:
        pixels = arrange_axes(arr, axes, path, "the multiscales metadata")
    else:
        pixels = arrange_unnamed(arr, channel_axis, path)
    if names is not None and len(names) != pixels.shape[0]:
        raise DataError(f"{path}: omero.channels lists {len(names)} channels but the image has {pixels.shape[0]}")
    return channel_image(pixels, names, channel_names, path)


# --- checks and discovery --------------------------------------------------------------------
def check_channels(image: ChannelImage) -> None:
    """A channel whose pixels are all equal (zero variance: an empty or failed acquisition) is an error."""
    flat = image.pixels.reshape(image.pixels.shape[0], -1)
    problems = []
    for i, name in enumerate(image.channels):
        if flat[i].size and flat[i].min() == flat[i].max():
            file = image.files[i] if len(image.files) == len(image.channels) else (image.files or [image.source])[0]
            problems.append(f"{file}: channel {name!r} is constant (every pixel {float(flat[i][0]):g})")
    if problems:
        raise DataError("; ".join(problems) + " -- a constant channel carries no signal and cannot be normalized")


def _zarr_kind(folder: Path) -> str | None:
    """'image' (an array, or a group with multiscales), 'group' (look inside), or None (not zarr)."""
    try:
        if (folder / "zarr.json").is_file():
            meta = json.loads((folder / "zarr.json").read_text())
            if meta.get("node_type") == "array":
                return "image"
            attrs = meta.get("attributes") or {}
        elif (folder / ".zarray").is_file():
            return "image"
        elif (folder / ".zgroup").is_file():
            zattrs = folder / ".zattrs"
            attrs = json.loads(zattrs.read_text()) if zattrs.is_file() else {}
        else:
            return None
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: unreadable zarr metadata ({type(e).__name__}: {e})") from e
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else attrs
    return "image" if ome.get("multiscales") else "group"


def find_microscopy(root: str | Path) -> list[Path]:
    """TIFF / OME-TIFF files and zarr images (arrays, OME-Zarr image groups) under root, sorted.

    A zarr image is listed as one path and not searched inside; a zarr group without multiscales
    (a plate, a bioformats2raw container) is searched for the images it holds.
    """
    root = Path(root).expanduser()
    if root.is_file():  # one image file: a folder of one
        if not root.name.lower().endswith(TIFF_SUFFIXES):
            raise DataError(f"{root}: not a TIFF or OME-TIFF file, nor a zarr image")
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if _zarr_kind(root) == "image":
        return [root]
    return sorted(walk(root, lambda p, is_dir: _zarr_kind(p) == "image" if is_dir else p.name.lower().endswith(TIFF_SUFFIXES)))
