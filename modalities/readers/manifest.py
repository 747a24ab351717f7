"""Plate-imaging manifests: a CSV with one row per image and one single-channel file (TIFF or PNG) per channel."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from omnimae.data.files import check_file
from omnimae.errors import DataError

from .microscopy import TIFF_SUFFIXES, ChannelImage, arrange_axes, to_float32
from .ome_tiff import read_tiff_array

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")  # single-channel files a manifest may name
ID_COLUMNS = ("image_id", "id")


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
    # long: the manifest's steps in order (read, columns, rows, paths), each checked where it happens
    path = Path(csv_path).expanduser()
    header, records = _read_csv(path)
    if id_column is None:
        id_column = _id_column(path, header)
    kept = ([label_column] if label_column else []) + list(metadata_columns)
    for col in [id_column, *kept]:
        if col not in header:
            raise DataError(f"{path}: no column {col!r}; the columns are {header}")
    channels = _channel_columns(path, [h for h in header if h != id_column and h not in kept], expected_channels)
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
        row = ManifestRow(rid, _row_files(path, line, rid, cells, channels), {c: cells[c] or None for c in kept}, path, line)
        if check_files:
            _check_row_files(row)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (named, each column once) and the (line number, cells) records after it."""
    check_file(path)
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
    return header, records


def _id_column(path: Path, header: list[str]) -> str:
    present = [c for c in ID_COLUMNS if c in header]
    if not present:
        raise DataError(f"{path}: no id column ({' or '.join(ID_COLUMNS)}) in {header}; pass id_column=")
    if len(present) > 1:
        raise DataError(f"{path}: both {present} columns present; pass id_column= to choose the id")
    return present[0]


def _channel_columns(path: Path, channels: list[str], expected_channels: Sequence[str] | None) -> list[str]:
    """The channel columns in the CSV's order, or in expected_channels' order (then exactly those)."""
    if expected_channels is None:
        return channels
    expected = [str(c) for c in expected_channels]
    missing = [c for c in expected if c not in channels]
    unexpected = [c for c in channels if c not in expected]
    if missing or unexpected or len(set(expected)) != len(expected):
        raise DataError(
            f"{path}: the channel columns {channels} disagree with expected_channels {expected}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unexpected} (name extra columns in metadata_columns)" if unexpected else "")
        )
    return expected


def _row_files(path: Path, line: int, rid: str, cells: dict[str, str], channels: list[str]) -> dict[str, Path]:
    """A row's file per channel: its cell, relative to the manifest's folder unless absolute."""
    files = {}
    for ch in channels:
        if not cells[ch]:
            raise DataError(f"{path}: line {line} (id {rid!r}): empty cell for channel {ch!r}")
        p = Path(cells[ch]).expanduser()
        files[ch] = p if p.is_absolute() else path.parent / p
    return files


def _check_row_files(row: ManifestRow) -> None:
    for ch, f in row.files.items():
        if not f.is_file():
            raise DataError(f"{row.where}: channel {ch!r}: no such file {f}")


def _read_plane(path: Path, where: str) -> np.ndarray:
    """One single-channel image file (TIFF or PNG) -> [H, W] float32; several channels are an error."""
    context = f" ({where})"
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        tiff = read_tiff_array(path)
        arr, axes = tiff.array, tiff.axes
        if axes is not None:
            arr = arrange_axes(arr, axes, path, "the TIFF metadata")
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
    return to_float32(arr, path)


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

