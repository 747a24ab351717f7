"""`omnimae forecast` and `omnimae forecast-eval`: files in, forecasts, plots and scores out."""
from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from omnimae.errors import CheckpointError, ConfigError, DataError
from omnimae.forecast import Forecaster

DEFAULT_CHECKPOINT = "weights/forecaster.safetensors"
CANDIDATES_WITHOUT_INDEX = [1, 4, 7, 12, 24, 52]


def default_checkpoint() -> Path:
    path = Path(str(files("omnimae").joinpath(DEFAULT_CHECKPOINT)))
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped forecaster is missing from this install; pass checkpoint=PATH or mae_base")
    return path


def load_forecaster(cfg: DictConfig) -> Forecaster:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    ckpt = default_checkpoint() if cfg.checkpoint == "default" else cfg.checkpoint
    return Forecaster.from_checkpoint(
        ckpt, device=device, num_heads=cfg.num_heads, decoder_num_heads=cfg.decoder_num_heads, batch_size=cfg.batch_size,
        trust_checkpoint=cfg.trust_checkpoint,
        **({"interpolation": cfg.interpolation} if cfg.get("interpolation") else {}),
    )


def context_length(n: int, periodicity: int, context: int | None, max_context: int, source: str) -> int:
    """The context to use: as asked, or as much as fits (max_context), rounded down to whole periods."""
    if context is not None:
        if context < 1:
            raise ConfigError("context", f"must be positive, got {context}")
        if context > n:
            raise DataError(f"{source}: context={context} asked for, but the series has only {n} points")
        return context
    if n < periodicity:
        raise DataError(f"{source}: the series has {n} points, shorter than one period ({periodicity})")
    usable = min(n, max_context)
    return max(periodicity, usable // periodicity * periodicity)


def backtest_periodicity(forecaster: Forecaster, values: np.ndarray, horizon: int, candidates: list[int], max_context: int) -> int:
    """Pick the candidate period whose forecast of the last window of the history errs least (MAE)."""
    best, best_err = 1, np.inf
    history, truth = values[:-horizon], values[-horizon:]
    for p in dict.fromkeys(candidates):
        if len(history) < 2 * p:
            continue
        n = context_length(len(history), p, None, max_context, "backtest")
        err = float(np.abs(forecaster.predict(history[-n:], horizon, p)[0] - truth).mean())
        if err < best_err:
            best, best_err = p, err
    return best


def run_forecast(cfg: DictConfig) -> dict:
    from omnimae.series_io import periodicity_candidates, plot_forecast, read_series, write_forecast

    if not isinstance(cfg.horizon, int) or cfg.horizon < 1:
        raise ConfigError("horizon", f"must be a positive integer, got {cfg.horizon!r}")
    table = read_series(cfg.input, time_column=cfg.time_column, max_gap=cfg.max_gap,
                        variables=list(cfg.variables) if cfg.variables else None, allow_irregular=cfg.allow_irregular)
    src = str(cfg.input)
    out = Path(cfg.output) if cfg.output else Path(src).with_name(Path(src).name.split(".")[0] + ".forecast.csv")
    forecaster = load_forecaster(cfg)
    horizon, values = cfg.horizon, table.values
    period = cfg.periodicity
    if period is None:  # the index's main cycle, if the history holds at least two of them
        period = next(p for p in periodicity_candidates(table.time) if 2 * p <= len(values) or p == 1)
    elif period == "auto":
        candidates = periodicity_candidates(table.time) if table.time is not None and table.freq is not None else CANDIDATES_WITHOUT_INDEX
        if len(values) < 2 * horizon:
            raise DataError(f"{src}: periodicity=auto backtests on the last {horizon} points and needs at least {2 * horizon}")
        period = backtest_periodicity(forecaster, values, horizon, candidates, cfg.max_context)
    elif not isinstance(period, int) or period < 1:
        raise ConfigError("periodicity", f"must be a positive integer, null or auto, got {period!r}")
    n = context_length(len(values), period, cfg.context, cfg.max_context, src)
    start = time.time()
    forecast = forecaster.predict(values[-n:], horizon, period)[0]  # [H, V]
    seconds = time.time() - start
    written = write_forecast(out, table, forecast, inputs=[cfg.input], overwrite=cfg.overwrite)
    result = {"output": written, "periodicity": period, "context": n, "horizon": horizon, "seconds": round(seconds, 3)}
    truth = None
    if cfg.truth:
        truth = read_series(cfg.truth, time_column=cfg.time_column, variables=table.names).values[:horizon]
        if truth.shape != forecast.shape:
            raise DataError(f"{cfg.truth}: holds {truth.shape[0]} x {truth.shape[1]} values, the forecast {forecast.shape}")
        result["mae"] = float(np.abs(truth - forecast).mean())
    if cfg.plot:
        result["plot"] = plot_forecast(Path(str(written) + ".png"), table, forecast, truth=truth, context_points=min(n, 4 * horizon + n // 4))
    return result


def run_forecast_eval(cfg: DictConfig):
    from omnimae import forecast_eval as fe

    forecaster = load_forecaster(cfg)

    def model_fn(context: np.ndarray, horizon: int, periodicity: int) -> np.ndarray:
        n = context_length(len(context), periodicity, None, cfg.max_context, "series")
        return forecaster.predict(np.asarray(context, dtype=np.float64)[-n:, None], horizon, periodicity)[0, :, 0]

    known = {"naive": fe.naive, "seasonal_naive": fe.seasonal_naive, "ets": fe.ets, "theta": fe.theta}
    for b in cfg.baselines:
        if b not in known:
            raise ConfigError("baselines", f"unknown baseline {b!r}; choose from {sorted(known)}")
    forecasters = {"omnimae": model_fn} | {b: known[b] for b in cfg.baselines}
    suite = fe.SUITE
    if cfg.series:
        unknown = [s for s in cfg.series if s not in fe.SUITE]
        if unknown:
            raise ConfigError("series", f"unknown series {unknown}; the suite has {sorted(fe.SUITE)}")
        suite = {s: fe.SUITE[s] for s in cfg.series}
    out = Path(cfg.output_dir) if cfg.output_dir else Path("runs/forecast_eval") / time.strftime("%Y%m%d-%H%M%S")
    return fe.run_forecast_eval(forecasters, out, n_origins=cfg.n_origins, suite=suite)
