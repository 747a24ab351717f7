"""Baseline forecasters, each `fn(context, horizon, periodicity) -> array[horizon]`: naive, seasonal naive,
Holt-Winters (ETS) and Theta, the last two fitted by statsmodels."""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

ForecastFn = Callable[[np.ndarray, int, int], np.ndarray]


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


BASELINES: dict[str, ForecastFn] = {"naive": naive, "seasonal_naive": seasonal_naive, "ets": ets, "theta": theta}
