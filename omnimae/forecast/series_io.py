"""Time series in and out for zero-shot forecasting: read and check, seasonal periods, write, plot.

A series is a `SeriesTable`: values [T, V] (float64, no NaN), one name per variate and the time
index (a DatetimeIndex with a known frequency, a numeric index, or None). Inputs are CSV (a time
column and one numeric column per variate), netCDF (`.nc`) or zarr (a directory or `.zarr`) read
through xarray. Anything that cannot be used is a `DataError` whose message starts with the file.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from omnimae.errors import DataError
from omnimae.io import atomic_path, refuse_overwrite

TIME_NAMES = ("time", "date", "timestamp", "datetime", "ds")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
MAX_PANELS = 8


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
        return _index_offset(self.time)


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
        if tcol is None and names and _parses_as_datetimes(df[names[0]]):
            tcol = names[0]
    time = _csv_time(path, df[tcol]) if tcol is not None else None

    candidates = [n for n in names if n != tcol]
    keep = _select(path, candidates, variables, groups={})
    if not keep:
        raise DataError(f"{path}: no value columns besides the time column {tcol!r}")
    columns = {n: _numeric_column(path, df[n], tcol) for n in keep}
    return columns, time, tcol


def _parses_as_datetimes(col: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return False
    present = col.dropna()
    if present.empty:
        return False
    try:
        return bool(_parse_datetimes(Path(), present).notna().all())
    except Exception:
        return False


def _csv_time(path: Path, col: pd.Series) -> pd.Index:
    name = col.name
    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        raise DataError(f"{path}: time column {name!r} has no value at row {missing[0]}")
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{path}: time column {name!r} holds booleans, not times")
    if pd.api.types.is_numeric_dtype(col):
        return pd.Index(col.to_numpy(), name=name)
    parsed = _parse_datetimes(path, col)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        raise DataError(
            f"{path}: time column {name!r}: value {col.iloc[bad[0]]!r} at row {bad[0]} is not a datetime "
            "in the format of the earlier rows"
        )
    return pd.DatetimeIndex(parsed, name=name)


def _parse_datetimes(path: Path, col: pd.Series) -> pd.Series:
    """Datetimes in one format (inferred from the first row); offsets that change (summer time)
    become UTC; day-first dates are accepted when month-first parsing fails and day-first does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(col, errors="coerce")
        except ValueError as e:
            if "utc=True" not in str(e):
                raise DataError(f"{path}: time column {col.name!r} cannot be parsed as datetimes ({str(e)[:200]})") from e
            parsed = pd.to_datetime(col, errors="coerce", utc=True)
        if parsed.isna().any():
            try:
                dayfirst = pd.to_datetime(col, errors="coerce", dayfirst=True)
            except ValueError:
                dayfirst = None
            if dayfirst is not None and dayfirst.notna().all():
                parsed = dayfirst
    return parsed


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

    # variates: a 1-D variable is one; a 2-D (time, other) one gives one per label of `other`
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
    keep = _select(path, list(source), variables, groups)

    columns: dict[str, np.ndarray] = {}
    for name in keep:
        var, j = source[name]
        da = ds[var]
        if da.dtype.kind not in "biuf":
            first = da.isel({time_dim: 0}).values.ravel()[:1]
            shown = f": value {first[0].item()!r} at row 0" if first.size else ""
            raise DataError(f"{path}: variable {var!r} is not numeric (dtype {da.dtype}){shown}")
        if j is not None:
            other = next(str(d) for d in da.dims if d != time_dim)
            da = da.isel({other: j})
        columns[name] = np.asarray(da.values, dtype=np.float64)

    index = ds.indexes.get(time_dim)
    if index is None:  # a dimension without a coordinate: positions
        time = None
    else:
        time = _as_time_index(path, index, time_dim)
    return columns, time, time_dim


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


def _as_time_index(path: Path, index: pd.Index, name: str) -> pd.Index:
    if isinstance(index, pd.DatetimeIndex) or pd.api.types.is_numeric_dtype(index.dtype):
        return index.rename(name)
    if hasattr(index, "to_datetimeindex"):  # a CFTimeIndex (non-standard calendar)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return index.to_datetimeindex().rename(name)
        except Exception as e:
            raise DataError(f"{path}: time coordinate {name!r} uses a calendar pandas cannot hold ({e})") from e
    raise DataError(f"{path}: time coordinate {name!r} is neither datetimes nor numbers (dtype {index.dtype})")


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
        time = _check_time(path, time, allow_irregular)
    values = np.stack([columns[n] for n in names], axis=1)
    at = lambda i: _where(i, time)  # noqa: E731
    for j, name in enumerate(names):
        col = values[:, j]
        inf = np.flatnonzero(np.isinf(col))
        if inf.size:
            raise DataError(f"{path}: column {name!r} has an infinite value at {at(inf[0])}")
        nan = np.isnan(col)
        if not nan.any():
            continue
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
        values[:, j] = np.where(nan, np.interp(x, x[ok], col[ok]), col)
    return SeriesTable(values=values, names=names, time=time, source=str(path))


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


