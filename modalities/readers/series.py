"""Series files: CSV/TSV, netCDF and zarr read into a checked `SeriesTable`.

A series is a `SeriesTable`: values [T, V] (float64, no NaN), one name per variate and the time
index (a DatetimeIndex with a known frequency, a numeric index, or None). Inputs are CSV (a time
column and one numeric column per variate), netCDF (`.nc`) or zarr (a directory or `.zarr`) read
through xarray. Interior gaps up to max_gap are interpolated; anything that cannot be used is a
`DataError` whose message starts with the file.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from omnimae.errors import DataError

from .series_index import as_time_index, check_time, column_time_index, index_offset, parses_as_datetimes

TIME_NAMES = ("time", "date", "timestamp", "datetime", "ds")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")


@dataclass
class SeriesTable:
    values: np.ndarray  # [T, V] float64, finite
    names: list[str]  # one per variate (column)
    time: pd.Index | None  # DatetimeIndex (freq set when regular), a numeric index, or None
    source: str  # the file it came from

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"values {self.values.shape} do not fit {len(self.names)} names")
        if self.time is not None and len(self.time) != self.values.shape[0]:
            raise ValueError(f"time index has {len(self.time)} points for {self.values.shape[0]} rows")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def freq(self) -> pd.DateOffset | None:
        """The index's frequency (None for a numeric, irregular or missing index)."""
        return index_offset(self.time)


# --- reading ---------------------------------------------------------------------------------
def read_series(
    path: str | Path,
    time_column: str | None = None,
    variables: Sequence[str] | None = None,
    max_gap: int = 3,
    allow_irregular: bool = False,
) -> SeriesTable:
    """Read a CSV, netCDF or zarr series and check it (see the module docstring).

    time_column: the CSV column (or netCDF/zarr dimension) holding time; by default a column named
    time/date/timestamp/datetime/ds, else the first column when it parses as datetimes.
    variables: the variates to keep (all by default); for netCDF/zarr a data variable's name keeps
    all its variates. max_gap: interior runs of at most this many NaNs are filled by linear
    interpolation; longer runs, and NaNs at either end, are errors. allow_irregular: accept a
    datetime index whose frequency cannot be inferred (gaps are then interpolated in time).
    """
    path = Path(path).expanduser()
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir() or path.suffix.lower() == ".zarr":
        columns, time, _ = _read_xarray(path, "zarr", time_column, variables)
    elif path.suffix.lower() in NETCDF_SUFFIXES:
        columns, time, _ = _read_xarray(path, "netcdf", time_column, variables)
    else:
        columns, time, _ = _read_csv(path, time_column, variables)
    return _finish(path, columns, time, max_gap, allow_irregular)


def _read_csv(path: Path, time_column: str | None, variables: Sequence[str] | None):
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        df = pd.read_csv(path, sep=sep, float_precision="round_trip")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header, no rows)") from None
    except Exception as e:  # ParserError, UnicodeDecodeError, ...
        raise DataError(f"{path}: cannot be parsed as CSV ({type(e).__name__}: {str(e)[:300]})") from e
    names = [str(c) for c in df.columns]
    df.columns = names
    if len(set(names)) != len(names):  # pandas renames repeats, but "a" and "a.1" may both be given
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{path}: column {dup!r} appears more than once")

    if time_column is not None:
        if time_column not in names:
            raise DataError(f"{path}: time column {time_column!r} not found; columns are {_listing(names)}")
        tcol = time_column
    else:
        tcol = next((n for n in names if n.strip().lower() in TIME_NAMES), None)
        if tcol is None and names and parses_as_datetimes(df[names[0]]):
            tcol = names[0]
    time = column_time_index(path, df[tcol]) if tcol is not None else None

    candidates = [n for n in names if n != tcol]
    keep = _select(path, candidates, variables, groups={})
    if not keep:
        raise DataError(f"{path}: no value columns besides the time column {tcol!r}")
    columns = {n: _numeric_column(path, df[n], tcol) for n in keep}
    return columns, time, tcol


def _numeric_column(path: Path, col: pd.Series, tcol: str | None) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        num = pd.to_numeric(col, errors="coerce")
    bad = np.flatnonzero((num.isna() & col.notna()).to_numpy())
    if bad.size:
        hint = "" if tcol is not None else " (if it is the time column, pass time_column)"
        raise DataError(
            f"{path}: column {col.name!r} is not numeric: value {col.iloc[bad[0]]!r} at row {bad[0]}"
            f" ({bad.size} such value{'s' if bad.size > 1 else ''}){hint}"
        )
    return num.to_numpy(dtype=np.float64, na_value=np.nan)


