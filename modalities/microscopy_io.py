"""Multi-channel microscopy images whose channels differ from file to file.

Readers for TIFF / OME-TIFF (tifffile), zarr / OME-Zarr, and plate-imaging manifests (a CSV with one
single-channel file per channel). Each returns a ChannelImage: float32 pixels [C, H, W] with their
values kept (not normalized) and one name per channel, so channels can be matched by name across
files. Axes come from metadata only (OME-XML, OME-Zarr `multiscales`, ImageJ, or tifffile's own
shape description when it carries axes); a 3-D array without such metadata needs `channel_axis`.
Every problem is a DataError whose message starts with the file at fault.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from omnimae.errors import ConfigError, DataError
from omnimae.data.files import walk

TIFF_SUFFIXES = (".tif", ".tiff")  # .ome.tif / .ome.tiff included
IMAGE_SUFFIXES = (".png", ".tif", ".tiff")  # single-channel files a manifest may name
ID_COLUMNS = ("image_id", "id")
_EXACT_INT = 2**24  # float32 holds every integer up to this exactly
_UNKNOWN_AXES = "IQ"  # letters tifffile uses for axes whose meaning it had to guess


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
def _to_float32(arr: np.ndarray, path) -> np.ndarray:
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


def _arrange(arr: np.ndarray, axes: str, path, where: str) -> np.ndarray:
    """arr with named axes -> [C, H, W]: C and S (samples) become channels, size-1 axes are dropped,
    any other axis of size > 1 (several Z planes, time points) is an error."""
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


def _no_axes(arr: np.ndarray, channel_axis, path, hint: str = "") -> np.ndarray:
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


# --- TIFF / OME-TIFF -------------------------------------------------------------------------
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


def _read_tiff_raw(path: Path) -> tuple[np.ndarray, str | None, dict[str, int] | None, list | None]:
    """(array as decoded, axes from metadata or None, OME sizes, OME channel names); checked for truncation."""
    import tifffile

    if not path.is_file():
        raise DataError(f"{path}: no such file")
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
    return arr, axes, sizes, names


def _channel_image(pixels: np.ndarray, names, channel_names, path) -> ChannelImage:
    """A [C, H, W] array read from one file, as float32 with its channel names."""
    if pixels.shape[1] == 0 or pixels.shape[2] == 0:
        raise DataError(f"{path}: empty image of shape {pixels.shape}")
    return ChannelImage(
        pixels=np.ascontiguousarray(_to_float32(pixels, path)),
        channels=_names(names, channel_names, pixels.shape[0], path),
        source=str(path),
        files=[str(path)],
    )


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
    arr, axes, sizes, names = _read_tiff_raw(path)
    if axes is not None:
        pixels = _arrange(arr, axes, path, "the TIFF metadata")
    else:
        hint = ""
        if path.name.lower().endswith((".ome.tif", ".ome.tiff")):
            hint = " (the name says OME-TIFF but the file has no OME-XML metadata)"
        pixels = _no_axes(arr, channel_axis, path, hint)
    if sizes is not None:
        got = {"C": pixels.shape[0], "Y": pixels.shape[1], "X": pixels.shape[2]}
        bad = {k: (sizes[k], v) for k, v in got.items() if k in sizes and sizes[k] != v}
        if bad:
            text = ", ".join(f"Size{k}={d} but {g} decoded" for k, (d, g) in bad.items())
            raise DataError(f"{path}: the image disagrees with its OME metadata: {text}")
    return _channel_image(pixels, names, channel_names, path)


# --- zarr / OME-Zarr -------------------------------------------------------------------------
def _zarr_axis_letter(axis) -> str:
    """An OME-Zarr axis (a dict with name/type, or a bare name in old versions) -> T, C, Z, Y, X or '?'."""
    name = str(axis.get("name", "") if isinstance(axis, dict) else axis).lower()
    kind = str(axis.get("type", "")).lower() if isinstance(axis, dict) else ""
    if name in ("t", "c", "z", "y", "x"):
        return name.upper()
    return {"channel": "C", "time": "T"}.get(kind, "?")


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
    axes, names, where = None, None, "the array"
    try:
        if isinstance(node, zarr.Group):
            attrs = dict(node.attrs)
            ome = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs
            multiscales = ome.get("multiscales") or []
            key = "0"
            if multiscales:
                datasets = multiscales[0].get("datasets") or []
                key = str(datasets[0]["path"]) if datasets else "0"
                if multiscales[0].get("axes"):
                    axes = "".join(_zarr_axis_letter(a) for a in multiscales[0]["axes"])
                    where = "the multiscales metadata"
            labels = (ome.get("omero") or {}).get("channels")
            if labels:
                names = [c.get("label") if isinstance(c, dict) else None for c in labels]
            if key not in node or not isinstance(node[key], zarr.Array):
                raise DataError(f"{path}: zarr group has no array {key!r} (the first resolution level)")
            node = node[key]
        arr = np.asarray(node[...])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot read zarr data ({type(e).__name__}: {e})") from e
    if axes is not None:
        if "?" in axes:
            raise DataError(f"{path}: unknown axis in the multiscales metadata {multiscales[0]['axes']}")
        pixels = _arrange(arr, axes, path, where)
    else:
        pixels = _no_axes(arr, channel_axis, path)
    if names is not None and len(names) != pixels.shape[0]:
        raise DataError(f"{path}: omero.channels lists {len(names)} channels but the image has {pixels.shape[0]}")
    return _channel_image(pixels, names, channel_names, path)


# --- manifests: one file per channel ---------------------------------------------------------
@dataclass
class ManifestRow:
    """One image of a manifest: its id, a file per channel (in channel order), the kept columns."""

    id: str
    files: dict[str, Path]
    metadata: dict[str, str | None]
    manifest: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.manifest}: line {self.line} (id {self.id!r})"


def read_manifest(
    csv_path: str | Path,
    *,
    id_column: str | None = None,
    label_column: str | None = None,
    metadata_columns: Sequence[str] = (),
    expected_channels: Sequence[str] | None = None,
    check_files: bool = True,
) -> list[ManifestRow]:
    """A CSV with an id column (image_id or id unless id_column names it), the columns named by
    label_column / metadata_columns (kept as metadata), and one column per channel: every other
    column, its header the channel name, its cells paths (relative to the CSV's folder, or absolute)
    to single-channel images. Channels keep the CSV's column order, or expected_channels' order when
    given (the columns must then be exactly those channels). check_files: each file must exist now.
    """
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            records = [(reader.line_num, rec) for rec in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from e
    if not header:
        raise DataError(f"{path}: empty file, expected a header row")
    header = [h.strip() for h in header]
    if "" in header:
        raise DataError(f"{path}: column {header.index('') + 1} of the header has no name")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: the header repeats columns {dupes}")

    if id_column is None:
        present = [c for c in ID_COLUMNS if c in header]
        if not present:
            raise DataError(f"{path}: no id column ({' or '.join(ID_COLUMNS)}) in {header}; pass id_column=")
        if len(present) > 1:
            raise DataError(f"{path}: both {present} columns present; pass id_column= to choose the id")
        id_column = present[0]
    kept = ([label_column] if label_column else []) + list(metadata_columns)
    for col in [id_column, *kept]:
        if col not in header:
            raise DataError(f"{path}: no column {col!r}; the columns are {header}")
    channels = [h for h in header if h != id_column and h not in kept]
    if expected_channels is not None:
        expected = [str(c) for c in expected_channels]
        missing = [c for c in expected if c not in channels]
        unexpected = [c for c in channels if c not in expected]
        if missing or unexpected or len(set(expected)) != len(expected):
            raise DataError(
                f"{path}: the channel columns {channels} disagree with expected_channels {expected}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {unexpected} (name extra columns in metadata_columns)" if unexpected else "")
            )
        channels = expected
    if not channels:
        raise DataError(f"{path}: no channel columns besides {[id_column, *kept]}")

    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line, rec in records:
        if not rec or all(not c.strip() for c in rec):
            continue  # blank line
        if len(rec) != len(header):
            raise DataError(f"{path}: line {line} has {len(rec)} cells but the header has {len(header)}")
        cells = {h: c.strip() for h, c in zip(header, rec)}
        rid = cells[id_column]
        if not rid:
            raise DataError(f"{path}: line {line}: empty {id_column!r}")
        if rid in seen:
            raise DataError(f"{path}: line {line}: id {rid!r} repeats line {seen[rid]}")
        seen[rid] = line
        files = {}
        for ch in channels:
            if not cells[ch]:
                raise DataError(f"{path}: line {line} (id {rid!r}): empty cell for channel {ch!r}")
            p = Path(cells[ch]).expanduser()
            files[ch] = p if p.is_absolute() else path.parent / p
        row = ManifestRow(rid, files, {c: cells[c] or None for c in kept}, path, line)
        if check_files:
            _check_row_files(row)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _check_row_files(row: ManifestRow) -> None:
    for ch, f in row.files.items():
        if not f.is_file():
            raise DataError(f"{row.where}: channel {ch!r}: no such file {f}")


def _read_plane(path: Path, where: str) -> np.ndarray:
    """One single-channel image file (TIFF or PNG) -> [H, W] float32; several channels are an error."""
    context = f" ({where})"
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        arr, axes, _, _ = _read_tiff_raw(path)
        if axes is not None:
            arr = _arrange(arr, axes, path, "the TIFF metadata")
            arr = arr[0] if arr.shape[0] == 1 else arr
    elif suffix == ".png":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()  # decodes fully: truncation raises here
                if im.mode not in ("L", "1", "I", "F") and not im.mode.startswith("I;16"):
                    raise DataError(
                        f"{path}: mode {im.mode} has {len(im.getbands())} bands; a manifest cell must be a "
                        f"single-channel (greyscale) image{context}"
                    )
                arr = np.asarray(im)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e}){context}") from e
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use one of {IMAGE_SUFFIXES}{context}")
    if arr.ndim != 2:
        raise DataError(
            f"{path}: shape {arr.shape} holds more than one channel; a manifest cell must be a "
            f"single-channel image{context}"
        )
    return _to_float32(arr, path)


def read_manifest_row(row: ManifestRow) -> ChannelImage:
    """Stack a manifest row's channel files into one ChannelImage (source: the row id)."""
    _check_row_files(row)
    planes = {ch: _read_plane(f, f"{row.where}, channel {ch!r}") for ch, f in row.files.items()}
    shapes = {ch: p.shape for ch, p in planes.items()}
    if len(set(shapes.values())) > 1:
        text = ", ".join(f"{ch} {h}x{w} ({row.files[ch].name})" for ch, (h, w) in shapes.items())
        raise DataError(f"{row.where}: the channel images differ in size: {text}")
    return ChannelImage(
        pixels=np.stack(list(planes.values())),
        channels=list(planes),
        source=row.id,
        files=[str(f) for f in row.files.values()],
        metadata={**row.metadata, "manifest": str(row.manifest), "line": row.line},
    )


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