def _check_time(path: Path, time: pd.Index, allow_irregular: bool) -> pd.Index:
    name = time.name
    label = f"time {'column' if name is not None else 'index'}" + (f" {name!r}" if name is not None else "")
    dup = np.flatnonzero(time.duplicated())
    if dup.size:
        i = int(dup[0])
        first = int(np.flatnonzero(time == time[i])[0])
        raise DataError(f"{path}: {label} has a duplicate at row {i}: {time[i]} already appears at row {first}")
    if not time.is_monotonic_increasing:
        vals = time.to_numpy()
        i = int(np.flatnonzero(vals[1:] < vals[:-1])[0]) + 1
        raise DataError(f"{path}: {label} is not sorted: row {i} ({time[i]}) comes before row {i - 1} ({time[i - 1]})")
    if not isinstance(time, pd.DatetimeIndex) or len(time) < 2:
        return time
    if len(time) == 2:
        return pd.DatetimeIndex(time, freq=pd.tseries.frequencies.to_offset(time[1] - time[0]), name=name)
    freq = pd.infer_freq(time)
    if freq is not None:
        return pd.DatetimeIndex(time, freq=freq, name=name)
    if allow_irregular:
        return time
    i = _first_odd_step(time)
    steps = pd.Series(np.diff(time.to_numpy()))
    usual = steps.mode().iloc[0]
    raise DataError(
        f"{path}: {label} is irregular, its frequency cannot be inferred: the step from row {i - 1} "
        f"({time[i - 1]}) to row {i} ({time[i]}) is {pd.Timedelta(time[i] - time[i - 1])}, the earlier rows "
        f"follow a regular pattern (most common step {pd.Timedelta(usual)}); fill in or remove the odd rows, "
        "or pass allow_irregular=True"
    )


def _first_odd_step(time: pd.DatetimeIndex) -> int:
    """The first row whose step breaks the pattern of the rows before it (a prefix search)."""
    lo, hi = 3, len(time)  # infer_freq(time[:lo - 1]) is taken as regular, infer_freq(time[:hi]) is None
    while lo < hi:
        mid = (lo + hi) // 2
        if pd.infer_freq(time[:mid]) is None:
            hi = mid
        else:
            lo = mid + 1
    row = lo - 1  # the last row of the shortest irregular prefix
    if row == 2:  # three rows, two steps: blame the one that differs from the most common step
        steps = np.diff(time.to_numpy())
        usual = pd.Series(steps).mode().iloc[0]
        if steps[0] != usual:
            return 1
    return row


# --- frequency and seasonal periods ----------------------------------------------------------
_LEGACY_ALIASES = {
    "T": "min", "H": "h", "S": "s", "L": "ms", "U": "us", "N": "ns", "A": "YE", "Y": "YE", "AS": "YS",
    "M": "ME", "Q": "QE", "BM": "BME", "BQ": "BQE", "BA": "BYE", "BY": "BYE", "BAS": "BYS",
}


def to_offset(freq) -> pd.DateOffset | None:
    """A pandas offset from an offset, a Timedelta or an alias (current or pre-2.2 pandas: T, H, M, Q, A...)."""
    if freq is None or isinstance(freq, pd.DateOffset):
        return freq
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError):
        if not isinstance(freq, str):
            raise
    m = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)(-[A-Za-z]+)?\s*", freq)
    if m and m.group(2) in _LEGACY_ALIASES:
        return pd.tseries.frequencies.to_offset(f"{m.group(1)}{_LEGACY_ALIASES[m.group(2)]}{m.group(3) or ''}")
    raise ValueError(f"unknown frequency {freq!r}")


def _index_offset(time) -> pd.DateOffset | None:
    if time is None:
        return None
    if isinstance(time, (str, pd.DateOffset, pd.Timedelta)):
        return to_offset(time)
    if not isinstance(time, (pd.DatetimeIndex, pd.PeriodIndex, pd.TimedeltaIndex)):
        return None
    if getattr(time, "freq", None) is not None:
        return to_offset(time.freq)
    if len(time) >= 3:
        inferred = pd.infer_freq(time)
        return to_offset(inferred) if inferred else None
    if len(time) == 2 and not isinstance(time, pd.PeriodIndex):
        return to_offset(pd.Timedelta(time[1] - time[0]))
    return None


