"""Forecast evaluation on real series that ship inside installed packages (no download).

The suite (`SUITE`, suite.py) holds classic univariate series from statsmodels, sktime and pmdarima,
each with its periodicity and a forecast horizon. `evaluate` (backtest.py) scores any number of
forecasters on it with rolling origins: for every series it forecasts the last `n_origins`
non-overlapping windows of `horizon` points from the history before each window, and averages MAE,
MSE, MASE and sMAPE (metrics.py) over the windows. Four baselines are included (baselines.py:
`naive`, `seasonal_naive`, `ets`, `theta`); a forecaster is any `fn(context, horizon, periodicity)
-> array[horizon]`. charts.py makes the tables and the MASE chart.

    from omnimae.forecasting.eval import BASELINES, run_forecast_eval
    run_forecast_eval(BASELINES, "runs/forecast_eval")
"""
from omnimae.forecasting.eval.backtest import RESULT_FILES, check_output_dir, evaluate, rolling_origins, run_forecast_eval
from omnimae.forecasting.eval.baselines import BASELINES, ForecastFn, ets, naive, seasonal_naive, theta
from omnimae.forecasting.eval.charts import format_table, mase_bar_chart, summary
from omnimae.forecasting.eval.metrics import METRICS, mae, mase, mase_scale, mse, smape
from omnimae.forecasting.eval.suite import (
    SUITE, SuiteEntry, load_airline, load_co2, load_elnino, load_lynx, load_nile, load_sunspots, load_taylor,
)

__all__ = [
    "BASELINES", "METRICS", "RESULT_FILES", "SUITE", "ForecastFn", "SuiteEntry", "check_output_dir", "ets", "evaluate",
    "format_table", "load_airline", "load_co2", "load_elnino", "load_lynx", "load_nile", "load_sunspots", "load_taylor",
    "mae", "mase", "mase_bar_chart", "mase_scale", "mse", "naive", "rolling_origins", "run_forecast_eval",
    "seasonal_naive", "smape", "summary", "theta",
]
