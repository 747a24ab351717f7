"""The evaluation suite: classic univariate series that ship inside installed packages (no download).

Choices made for every series (periodicity m, horizon h; why):

==============  ===========  ====  ====  ==========================================================
name            sampling     m     h     why
==============  ===========  ====  ====  ==========================================================
co2             weekly       52    52    yearly cycle of Mauna Loa CO2; one year ahead. 52 weeks is
                                         1.2 days short of a year, so the phase drifts slowly.
sunspots        yearly       11    11    the ~11-year solar cycle (its length varies, 9-14 years);
                                         one cycle ahead.
elnino          monthly      12    12    the annual cycle of sea-surface temperature; one year.
nile            yearly       1     10    annual flow totals have no seasonal cycle and the
                                         autocorrelation decays without a peak at any lag (a long-
                                         memory series with a level shift near 1898), so any period
                                         > 1 would be invented; m = 1 makes the MASE scale the
                                         in-sample MAE of the naive forecast (Hyndman & Koehler's
                                         choice for non-seasonal data). A decade ahead.
airline         monthly      12    12    the annual cycle of air travel; one year.
lynx            yearly       10    10    the ~10-year population cycle (9-10 years between peaks);
                                         one cycle ahead.
taylor_daily    half-hourly  48    48    the daily load cycle; day-ahead (48 half-hours), the usual
                                         horizon of short-term load forecasting.
taylor_weekly   half-hourly  336   48    the same data with the weekly cycle (weekdays differ from
                                         weekends); the same day-ahead horizon, so the two entries
                                         differ only in periodicity. Note that MASE scales by the
                                         seasonal-naive error at the entry's own period, so the two
                                         entries' MASE values are not on one scale.
==============  ===========  ====  ====  ==========================================================

Every entry is longer than `horizon * (n_origins + 1)` for n_origins = 3, so the earliest origin
still has at least one horizon of history (and the seasonal models at least two full seasons,
except where noted in `ets`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SuiteEntry:
    """One series: `loader() -> values` or `(values, DatetimeIndex | None)`, its periodicity and horizon."""

    loader: Callable[[], object]
    periodicity: int
    horizon: int
    description: str = field(default="", compare=False)

    def load(self) -> tuple[np.ndarray, pd.DatetimeIndex | None]:
        """The series as a finite 1-D float64 array, and its DatetimeIndex where known."""
        out = self.loader()
        values, index = out if isinstance(out, tuple) else (out, None)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"a suite series must be 1-D, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"a suite series has {int(np.sum(~np.isfinite(values)))} non-finite values")
        if index is not None:
            if not isinstance(index, pd.DatetimeIndex) or len(index) != len(values):
                raise ValueError("a suite series' index must be a DatetimeIndex of the same length")
        return values, index


def _yearly_index(years) -> pd.DatetimeIndex:
    years = np.asarray(years).astype(int)
    if not np.all(np.diff(years) == 1):
        raise ValueError("yearly series with missing or repeated years")
    return pd.date_range(f"{years[0]}-01-01", periods=len(years), freq="YS")


def load_co2(with_gap_mask: bool = False):
    """Weekly Mauna Loa CO2 (ppm), March 1958 - December 2001 (statsmodels), 2,284 weeks.

    The table is already on a regular weekly grid (weeks ending Saturday), but 59 weeks (2.6%) are
    missing, in 22 gaps of 1-18 weeks, the last in August 1985. The grid is made explicit (`asfreq`) and
    the gaps are filled by linear interpolation in time: dropping them instead would shift the
    yearly phase. Every gap lies before September 1985, so with the 52-week horizon and up to 16
    origins every scored window holds observed values only; interpolated values enter only
    histories (the forecasters' contexts and the MASE scale).
    `with_gap_mask=True` also returns the boolean mask of interpolated weeks.
    """
    import statsmodels.api as sm

    s = sm.datasets.co2.load_pandas().data["co2"].astype(float)
    s = s.asfreq("W-SAT")
    gaps = s.isna().to_numpy()
    filled = s.interpolate(method="time")
    if filled.isna().any():  # a gap at either end cannot be interpolated
        raise ValueError("co2: missing values at the ends of the series")
    out = (filled.to_numpy(), pd.DatetimeIndex(filled.index))
    return (*out, gaps) if with_gap_mask else out


def load_sunspots():
    """Yearly mean sunspot numbers, 1700-2008 (statsmodels), 309 years."""
    import statsmodels.api as sm

    d = sm.datasets.sunspots.load_pandas().data
    return d["SUNACTIVITY"].to_numpy(dtype=float), _yearly_index(d["YEAR"])


def load_elnino():
    """Monthly sea-surface temperature (El Nino region), 1950-2010 (statsmodels), 732 months.

    The statsmodels table is one row per year and one column per month; it is read row by row
    (January to December of each year in turn) into one monthly series.
    """
    import statsmodels.api as sm

    d = sm.datasets.elnino.load_pandas().data
    months = [c for c in d.columns if c != "YEAR"]
    if len(months) != 12:
        raise ValueError(f"elnino: expected 12 month columns, got {months}")
    years = d["YEAR"].to_numpy().astype(int)
    if not np.all(np.diff(years) == 1):
        raise ValueError("elnino: missing or repeated years")
    values = d[months].to_numpy(dtype=float).ravel()  # row-major: year by year, Jan..Dec
    return values, pd.date_range(f"{years[0]}-01-01", periods=len(values), freq="MS")


def load_nile():
    """Yearly flow volume of the Nile at Aswan, 1871-1970 (statsmodels), 100 years."""
    import statsmodels.api as sm

    d = sm.datasets.nile.load_pandas().data
    return d["volume"].to_numpy(dtype=float), _yearly_index(d["year"])


def load_airline():
    """Monthly international airline passengers, 1949-1960 (sktime; Box & Jenkins series G), 144 months."""
    from sktime.datasets import load_airline as _load

    y = _load()
    return y.to_numpy(dtype=float), pd.DatetimeIndex(y.index.to_timestamp())


def load_lynx():
    """Yearly Canadian lynx trappings, 1821-1934 (sktime), 114 years."""
    from sktime.datasets import load_lynx as _load

    y = _load()
    return y.to_numpy(dtype=float), pd.DatetimeIndex(y.index.to_timestamp())


def load_taylor():
    """Half-hourly electricity demand (MW) in England and Wales (pmdarima; Taylor 2003), 4,032 points.

    Monday 5 June 2000 to Sunday 27 August 2000: exactly 12 weeks. pmdarima gives no timestamps;
    the index is rebuilt from that documented span, each label being the start of its half hour.
    """
    from pmdarima.datasets import load_taylor as _load

    values = np.asarray(_load(), dtype=float)
    index = pd.date_range("2000-06-05 00:00", periods=len(values), freq="30min")
    if index[-1] != pd.Timestamp("2000-08-27 23:30"):
        raise ValueError(f"taylor: {len(values)} points do not span 5 June - 27 August 2000 half-hourly")
    return values, index


SUITE: dict[str, SuiteEntry] = {
    "co2": SuiteEntry(load_co2, periodicity=52, horizon=52, description="weekly Mauna Loa CO2, gaps interpolated"),
    "sunspots": SuiteEntry(load_sunspots, periodicity=11, horizon=11, description="yearly sunspot numbers"),
    "elnino": SuiteEntry(load_elnino, periodicity=12, horizon=12, description="monthly El Nino sea-surface temperature"),
    "nile": SuiteEntry(load_nile, periodicity=1, horizon=10, description="yearly Nile flow at Aswan"),
    "airline": SuiteEntry(load_airline, periodicity=12, horizon=12, description="monthly airline passengers"),
    "lynx": SuiteEntry(load_lynx, periodicity=10, horizon=10, description="yearly lynx trappings"),
    "taylor_daily": SuiteEntry(load_taylor, periodicity=48, horizon=48, description="half-hourly electricity demand, daily cycle"),
    "taylor_weekly": SuiteEntry(load_taylor, periodicity=336, horizon=48, description="half-hourly electricity demand, weekly cycle"),
}
