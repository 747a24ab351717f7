"""Forecast error metrics: MAE, MSE, sMAPE and MASE (scaled by the seasonal-naive in-sample error)."""
from __future__ import annotations

import numpy as np

METRICS = ("MAE", "MSE", "MASE", "sMAPE")


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