def _read_xarray(path: Path, kind: str, time_dim: str | None, variables: Sequence[str] | None):
    try:
        import xarray as xr
    except ImportError as e:  # pragma: no cover - an optional dependency
        raise DataError(f"{path}: reading {kind} needs xarray (pip install xarray netCDF4 zarr)") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "zarr":
                ds = xr.open_zarr(path)
            else:
                ds = xr.open_dataset(path)
    except Exception as e:
        raise DataError(f"{path}: cannot be opened as {kind} ({type(e).__name__}: {str(e)[:300]})") from e
    try:
        with ds:
            return _columns_from_dataset(path, ds, time_dim, variables)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: cannot be read as {kind} ({type(e).__name__}: {str(e)[:300]})") from e


def _columns_from_dataset(path: Path, ds, time_dim: str | None, variables: Sequence[str] | None):
    bounds = {str(v.attrs["bounds"]) for v in ds.variables.values() if "bounds" in v.attrs}
    data_vars = [str(n) for n in ds.data_vars if str(n) not in bounds]
    if not data_vars:
        raise DataError(f"{path}: no data variables")
    if time_dim is not None:
        if time_dim not in ds.dims:
            raise DataError(f"{path}: time dimension {time_dim!r} not found; dimensions are {_listing(map(str, ds.dims))}")
    else:
        time_dim = _guess_time_dim(path, ds, data_vars)
    on_time = [n for n in data_vars if time_dim in ds[n].dims]
    if not on_time:
        raise DataError(f"{path}: no data variable has the time dimension {time_dim!r}")

    groups, source = _variates(path, ds, on_time, time_dim)
    keep = _select(path, list(source), variables, groups)
    columns = {name: _variate_values(path, ds, *source[name], time_dim) for name in keep}

    index = ds.indexes.get(time_dim)
    if index is None:  # a dimension without a coordinate: positions
        time = None
    else:
        time = as_time_index(path, index, time_dim)
    return columns, time, time_dim


def _variates(path: Path, ds, on_time: list[str], time_dim: str):
    """The variates of the variables on time: a 1-D variable is one; a 2-D (time, other) one gives one
    per label of `other`. Returns the names each variable gives and where each name comes from
    (the variable and its column along `other`, None for a 1-D one)."""
    single_2d = len(on_time) == 1 and ds[on_time[0]].ndim == 2
    groups: dict[str, list[str]] = {}
    source: dict[str, tuple[str, int | None]] = {}
    for n in on_time:
        da = ds[n]
        if da.ndim == 1:
            groups[n] = [n]
            source[n] = (n, None)
        elif da.ndim == 2:
            other = next(str(d) for d in da.dims if d != time_dim)
            labels = ds[other].values if other in ds.coords else np.arange(da.sizes[other])
            names = [str(lab) if single_2d else f"{n}_{lab}" for lab in labels]
            groups[n] = names
            for j, name in enumerate(names):
                if name in source:
                    raise DataError(f"{path}: variate name {name!r} (from {n!r} along {other!r}) is not unique")
                source[name] = (n, j)
        else:
            raise DataError(
                f"{path}: variable {n!r} has dimensions {tuple(map(str, da.dims))}; expected ({time_dim!r},) "
                f"or ({time_dim!r}, other)"
            )
    return groups, source


def _variate_values(path: Path, ds, var: str, j: int | None, time_dim: str) -> np.ndarray:
    """One variate's values along time, float64; a variable that is not numeric fails naming it."""
    da = ds[var]
    if da.dtype.kind not in "biuf":
        first = da.isel({time_dim: 0}).values.ravel()[:1]
        shown = f": value {first[0].item()!r} at row 0" if first.size else ""
        raise DataError(f"{path}: variable {var!r} is not numeric (dtype {da.dtype}){shown}")
    if j is not None:
        other = next(str(d) for d in da.dims if d != time_dim)
        da = da.isel({other: j})
    return np.asarray(da.values, dtype=np.float64)