_SECOND = 10**9
_MINUTE, _HOUR, _DAY = 60 * _SECOND, 3600 * _SECOND, 86400 * _SECOND
_WEEK = 7 * _DAY
# cycles (in nanoseconds) for fixed-length steps, the most common first, by the step's unit
_TICK_CYCLES = {
    pd.offsets.Hour: (_DAY, _WEEK),
    pd.offsets.Minute: (_DAY, _WEEK, _HOUR),
    pd.offsets.Second: (_HOUR, _MINUTE, _DAY),
}
_SUBSECOND_CYCLES = (_SECOND, _MINUTE, _HOUR)


def _calendar_cycles(off: pd.DateOffset) -> tuple[int, ...] | None:
    """Cycles counted in the offset's own unit (before dividing by its multiple n)."""
    o = pd.offsets
    if isinstance(off, o.Day):
        return (7, 365, 30)  # week, year, month
    if isinstance(off, (o.BusinessDay, o.CustomBusinessDay)):
        return (5,)  # business week
    if isinstance(off, o.Week):
        return (52,)
    if isinstance(off, (o.SemiMonthBegin, o.SemiMonthEnd)):
        return (24,)
    if isinstance(off, (o.MonthBegin, o.MonthEnd, o.BusinessMonthBegin, o.BusinessMonthEnd,
                        o.CustomBusinessMonthBegin, o.CustomBusinessMonthEnd)):
        return (12,)
    if isinstance(off, (o.QuarterBegin, o.QuarterEnd, o.BQuarterBegin, o.BQuarterEnd)):
        return (4,)
    return None  # years (no cycle within a year of yearly data) and anything exotic


def periodicity_candidates(time) -> list[int]:
    """Seasonal periods (in steps) the index's frequency suggests, the most common first, ending in 1.

    E.g. h -> [24, 168, 1] (day, week); 30min -> [48, 336, 1]; D -> [7, 365, 30, 1]; B -> [5, 1];
    W -> [52, 1]; MS/ME -> [12, 1]; QS/QE -> [4, 1]; YS/YE -> [1]. A multiple divides the base
    cycles and keeps those that stay whole (2h -> [12, 84, 1]). Also takes an offset or an alias
    (old ones too: T, H, M, Q, A). A None, numeric or irregular index gives [1].
    """
    off = _index_offset(time)
    out: list[int] = []
    if off is not None and off.n > 0:
        if isinstance(off, pd.offsets.Tick):
            step = off.nanos
            cycles = next((c for cls, c in _TICK_CYCLES.items() if isinstance(off, cls)), _SUBSECOND_CYCLES)
        else:
            step, cycles = off.n, _calendar_cycles(off) or ()
        for cycle in cycles:
            if cycle % step == 0 and cycle // step > 1 and cycle // step not in out:
                out.append(cycle // step)
    return out + [1]


def future_index(time: pd.Index | None, horizon: int, length: int = 0) -> pd.Index:
    """The `horizon` points after `time`: same frequency for datetimes (the median step when the
    index is irregular), the same step for a numeric index, integers from `length` when time is None."""
    if horizon < 0:
        raise ValueError(f"horizon must be >= 0, got {horizon}")
    if time is None:
        return pd.RangeIndex(length, length + horizon, name="time")
    name = time.name
    off = _index_offset(time)
    if isinstance(time, pd.PeriodIndex):
        if off is None:
            raise ValueError("a PeriodIndex without a frequency cannot be extended")
        return pd.period_range(time[-1] + 1, periods=horizon, freq=time.freq, name=name)
    if isinstance(time, pd.DatetimeIndex):
        if off is not None:
            out = pd.date_range(time[-1], periods=horizon + 1, freq=off, name=name)[1:]
            return out.as_unit(time.unit) if hasattr(out, "as_unit") else out
        if len(time) < 2:
            raise ValueError("cannot extend a time index of one point without a frequency")
        step = pd.Timedelta(np.median(np.diff(time.asi8))).as_unit(time.unit)
        return pd.DatetimeIndex([time[-1] + step * k for k in range(1, horizon + 1)], name=name).as_unit(time.unit)
    values = np.asarray(time)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"cannot extend a time index of dtype {time.dtype}")
    if len(values) < 2:
        step = 1
    else:
        diffs = np.diff(values)
        step = diffs[0] if np.all(diffs == diffs[0]) else np.median(diffs)
    if values.dtype.kind in "iu" and float(step).is_integer():
        step = int(step)
        return pd.Index(values[-1] + step * np.arange(1, horizon + 1, dtype=values.dtype), name=name)
    return pd.Index(values[-1] + step * np.arange(1, horizon + 1, dtype=np.float64), name=name)


# --- writing and plotting --------------------------------------------------------------------
def _check_forecast(table: SeriesTable, forecast: np.ndarray, what: str = "forecast") -> np.ndarray:
    forecast = np.asarray(forecast, dtype=np.float64)
    if forecast.ndim == 1 and len(table.names) == 1:
        forecast = forecast[:, None]
    if forecast.ndim != 2 or forecast.shape[1] != len(table.names):
        raise ValueError(f"{what} of shape {forecast.shape} does not fit [H, {len(table.names)}] variates")
    bad = ~np.isfinite(forecast)
    if bad.any():
        raise DataError(f"{table.source}: the {what} holds {int(bad.sum())} NaN or infinite values; nothing is written")
    return forecast


