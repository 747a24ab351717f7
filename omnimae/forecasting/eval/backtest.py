"""The backtest: every forecaster on every series of a suite at rolling origins, scored and written out."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from omnimae.errors import OutputError
from omnimae.forecasting.eval.baselines import ForecastFn
from omnimae.forecasting.eval.charts import format_table, mase_bar_chart, summary
from omnimae.forecasting.eval.metrics import METRICS, mae, mase_scale, mse, smape
from omnimae.forecasting.eval.suite import SUITE, SuiteEntry
from omnimae.io import atomic_path, check_writable


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
    forecasters: Mapping[str, ForecastFn],
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
        rows += [_score(method, fn, name, values, origins, h, m, max_context) for method, fn in forecasters.items()]
    return pd.DataFrame(rows, columns=["series", "method", "horizon", "periodicity", *METRICS, "seconds"])


def _score(method: str, fn: ForecastFn, name: str, values: np.ndarray, origins: list[int], h: int, m: int,
           max_context: int | None) -> dict:
    """One forecaster on one series: its metrics averaged over the origins, and the seconds it took."""
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
    row = {"series": name, "method": method, "horizon": h, "periodicity": m}
    return row | dict(zip(METRICS, map(float, means))) | {"seconds": seconds}


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
    forecasters: Mapping[str, ForecastFn],
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
    mase_bar_chart(summ, chart, f"mean MASE over {df['series'].nunique()} series, {n_origins} origins")
    return df
