"""The model a server holds: loaded once, optionally int8, with batched embedding and forecasting."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import default_collate

from omnimae.checkpoint.format import load_model
from omnimae.errors import CheckpointError, ConfigError, OmniMAEError
from omnimae.features import POOLS, pool_tokens
from omnimae.forecasting.forecaster import Forecaster
from omnimae.model import MaskedAutoencoder
from omnimae.serve.inputs import Sample

PRECISIONS = ("fp32", "int8")


def quantize_encoder(model: MaskedAutoencoder) -> MaskedAutoencoder:
    """Dynamic int8 quantization (weights int8, activations quantized per batch) of the encoder blocks'
    Linear layers, in place. Only the shared encoder: the stems, heads and decoder stay float32."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks torch.ao.quantization deprecated in favour of torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(model.blocks, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


@dataclass(frozen=True)
class ForecastItem:
    """One series to forecast: values [T, V] (already cut to its context), horizon, periodicity."""

    values: np.ndarray
    horizon: int
    periodicity: int

    def key(self) -> tuple:
        return self.values.shape, self.horizon, self.periodicity


class Engine:
    """The loaded model and what the routes ask of it; every method here runs on the model thread."""

    def __init__(self, model: MaskedAutoencoder, checkpoint: str, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ConfigError("quantize", f"must be {' or '.join(PRECISIONS)}, got {precision!r}")
        self.model = quantize_encoder(model.eval()) if precision == "int8" else model.eval()
        self.checkpoint, self.precision = checkpoint, precision
        self.forecaster, self.no_forecast = self._forecaster()

    @classmethod
    def from_checkpoint(cls, path: str | Path, precision: str = "fp32", trust_checkpoint: bool = False) -> "Engine":
        model, _ = load_model(path, trust_checkpoint=trust_checkpoint)
        return cls(model, str(path), precision)

    def _forecaster(self) -> tuple[Forecaster | None, str]:
        """The forecaster `omnimae forecast` builds from this checkpoint (its time-series adapter, else its
        first), over the same model; or None and why."""
        names = list(self.model.adapters)
        modality = "timeseries" if "timeseries" in names else names[0]
        try:
            return Forecaster(self.model, modality), ""
        except OmniMAEError as e:
            return None, str(e)

    @property
    def config(self):
        return self.model.config

    def info(self) -> dict:
        adapters = self.model.adapters
        return {
            "checkpoint": Path(self.checkpoint).name, "modalities": list(adapters), "embed_dim": self.model.embed_dim,
            "channels": {m: self.vocabulary(m) for m in adapters if self.vocabulary(m) is not None},
            "precision": self.precision, "pools": list(POOLS), "forecast": self.forecaster is not None,
            "head": False, "version": version("omnimae"),
        }

    def vocabulary(self, modality: str) -> list[str] | None:
        """The channel names a channel-agnostic modality learned (its config's adapter.channels), else None."""
        names = OmegaConf.select(self.config, f"modalities.{modality}.adapter.channels")
        return None if names is None else [str(n) for n in names]

    def channel_ids(self, modality: str, names: Sequence[str]) -> torch.Tensor:
        """Vocabulary indices of channel names; a name outside it takes the shared unknown row (index V)."""
        vocab = self.vocabulary(modality) or []
        return torch.tensor([vocab.index(n) if n in vocab else len(vocab) for n in names], dtype=torch.long)

    def example(self, modality: str):
        """One sample's worth of the adapter's model-space input, for checking raw arrays."""
        return self.model.adapters[modality].example_input(1)

    @torch.no_grad()
    def embed(self, modality: str, samples: Sequence[Sample]) -> list[dict]:
        """CLS and mean features of each sample (and per-channel ones where the modality has them)."""
        adapter = self.model.adapters[modality]
        batch = default_collate([s.value for s in samples])
        patches = adapter.tokenize(batch)
        latent = self.model.forward_encoder(patches, adapter, ids_keep=None)  # [B, 1 + N, D]
        pooled = {p: pool_tokens(latent, p).float() for p in POOLS}  # [B, D] each
        groups = adapter.group_features(latent[:, 1:], patches, samples[0].group)  # {name: [B, D]}
        out = []
        for i in range(len(samples)):
            row = {p: pooled[p][i].tolist() for p in POOLS}
            if groups:
                row["channels"] = {name: v[i].float().tolist() for name, v in groups.items()}
            out.append(row)
        return out

    def forecast(self, items: Sequence[ForecastItem]) -> list[np.ndarray]:
        """Forecasts [horizon, V] of series of one shape, horizon and periodicity, in one batch."""
        if self.forecaster is None:
            raise CheckpointError(self.no_forecast)
        first = items[0]
        batch = np.stack([it.values for it in items])  # [B, T, V]
        return list(self.forecaster.predict(batch, first.horizon, first.periodicity))
