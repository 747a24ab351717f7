"""Forecast evaluation on real series that ship inside installed packages (no download).

The suite (`SUITE`) holds classic univariate series from statsmodels, sktime and pmdarima, each
with its periodicity and a forecast horizon. `evaluate` scores any number of forecasters on it
with rolling origins: for every series it forecasts the last `n_origins` non-overlapping windows
of `horizon` points from the history before each window, and averages MAE, MSE, MASE and sMAPE
over the windows. Four baselines are included (`naive`, `seasonal_naive`, `ets`, `theta`); a
forecaster is any `fn(context, horizon, periodicity) -> array[horizon]`.

    from omnimae.forecast.evaluate import BASELINES, run_forecast_eval
    run_forecast_eval(BASELINES, "runs/forecast_eval")

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

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from omnimae.errors import OutputError
from omnimae.io import atomic_path, check_writable

METRICS = ("MAE", "MSE", "MASE", "sMAPE")

Forecaster = Callable[[np.ndarray, int, int], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _pair(y, f) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float)
    f = np.asarray(f, dtype=float)
    if y.shape != f.shape:
        raise ValueError(f"actual and forecast differ in shape: {y.shape} vs {f.shape}")
    if y.size == 0:
        raise ValueError("actual and forecast are empty")
    return y, f


def mae(y, f) -> float:
    """Mean absolute error."""
    y, f = _pair(y, f)
    return float(np.mean(np.abs(y - f)))


def mse(y, f) -> float:
    """Mean squared error."""
    y, f = _pair(y, f)
    return float(np.mean((y - f) ** 2))


def smape(y, f) -> float:
    """Symmetric MAPE in percent: mean of 200 |y - f| / (|y| + |f|), a term being 0 where y = f = 0."""
    y, f = _pair(y, f)
    num = 200.0 * np.abs(y - f)
    den = np.abs(y) + np.abs(f)
    return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den > 0)))


def mase_scale(history, m: int) -> float:
    """In-sample MAE of the seasonal-naive forecast with period m on `history` (the MASE denominator).

    Falls back to m = 1 when the history is shorter than m + 1. Raises ValueError when the history
    has fewer than 2 points or the scale is 0 (a constant, or exactly m-periodic, history).
    """
    h = np.asarray(history, dtype=float)
    if h.ndim != 1:
        raise ValueError(f"history must be 1-D, got shape {h.shape}")
    m = int(m)
    if m < 1:
        raise ValueError(f"period m must be >= 1, got {m}")
    if len(h) < m + 1:
        m = 1
    if len(h) < 2:
        raise ValueError(f"MASE needs a history of at least 2 points, got {len(h)}")
    scale = float(np.mean(np.abs(h[m:] - h[:-m])))
    if not np.isfinite(scale) or scale == 0:
        raise ValueError(
            f"MASE is undefined: the in-sample MAE of the seasonal-naive forecast with period {m} "
            f"on the history ({len(h)} points) is {scale} (the history repeats exactly with period {m})"
        )
    return scale


def mase(y, f, history, m: int) -> float:
    """Mean absolute scaled error: MAE(y, f) / in-sample MAE of the period-m seasonal naive on history."""
    return mae(y, f) / mase_scale(history, m)


# ---------------------------------------------------------------------------------------------
# Rolling origins
# ---------------------------------------------------------------------------------------------


def rolling_origins(n: int, horizon: int, n_origins: int = 3) -> list[int]:
    """Origins (ascending) of `n_origins` non-overlapping windows [origin, origin + horizon).

    The last window ends at the end of the series and each earlier one steps back by `horizon`.
    Raises ValueError unless every window lies in the series with at least one point of history.
    """
    n, horizon, n_origins = int(n), int(horizon), int(n_origins)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if n_origins < 1:
        raise ValueError(f"n_origins must be >= 1, got {n_origins}")
    if n - n_origins * horizon < 1:
        raise ValueError(
            f"a series of {n} points is too short for {n_origins} windows of {horizon} "
            f"(needs at least {n_origins * horizon + 1})"
        )
    return [n - k * horizon for k in range(n_origins, 0, -1)]


# ---------------------------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Baselines: fn(context, horizon, periodicity) -> array[horizon]
# ---------------------------------------------------------------------------------------------


def _context(context) -> np.ndarray:
    c = np.asarray(context, dtype=float)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError(f"context must be a non-empty 1-D array, got shape {c.shape}")
    return c


def naive(context: np.ndarray, horizon: int, periodicity: int = 1) -> np.ndarray:
    """Repeat the last value."""
    c = _context(context)
    return np.full(int(horizon), c[-1])


def seasonal_naive(context: np.ndarray, horizon: int, periodicity: int) -> np.ndarray:
    """Repeat the last full period; the naive forecast when the context is shorter than one period."""
    c = _context(context)
    m = int(periodicity)
    if m <= 1 or len(c) < m:
        return naive(c, horizon)
    return c[len(c) - m + np.arange(int(horizon)) % m]


def _silenced_fit(build: Callable[[], object]):
    """Build and fit a statsmodels model with its ConvergenceWarning silenced (only that warning)."""
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return build()


_FIT_ERRORS = (ValueError, ZeroDivisionError, np.linalg.LinAlgError, IndexError)


def ets(context: np.ndarray, horizon: int, periodicity: int, damped: bool = True) -> np.ndarray:
    """Holt-Winters exponential smoothing (statsmodels ExponentialSmoothing), additive components.

    The model is the first of these that the context allows and that fits to a finite forecast:
    additive trend + additive seasonality of period `periodicity` (when it is > 1 and the context
    holds at least 2 full seasons); additive trend alone (at least 4 points); simple exponential
    smoothing (at least 2 points); else the naive forecast. A constant context gets the constant.
    The trend is damped by default (`damped=False` for the linear trend): with half-hourly demand
    the fitted trend smoothing goes to 1 and a linear trend extrapolates the last half hour's
    slope across the whole day. Initial states are estimated; every step is deterministic.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    c = _context(context)
    h, m = int(horizon), int(periodicity)
    if len(c) < 2 or np.all(c == c[0]):
        return naive(c, h)
    candidates = []
    if m > 1 and len(c) >= 2 * m:
        candidates.append(dict(trend="add", damped_trend=damped, seasonal="add", seasonal_periods=m))
    if len(c) >= 4:
        candidates.append(dict(trend="add", damped_trend=damped))
    candidates.append(dict(trend=None))
    for kw in candidates:
        try:
            fit = _silenced_fit(lambda: ExponentialSmoothing(c, initialization_method="estimated", **kw).fit())
            f = np.asarray(fit.forecast(h), dtype=float)
        except _FIT_ERRORS:
            continue
        if f.shape == (h,) and np.all(np.isfinite(f)):
            return f
    return naive(c, h)


