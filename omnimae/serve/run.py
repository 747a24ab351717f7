"""`omnimae serve`: load a checkpoint once and answer HTTP requests with uvicorn until stopped."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from omnimae.errors import ConfigError
from omnimae.serve.engine import PRECISIONS, Engine
from omnimae.serve.inputs import Limits

log = logging.getLogger("omnimae")
TOKEN_ENV = "OMNIMAE_API_TOKEN"
POSITIVE_INTS = ("port", "max_batch", "max_inputs", "max_values", "max_series_length")
POSITIVE_NUMBERS = ("timeout_s", "max_request_mb", "max_audio_seconds", "drain_s")


def check_serve_options(cfg: DictConfig) -> None:
    """Each option against what it must be, naming the key, before the checkpoint is read."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(missing[0], f"is required: {missing[0]}=VALUE")
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    for key in POSITIVE_INTS:
        if not (isinstance(cfg[key], int) and not isinstance(cfg[key], bool) and cfg[key] >= 1):
            raise ConfigError(key, f"must be a positive integer, got {cfg[key]!r}")
    for key in POSITIVE_NUMBERS:
        if not (number(cfg[key]) and cfg[key] > 0):
            raise ConfigError(key, f"must be a positive number, got {cfg[key]!r}")
    if not (number(cfg.max_wait_ms) and cfg.max_wait_ms >= 0):
        raise ConfigError("max_wait_ms", f"must be a number >= 0, got {cfg.max_wait_ms!r}")
    if cfg.quantize not in (None, *PRECISIONS):
        raise ConfigError("quantize", f"must be null or one of {', '.join(PRECISIONS)}, got {cfg.quantize!r}")
    if cfg.threads is not None and not (isinstance(cfg.threads, int) and cfg.threads >= 1):
        raise ConfigError("threads", f"must be null or a positive integer, got {cfg.threads!r}")
    if not isinstance(cfg.host, str) or not cfg.host:
        raise ConfigError("host", f"must be an interface address such as 127.0.0.1, got {cfg.host!r}")


def settings_of(cfg: DictConfig, token: str | None):
    from omnimae.serve.app import Settings

    limits = Limits(max_request_bytes=int(cfg.max_request_mb * 2**20), max_inputs=cfg.max_inputs,
                    max_values=cfg.max_values, max_audio_seconds=float(cfg.max_audio_seconds),
                    max_series_length=cfg.max_series_length)
    return Settings(limits, cfg.max_batch, float(cfg.max_wait_ms), float(cfg.timeout_s), token or None)


def checkpoint_path(name: str) -> Path:
    """`latest`, `default` (the shipped forecaster) or a path that must exist."""
    from omnimae.forecasting.run import default_checkpoint
    from omnimae.probe import latest_checkpoint

    if name == "latest":
        return latest_checkpoint()
    if name == "default":
        return default_checkpoint()
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError("checkpoint", f"{name}: no such file")
    return path


def run_serve(cfg: DictConfig) -> None:
    """Serve until SIGTERM or Ctrl-C; uvicorn then stops accepting and drains the requests in flight."""
    try:
        import uvicorn

        from omnimae.serve.app import create_app
    except ImportError as e:
        raise ConfigError("serve", f"needs the serve extra ({e.name} is missing): pip install 'omnimae[serve]'") from None
    check_serve_options(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    precision = "int8" if cfg.quantize == "int8" else "fp32"
    engine = Engine.from_checkpoint(checkpoint_path(str(cfg.checkpoint)), precision, cfg.trust_checkpoint)
    app = create_app(engine, settings_of(cfg, os.environ.get(TOKEN_ENV)))
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s, beyond this machine%s", cfg.host,
                    "" if os.environ.get(TOKEN_ENV) else f"; set {TOKEN_ENV} to require a token")
    info = engine.info()
    print(f"serving {info['checkpoint']} ({', '.join(info['modalities'])}, {precision}) on http://{cfg.host}:{cfg.port}"
          f" (API docs at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", timeout_graceful_shutdown=cfg.drain_s)
