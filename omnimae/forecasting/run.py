"""`omnimae forecast` and `omnimae forecast-eval`: files in, forecasts, plots and scores out."""
from __future__ import annotations

import re
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from omnimae.errors import CheckpointError, ConfigError, DataError
from omnimae.forecasting.forecaster import Forecaster, context_length, predict
from omnimae.forecasting.periodicity import choose_periodicity
from omnimae.forecasting.plot import plot_forecast
from omnimae.forecasting.series import SERIES
from omnimae.forecasting.write import write_forecast
from omnimae.io import check_writable, refuse_overwrite

DEFAULT_CHECKPOINT = "weights/forecaster.safetensors"

# --- the options of each verb, checked before anything is read or loaded -----------------------
Rule = tuple[Callable[[Any], bool], str]  # (accepts the value, what it must be)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML's true is a bool, and bool is an int


def _at_least(lo: int, none: bool = False) -> Rule:
    what = "a positive integer" if lo == 1 else f"an integer >= {lo}"
    return (lambda v: (none and v is None) or (_is_int(v) and v >= lo)), ("null or " if none else "") + what


def _text(none: bool = False, many: bool = False) -> Rule:
    one = lambda v: isinstance(v, str) and v != ""  # noqa: E731
    ok = lambda v: (none and v is None) or one(v) or (many and isinstance(v, list) and all(map(one, v)))  # noqa: E731
    return ok, ("null or " if none else "") + ("a name or a list of names" if many else "a path or name")


def _choice(options, none: bool = False) -> Rule:
    return (lambda v: (none and v is None) or v in options), ("null or " if none else "") + "one of " + ", ".join(options)


_BOOL: Rule = (lambda v: isinstance(v, bool), "true or false")
_DEVICE: Rule = (lambda v: isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v) is not None,
                 "auto, cpu, cuda, cuda:N or mps")
COMMON: dict[str, Rule] = {
    "checkpoint": _text(), "max_context": _at_least(1), "device": _DEVICE, "batch_size": _at_least(1),
    "num_heads": _at_least(1, none=True), "decoder_num_heads": _at_least(1, none=True), "eps": _choice(SERIES.eps_modes),
    "overwrite": _BOOL,
}
FORECAST: dict[str, Rule] = COMMON | {
    "input": _text(), "output": _text(none=True), "truth": _text(none=True), "horizon": _at_least(1),
    "context": _at_least(1, none=True), "periodicity": (lambda v: v is None or v == "auto" or (_is_int(v) and v >= 1),
                                                        "a positive integer, null or auto"),
    "interpolation": _choice(list(SERIES.interpolations), none=True), "time_column": _text(none=True),
    "variables": _text(none=True, many=True), "max_gap": _at_least(0), "allow_irregular": _BOOL, "plot": _BOOL,
}
FORECAST_EVAL: dict[str, Rule] = COMMON | {
    "output_dir": _text(none=True), "n_origins": _at_least(1), "series": _text(none=True, many=True),
    "baselines": (lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v), "a list of baseline names"),
}