def theta(context: np.ndarray, horizon: int, periodicity: int) -> np.ndarray:
    """The Theta method (statsmodels ThetaModel) with period `periodicity`.

    Deseasonalizing (statsmodels' default test for seasonality, then a multiplicative or additive
    classical decomposition) is allowed only when the period is > 1 and the context holds at least
    2 full seasons. Contexts of fewer than 3 points, constant contexts, and fits that fail or give
    non-finite values get the naive forecast.
    """
    from statsmodels.tsa.forecasting.theta import ThetaModel

    c = _context(context)
    h, m = int(horizon), int(periodicity)
    if len(c) < 3 or np.all(c == c[0]):
        return naive(c, h)
    seasonal = m > 1 and len(c) >= 2 * m
    try:
        fit = _silenced_fit(lambda: ThetaModel(c, period=m if seasonal else 1, deseasonalize=seasonal).fit())
        f = np.asarray(fit.forecast(h), dtype=float)
    except _FIT_ERRORS:
        return naive(c, h)
    return f if f.shape == (h,) and np.all(np.isfinite(f)) else naive(c, h)


BASELINES: dict[str, Forecaster] = {"naive": naive, "seasonal_naive": seasonal_naive, "ets": ets, "theta": theta}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _checked_forecast(out, horizon: int, method: str, series: str) -> np.ndarray:
    try:
        f = np.asarray(out, dtype=float)
    except (TypeError, ValueError) as e:
        raise ValueError(f"forecaster {method!r} on series {series!r} returned something not numeric: {e}") from None
    if f.shape != (horizon,):
        raise ValueError(f"forecaster {method!r} on series {series!r} returned shape {f.shape}, expected ({horizon},)")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"forecaster {method!r} on series {series!r} returned {int(np.sum(~np.isfinite(f)))} non-finite values")
    return f


