"""Time indexes of series files: datetime parsing, regularity, frequencies, seasonal periods, the points ahead.

Shared by the series reader (which checks an index as it reads) and the time-series modality's data
source (which folds each series by the period its frequency suggests).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from omnimae.errors import DataError


def parse_datetimes(path: Path, col: pd.Series) -> pd.Series:
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


def parses_as_datetimes(col: pd.Series) -> bool:
    """Whether a text column's values all read as datetimes: how a first column is taken as time unnamed."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return False
    present = col.dropna()
    if present.empty:
        return False
    try:
        return bool(parse_datetimes(Path(), present).notna().all())
    except Exception:
        return False


def column_time_index(path: Path, col: pd.Series) -> pd.Index:
    """A table's time column as an index: numbers as they are, else datetimes in one format; a missing or
    unreadable value fails naming the column and row."""
    name = col.name
    missing = np.flatnonzero(col.isna().to_numpy())
    if missing.size:
        raise DataError(f"{path}: time column {name!r} has no value at row {missing[0]}")
    if pd.api.types.is_bool_dtype(col):
        raise DataError(f"{path}: time column {name!r} holds booleans, not times")
    if pd.api.types.is_numeric_dtype(col):
        return pd.Index(col.to_numpy(), name=name)
    parsed = parse_datetimes(path, col)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        raise DataError(
            f"{path}: time column {name!r}: value {col.iloc[bad[0]]!r} at row {bad[0]} is not a datetime "
            "in the format of the earlier rows"
        )
    return pd.DatetimeIndex(parsed, name=name)


def as_time_index(path: Path, index: pd.Index, name: str) -> pd.Index:
    """A netCDF/zarr time coordinate as a pandas index: datetimes (other calendars converted) or numbers."""
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


def check_time(path: Path, time: pd.Index, allow_irregular: bool) -> pd.Index:
    """The index, unique and sorted, with its frequency set where it is regular; an irregular datetime
    index is a DataError naming the first odd step, unless allow_irregular."""
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


def index_offset(time) -> pd.DateOffset | None:
    """The frequency of an index (set, or inferred from its points) or of an alias; None for a numeric one."""
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
    off = index_offset(time)
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
    off = index_offset(time)
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