def _guess_time_dim(path: Path, ds, data_vars: list[str]) -> str:
    shared = set(ds[data_vars[0]].dims)
    for n in data_vars[1:]:
        shared &= set(ds[n].dims)
    shared_dims = [str(d) for d in ds[data_vars[0]].dims if d in shared]
    timely = [
        d for d in shared_dims
        if d.lower() in TIME_NAMES
        or (d in ds.coords and (np.issubdtype(ds[d].dtype, np.datetime64) or ds[d].dtype == object))
    ]
    if len(timely) == 1:
        return timely[0]
    if len(shared_dims) == 1:
        return shared_dims[0]
    if not shared_dims:
        raise DataError(f"{path}: the data variables share no dimension, so none can be the time axis")
    raise DataError(f"{path}: cannot tell which dimension is time among {_listing(shared_dims)}; pass time_column")


def _select(path: Path, available: list[str], variables: Sequence[str] | None, groups: dict[str, list[str]]) -> list[str]:
    if variables is None:
        return available
    if isinstance(variables, str):
        variables = [variables]
    keep: list[str] = []
    for v in variables:
        found = groups.get(v) or ([v] if v in available else None)
        if found is None:
            known = list(dict.fromkeys([*groups, *available]))
            raise DataError(f"{path}: unknown variable {v!r}; available: {_listing(known)}")
        keep.extend(n for n in found if n not in keep)
    return keep


def _listing(names, limit: int = 20) -> str:
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# --- checks common to every format -----------------------------------------------------------
def _finish(path: Path, columns: dict[str, np.ndarray], time: pd.Index | None, max_gap: int,
            allow_irregular: bool) -> SeriesTable:
    names = list(columns)
    length = len(next(iter(columns.values())))
    if length == 0:
        raise DataError(f"{path}: the series is empty (no rows)")
    if time is not None:
        time = check_time(path, time, allow_irregular)
    values = np.stack([_filled(path, name, columns[name], time, max_gap) for name in names], axis=1)
    return SeriesTable(values=values, names=names, time=time, source=str(path))


def _filled(path: Path, name: str, col: np.ndarray, time: pd.Index | None, max_gap: int) -> np.ndarray:
    """A column with its interior gaps of up to max_gap NaNs interpolated (in time where the index is
    irregular); an infinite value, an empty column, NaNs at either end or a longer gap fail naming it."""
    length = len(col)
    at = lambda i: _where(i, time)  # noqa: E731
    inf = np.flatnonzero(np.isinf(col))
    if inf.size:
        raise DataError(f"{path}: column {name!r} has an infinite value at {at(inf[0])}")
    nan = np.isnan(col)
    if not nan.any():
        return col
    if nan.all():
        raise DataError(f"{path}: column {name!r} has no values (all {length} are missing)")
    ok = np.flatnonzero(~nan)
    if ok[0] > 0:
        raise DataError(
            f"{path}: column {name!r} starts with {ok[0]} missing value{'s' if ok[0] > 1 else ''} "
            f"({at(0)} to {at(ok[0] - 1)}), which cannot be interpolated; trim the start of the series"
        )
    if ok[-1] < length - 1:
        n_end = length - 1 - ok[-1]
        raise DataError(
            f"{path}: column {name!r} ends with {n_end} missing value{'s' if n_end > 1 else ''} "
            f"({at(ok[-1] + 1)} to {at(length - 1)}), which cannot be interpolated; trim the end of the series"
        )
    for start, run in _nan_runs(nan):
        if run > max_gap:
            raise DataError(
                f"{path}: column {name!r} has a gap of {run} missing values starting at {at(start)}; "
                f"gaps of up to max_gap={max_gap} are interpolated"
            )
    x = _interp_positions(time, length)
    return np.where(nan, np.interp(x, x[ok], col[ok]), col)


def _nan_runs(nan: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    edges = np.diff(np.concatenate([[0], nan.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), (ends - starts).tolist()))


def _interp_positions(time: pd.Index | None, length: int) -> np.ndarray:
    """Steps for a regular or missing index; the times themselves for an irregular one."""
    if isinstance(time, pd.DatetimeIndex) and time.freq is None:
        return (time - time[0]).to_numpy().astype("timedelta64[ns]").astype(np.float64)
    return np.arange(length, dtype=np.float64)


def _where(i: int, time: pd.Index | None) -> str:
    return f"row {i}" + (f" (time {time[i]})" if time is not None else "")