def check_options(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Each value against its rule, naming the key; a bare `--key` (true) where a value is needed says so."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], f"is required: --{missing[0].replace('_', '-')} VALUE (or {missing[0]}=VALUE)")
    values = OmegaConf.to_container(cfg, resolve=True)
    for key, (ok, need) in rules.items():
        value = values.get(key)
        if value is True and not ok(True):
            flag = "--" + key.replace("_", "-")
            raise ConfigError(key, f"needs a value: a bare {flag} reads as true; give {need} ({flag} VALUE or {key}=VALUE)")
        if not ok(value):
            raise ConfigError(key, f"must be {need}, got {value!r}")
    resolve_device(cfg.device)


def resolve_device(device: str) -> str:
    """The torch device for a `device` option; one this machine does not have fails naming the key."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (int(device.split(":")[1]) if ":" in device else 0) >= count:
            raise ConfigError("device", f"{device} asked for, but torch sees {count} CUDA device(s) here")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device", "mps asked for, but it is not available here")
    return device


# --- forecast ----------------------------------------------------------------------------------
def default_checkpoint() -> Path:
    path = Path(str(files("omnimae").joinpath(DEFAULT_CHECKPOINT)))
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped forecaster is missing from this install; pass checkpoint=PATH or mae_base")
    return path


def load_forecaster(cfg: DictConfig) -> Forecaster:
    ckpt = default_checkpoint() if cfg.checkpoint == "default" else cfg.checkpoint
    return Forecaster.from_checkpoint(
        ckpt, device=resolve_device(cfg.device), num_heads=cfg.num_heads, decoder_num_heads=cfg.decoder_num_heads,
        batch_size=cfg.batch_size, eps=cfg.eps,
        trust_checkpoint=cfg.trust_checkpoint,
        **({"interpolation": cfg.interpolation} if cfg.get("interpolation") else {}),
    )


def forecast_outputs(cfg: DictConfig) -> tuple[Path, Path | None]:
    """The forecast file and its plot, refused before any work where they would replace an input (the
    truth too) or an existing file without overwrite, or cannot be written."""
    src = Path(cfg.input)
    if cfg.truth is not None and Path(cfg.truth).expanduser().resolve() == src.expanduser().resolve():
        raise ConfigError("truth", f"{cfg.truth} is the input file; the truth is the future after it, in a file of its own")
    out = Path(cfg.output) if cfg.output else src.with_name(src.name.split(".")[0] + ".forecast.csv")
    png = Path(str(out) + ".png") if cfg.plot else None
    for path in (out, png) if png else (out,):
        refuse_overwrite(path, cfg.input, cfg.truth, overwrite=cfg.overwrite)
        check_writable(path)
    return out, png


def run_forecast(cfg: DictConfig) -> dict:
    check_options(cfg, FORECAST)
    out, png = forecast_outputs(cfg)
    table = SERIES.read_series(cfg.input, time_column=cfg.time_column, max_gap=cfg.max_gap,
                               variables=OmegaConf.to_object(cfg.variables) if OmegaConf.is_list(cfg.variables) else cfg.variables,
                               allow_irregular=cfg.allow_irregular)
    horizon, inputs = cfg.horizon, [cfg.input, cfg.truth]
    truth = None
    if cfg.truth:
        truth = SERIES.read_series(cfg.truth, time_column=cfg.time_column, variables=table.names).values[:horizon]
        if truth.shape != (horizon, len(table.names)):
            raise DataError(f"{cfg.truth}: holds {truth.shape[0]} x {truth.shape[1]} values, the forecast {horizon} x {len(table.names)}")
    forecaster = load_forecaster(cfg)
    period = choose_periodicity(cfg, forecaster, table)
    n = context_length(len(table.values), period, cfg.context, cfg.max_context, str(cfg.input))
    start = time.time()
    forecast = predict(forecaster, table.values[-n:], horizon, period, str(cfg.input))  # [H, V]
    seconds = time.time() - start
    written = write_forecast(out, table, forecast, inputs=inputs, overwrite=cfg.overwrite)
    result = {"output": written, "periodicity": period, "context": n, "horizon": horizon, "seconds": round(seconds, 3)}
    if truth is not None:
        result["mae"] = float(np.abs(truth - forecast).mean())
    if png is not None:
        result["plot"] = plot_forecast(png, table, forecast, truth=truth, context_points=min(n, 4 * horizon + n // 4),
                                       inputs=inputs, overwrite=cfg.overwrite)
    return result


# --- forecast-eval -----------------------------------------------------------------------------
def run_forecast_eval(cfg: DictConfig):
    from omnimae.forecasting import eval as fe

    check_options(cfg, FORECAST_EVAL)
    known = fe.BASELINES
    for b in cfg.baselines:
        if b not in known:
            raise ConfigError("baselines", f"unknown baseline {b!r}; choose from {sorted(known)}")
    suite = fe.SUITE
    if cfg.series:
        unknown = [s for s in cfg.series if s not in fe.SUITE]
        if unknown:
            raise ConfigError("series", f"unknown series {unknown}; the suite has {sorted(fe.SUITE)}")
        suite = {s: fe.SUITE[s] for s in cfg.series}
    out = Path(cfg.output_dir) if cfg.output_dir else Path("runs/forecast_eval") / time.strftime("%Y%m%d-%H%M%S")
    fe.check_output_dir(out, cfg.overwrite)
    forecaster = load_forecaster(cfg)

    def model_fn(context: np.ndarray, horizon: int, periodicity: int) -> np.ndarray:
        n = context_length(len(context), periodicity, None, cfg.max_context, "series")
        return forecaster.predict(np.asarray(context, dtype=np.float64)[-n:, None], horizon, periodicity)[0, :, 0]

    forecasters = {"omnimae": model_fn} | {b: known[b] for b in cfg.baselines}
    return fe.run_forecast_eval(forecasters, out, n_origins=cfg.n_origins, suite=suite, overwrite=cfg.overwrite)