def _display_scale(*arrays: np.ndarray) -> int:
    """A power of ten to divide plotted values by: matplotlib's ticks overflow within about 1e308."""
    peak = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    return int(np.floor(np.log10(peak))) if peak > 1e300 else 0


def write_forecast(
    path: str | Path,
    table: SeriesTable,
    forecast: np.ndarray,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """Write the forecast [H, V] as CSV (a time column and the input's column names) or netCDF
    (`.nc`: a `time` dimension, one variable per variate), by the suffix; never over an input."""
    path = Path(path).expanduser()
    forecast = _check_forecast(table, forecast)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", *NETCDF_SUFFIXES):
        raise DataError(f"{path}: unsupported output format {path.suffix!r}; use .csv or .nc")
    refuse_overwrite(path, table.source, *inputs, overwrite=overwrite)
    index = future_index(table.time, len(forecast), length=len(table))
    time_name = str(table.time.name) if table.time is not None and table.time.name is not None else "time"
    if suffix in NETCDF_SUFFIXES:
        import xarray as xr

        if "time" in table.names:
            raise DataError(f"{path}: a variate is named 'time', like the netCDF file's time dimension; "
                            "rename the column or write .csv")
        attrs = {"source": str(table.source), "description": "forecast"}
        if isinstance(index, pd.DatetimeIndex) and index.tz is not None:  # netCDF holds naive times
            attrs["time_zone"] = "UTC"
            index = index.tz_convert("UTC").tz_localize(None)
        ds = xr.Dataset(
            {n: ("time", forecast[:, j]) for j, n in enumerate(table.names)},
            coords={"time": np.asarray(index)},
            attrs=attrs,
        )
        with atomic_path(path) as tmp:
            try:
                ds.to_netcdf(tmp)
            except Exception as e:
                raise DataError(f"{path}: cannot write netCDF ({type(e).__name__}: {str(e)[:300]})") from e
    else:
        if time_name in table.names:
            raise DataError(f"{path}: a variate is named {time_name!r}, like the time column")
        df = pd.DataFrame(forecast, columns=table.names)
        df.insert(0, time_name, np.asarray(index))
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


def plot_forecast(
    path: str | Path,
    table: SeriesTable,
    forecast: np.ndarray,
    truth: np.ndarray | None = None,
    context_points: int | None = None,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> Path:
    """A PNG with one panel per variate (the first 8): the end of the context, the forecast and
    the truth when given. context_points defaults to max(3 x horizon, 64), at most the whole series.
    Never written over an input, nor over an existing file unless overwrite."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path).expanduser()
    forecast = _check_forecast(table, forecast)
    refuse_overwrite(path, table.source, *inputs, overwrite=overwrite)
    horizon, n_var = forecast.shape
    if truth is not None:
        truth = _check_forecast(table, truth, "truth")
    n_ctx = max(3 * horizon, 64) if context_points is None else int(context_points)
    n_ctx = max(0, min(n_ctx, len(table)))
    if table.time is not None:
        x_ctx = table.time[len(table) - n_ctx:]
    else:
        x_ctx = pd.RangeIndex(len(table) - n_ctx, len(table))
    x_fc = future_index(table.time, horizon, length=len(table))
    x_truth = future_index(table.time, len(truth), length=len(table)) if truth is not None else None

    shown = min(n_var, MAX_PANELS)
    fig = Figure(figsize=(10, 2.2 * shown + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(shown, 1, sharex=True, squeeze=False)[:, 0]
    for j, ax in enumerate(axes):
        ctx, fc, tr = table.values[len(table) - n_ctx:, j], forecast[:, j], truth[:, j] if truth is not None else np.empty(0)
        k = _display_scale(ctx, fc, tr)
        if n_ctx:
            ax.plot(np.asarray(x_ctx), ctx / 10.0**k, color="0.3", lw=1, label="context")
        if truth is not None:
            ax.plot(np.asarray(x_truth), tr / 10.0**k, color="tab:green", lw=1, label="truth")
        ax.plot(np.asarray(x_fc), fc / 10.0**k, color="tab:orange", lw=1.5, label="forecast")
        if n_ctx and horizon:
            ax.axvline(np.asarray(x_ctx)[-1], color="0.6", lw=0.8, ls=":")
        ax.set_ylabel(table.names[j] + (f" (x 1e{k})" if k else ""), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7, loc="upper left")
    title = f"{Path(table.source).name}: {horizon}-step forecast"
    if n_var > shown:
        title += f" (first {shown} of {n_var} variates shown)"
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