def evaluate(
    forecasters: Mapping[str, Forecaster],
    suite: Mapping[str, SuiteEntry] | None = None,
    n_origins: int = 3,
    max_context: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score every forecaster on every series of `suite` (default `SUITE`) with rolling origins.

    For each origin of `rolling_origins(len(series), horizon, n_origins)` the forecaster gets a
    copy of the history before the origin (its last `max_context` points if given), the horizon
    and the periodicity, and must return exactly `horizon` finite values (else ValueError naming
    the method and the series). MASE is scaled by the seasonal-naive in-sample MAE on the whole
    history before the origin, whatever `max_context` is, so it does not change with the context
    a model is given. Returns one row per (series, method): series, method, horizon, periodicity,
    MAE, MSE, MASE, sMAPE (means over the origins) and seconds (time spent in the forecaster).
    """
    from tqdm.auto import tqdm

    suite = SUITE if suite is None else suite
    if not forecasters:
        raise ValueError("no forecasters to evaluate")
    if max_context is not None and int(max_context) < 1:
        raise ValueError(f"max_context must be >= 1 or None, got {max_context}")
    if int(n_origins) < 1:  # before the first series loads
        raise ValueError(f"n_origins must be >= 1, got {n_origins}")
    rows = []
    bar = tqdm(list(suite.items()), desc="forecast eval", unit="series", disable=not progress)
    for name, entry in bar:
        bar.set_postfix_str(name)
        values, _ = entry.load()
        h, m = int(entry.horizon), int(entry.periodicity)
        origins = rolling_origins(len(values), h, n_origins)
        for method, fn in forecasters.items():
            scores, seconds = [], 0.0
            for o in origins:
                history, actual = values[:o], values[o : o + h]
                context = history if max_context is None else history[-int(max_context) :]
                t0 = time.perf_counter()
                try:
                    out = fn(context.copy(), h, m)
                except Exception as e:
                    if hasattr(e, "add_note"):
                        e.add_note(f"raised by forecaster {method!r} on series {name!r} at origin {o}")
                    raise
                seconds += time.perf_counter() - t0
                f = _checked_forecast(out, h, method, name)
                try:
                    scale = mase_scale(history, m)
                except ValueError as e:
                    raise ValueError(f"series {name!r}, origin {o}: {e}") from None
                scores.append((mae(actual, f), mse(actual, f), mae(actual, f) / scale, smape(actual, f)))
            means = np.mean(np.asarray(scores), axis=0)
            rows.append(
                {"series": name, "method": method, "horizon": h, "periodicity": m}
                | dict(zip(METRICS, map(float, means)))
                | {"seconds": seconds}
            )
    return pd.DataFrame(rows, columns=["series", "method", "horizon", "periodicity", *METRICS, "seconds"])


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric over the series, one row per method, sorted by mean MASE (best first)."""
    out = df.groupby("method", sort=False)[list(METRICS)].mean()
    out.insert(0, "n_series", df.groupby("method", sort=False)["series"].nunique())
    return out.sort_values("MASE", kind="stable")


def _fmt(col: str, x: float) -> str:
    if col in ("MASE", "sMAPE"):
        return f"{x:.3f}" if col == "MASE" else f"{x:.2f}"
    return f"{x:.4g}"


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width text table: the metrics of each (series, method), then the mean per method."""
    head = ["series", "method", *METRICS]
    body: list[list[str] | None] = []
    for series, group in df.groupby("series", sort=False):
        for i, (_, r) in enumerate(group.iterrows()):
            body.append([series if i == 0 else "", str(r["method"]), *(_fmt(c, r[c]) for c in METRICS)])
        body.append(None)  # a rule between series
    for i, (method, r) in enumerate(summary(df).iterrows()):
        body.append(["mean" if i == 0 else "", str(method), *(_fmt(c, r[c]) for c in METRICS)])
    rows = [r for r in body if r is not None]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(head))
    return "\n".join([line(head), rule, *(rule if r is None else line(r) for r in body)])


def _mase_bar_chart(summ: pd.DataFrame, path: Path, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(1.2 * len(summ) + 2.5, 3.6))
    ax = fig.add_subplot()
    bars = ax.bar(summ.index.astype(str), summ["MASE"], color="#4c72b0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("mean MASE (lower is better)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


RESULT_FILES = ("forecast_eval.csv", "forecast_eval_summary.csv", "forecast_eval_mase.png")


def check_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output_dir that already holds results (unless overwrite) or cannot be written."""
    out = Path(output_dir).expanduser()
    held = [name for name in RESULT_FILES if (out / name).exists()]
    if held and not overwrite:
        raise OutputError(f"{output_dir}: already holds forecast-eval results ({', '.join(held)}); "
                          "choose another output_dir or pass overwrite=true")
    check_writable(out / RESULT_FILES[0])
    return out


def run_forecast_eval(
    forecasters: Mapping[str, Forecaster],
    output_dir: str | Path,
    n_origins: int = 3,
    max_context: int | None = None,
    suite: Mapping[str, SuiteEntry] | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Evaluate, print the tables, and write into output_dir (each file atomically):
    forecast_eval.csv (per series x method), forecast_eval_summary.csv (per method) and
    forecast_eval_mase.png (mean MASE per method). Returns the per-series DataFrame.
    An output_dir that already holds results is refused unless overwrite.
    """
    out = check_output_dir(output_dir, overwrite)
    suite = SUITE if suite is None else suite
    df = evaluate(forecasters, suite, n_origins=n_origins, max_context=max_context, progress=True)
    summ = summary(df)
    print(format_table(df))
    print()
    print(f"summary over {df['series'].nunique()} series, {n_origins} origins each, sorted by mean MASE:")
    print(summ.to_string(float_format=lambda x: f"{x:.4g}"))
    table, summary_table, chart = (out / name for name in RESULT_FILES)
    with atomic_path(table) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(summary_table) as tmp:
        summ.to_csv(tmp, index_label="method")
    _mase_bar_chart(summ, chart, f"mean MASE over {df['series'].nunique()} series, {n_origins} origins")
    return df
