"""Which seasonal period to fold a series by: as given, the main cycle of its time index, or a backtest."""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from omnimae.errors import DataError
from omnimae.forecasting.forecaster import Forecaster, context_length, predict
from omnimae.forecasting.series import SERIES, SeriesTable

CANDIDATES_WITHOUT_INDEX = [1, 4, 7, 12, 24, 52]


def backtest_periodicity(forecaster: Forecaster, values: np.ndarray, horizon: int, candidates: list[int],
                         max_context: int, source: str = "backtest") -> int:
    """Pick the candidate period whose forecast of the last window of the history errs least (MAE)."""
    best, best_err = 1, np.inf
    history, truth = values[:-horizon], values[-horizon:]
    for p in dict.fromkeys(candidates):
        if len(history) < 2 * p:
            continue
        n = context_length(len(history), p, None, max_context, source)
        err = float(np.abs(predict(forecaster, history[-n:], horizon, p, source) - truth).mean())
        if err < best_err:
            best, best_err = p, err
    return best


def choose_periodicity(cfg: DictConfig, forecaster: Forecaster, table: SeriesTable) -> int:
    """periodicity as given; null: the index's main cycle where the history holds two; auto: a backtest."""
    values, src = table.values, str(cfg.input)
    if cfg.periodicity is None:
        return next(p for p in SERIES.periodicity_candidates(table.time) if 2 * p <= len(values) or p == 1)
    if cfg.periodicity != "auto":
        return cfg.periodicity
    candidates = SERIES.periodicity_candidates(table.time) if table.time is not None and table.freq is not None else CANDIDATES_WITHOUT_INDEX
    if len(values) < 2 * cfg.horizon:
        raise DataError(f"{src}: periodicity=auto backtests on the last {cfg.horizon} points and needs at least {2 * cfg.horizon}")
    return backtest_periodicity(forecaster, values, cfg.horizon, candidates, cfg.max_context, src)
