"""Forecasts out: a forecast [H, V] written beside its series as CSV/TSV or netCDF, never over an input."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from omnimae.errors import DataError
from omnimae.forecasting.series import SERIES, SeriesTable
from omnimae.io import atomic_path, refuse_overwrite


def check_forecast(table: SeriesTable, forecast: np.ndarray, what: str = "forecast") -> np.ndarray:
    """The forecast (or truth) as [H, V] float64 for the table's variates; a non-finite value is a DataError."""
    forecast = np.asarray(forecast, dtype=np.float64)
    if forecast.ndim == 1 and len(table.names) == 1:
        forecast = forecast[:, None]
    if forecast.ndim != 2 or forecast.shape[1] != len(table.names):
        raise ValueError(f"{what} of shape {forecast.shape} does not fit [H, {len(table.names)}] variates")
    bad = ~np.isfinite(forecast)
    if bad.any():
        raise DataError(f"{table.source}: the {what} holds {int(bad.sum())} NaN or infinite values; nothing is written")
    return forecast


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
    forecast = check_forecast(table, forecast)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", *SERIES.netcdf_suffixes):
        raise DataError(f"{path}: unsupported output format {path.suffix!r}; use .csv or .nc")
    refuse_overwrite(path, table.source, *inputs, overwrite=overwrite)
    index = SERIES.future_index(table.time, len(forecast), length=len(table))
    time_name = str(table.time.name) if table.time is not None and table.time.name is not None else "time"
    if suffix in SERIES.netcdf_suffixes:
        _write_netcdf(path, table, forecast, index)
        return path
    if time_name in table.names:
        raise DataError(f"{path}: a variate is named {time_name!r}, like the time column")
    df = pd.DataFrame(forecast, columns=table.names)
    df.insert(0, time_name, np.asarray(index))
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


def _write_netcdf(path: Path, table: SeriesTable, forecast: np.ndarray, index: pd.Index) -> None:
    """A `time` dimension and one variable per variate; aware times are stored naive in UTC, so marked."""
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
