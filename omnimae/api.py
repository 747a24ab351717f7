"""The Python API: what a notebook needs from omnimae, without the CLI.

    import omnimae
    model = omnimae.load("runs/digits/.../checkpoints/last.ckpt")   # or .safetensors, official .pth, HF weights
    vectors = omnimae.embed(model, "photo.png")                      # a file, a list of files, or a model-space tensor
    picture = omnimae.reconstruct(model, batch, seed=0).save("reconstruction.png")
    future = omnimae.forecast(series, horizon=24, periodicity=12)    # the shipped forecaster by default

Every model these functions return carries its resolved config as `model.config` (the `model` and
`modalities` nodes), which `save` writes into the file and `embed` uses to read files as training did.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from omnimae.data.batch import to_device
from omnimae.errors import ConfigError
from omnimae.features import check_pools, pool_tokens
from omnimae.model import MaskedAutoencoder

PathLike = str | Path


def build(*overrides: str, config: DictConfig | None = None) -> MaskedAutoencoder:
    """A new model (random weights) from the pretrain config with Hydra overrides, e.g.
    build("model=vit_small", "modality=audio"), or from a composed config."""
    from omnimae.config.build import build_model
    from omnimae.config.compose import compose

    cfg = config if config is not None else compose("pretrain", ["experiment=none", *overrides])
    return build_model(cfg)


def load(path: PathLike, *overrides: str, modality: str = "image", trust_checkpoint: bool = False) -> MaskedAutoencoder:
    """A pretrained model from a file, in eval mode.

    omnimae's own checkpoints (.ckpt, .safetensors) rebuild themselves from the config they carry.
    Official facebookresearch/mae (.pth) and Hugging Face ViTMAE weights carry none: the model is built
    from the overrides (e.g. "model=vit_base") and the weights go into its `modality` adapter."""
    from omnimae.checkpoint.convert import load_pretrained
    from omnimae.checkpoint.format import load_model, read_checkpoint

    ckpt = read_checkpoint(path)
    if isinstance(ckpt.get("omnimae"), dict):
        if overrides:
            raise ConfigError("overrides", f"{path} is an omnimae checkpoint: it rebuilds its own model; pass no overrides")
        model, _ = load_model(path, trust_checkpoint=trust_checkpoint)
    else:
        model = build(*overrides, f"modality={modality}")
        load_pretrained(model, path, modality=modality)
    return model.eval()


def save(model: MaskedAutoencoder, path: PathLike, dtype: torch.dtype | None = None) -> Path:
    """Write the model as a self-describing .safetensors file (its config in the metadata), atomically."""
    from omnimae.checkpoint.format import save_safetensors

    return save_safetensors(model, _config_of(model), path, dtype=dtype)


@torch.no_grad()
def embed(model: MaskedAutoencoder, inputs, modality: str | None = None, pool: str = "mean") -> torch.Tensor:
    """Encoder features of the full, unmasked input: [B, D] (CLS token or the mean of the patch tokens).

    inputs: a model-space batch (what the adapter's example_input looks like), or a file or list of files
    of the modality, read and normalized as its data source reads them for evaluation."""
    modality = _modality(model, modality)
    check_pools(pool)
    if isinstance(inputs, (str, Path)) or (isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], (str, Path))):
        paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
        return torch.cat([embed(model, x, modality, pool) for x in (read_file(model, p, modality) for p in paths)])
    adapter = model.adapters[modality]
    x = to_device(inputs, next(model.parameters()).device)
    latent = model.forward_encoder(adapter.tokenize(x), adapter, ids_keep=None)  # [B, 1 + N, D]
    return pool_tokens(latent, pool)


def read_file(model: MaskedAutoencoder, path: PathLike, modality: str | None = None):
    """One file as a model-space batch of one, read by the modality's data source with the model's settings."""
    from torch.utils.data import default_collate

    from omnimae.config.build import data_over

    modality = _modality(model, modality)
    dataset = data_over(_config_of(model), modality, path).dataset("train", train=False)
    dataset.stand_ins = False  # this file or an error, never another file's data
    return default_collate([dataset[0]])


@dataclass
class Reconstruction:
    """What reconstruct returns: predictions and mask in the input's (model) space, and the picture."""

    reconstruction: torch.Tensor  # the input's shape: every patch as the decoder predicts it
    mask: torch.Tensor  # the input's shape: 1 where a patch was hidden
    panels: list[torch.Tensor]  # displayable [B, H, W, C]: original | masked | reconstruction | reconstruction + visible
    loss: float

    def save(self, path: PathLike, title: str = "") -> Path:
        """The four panels as a PNG grid, one row per sample."""
        from omnimae.visualize import save_grid

        return save_grid(self.panels, path, title)


@torch.no_grad()
def reconstruct(model: MaskedAutoencoder, x, modality: str | None = None, mask: torch.Tensor | None = None,
                seed: int = 0) -> Reconstruction:
    """Mask and reconstruct a model-space batch: with the given token mask [B, N] (1 = hidden), else with the
    adapter's configured masking drawn from `seed`."""
    from omnimae.visualize import panels_of, reconstruct_batch

    modality = _modality(model, modality)
    r = reconstruct_batch(model, x, modality, torch.Generator().manual_seed(seed), mask)
    return Reconstruction(r.reconstruction, r.hidden, panels_of(model.adapters[modality], r), float(r.loss))


def forecast(series, horizon: int, periodicity: int = 1, checkpoint: PathLike | None = None,
             device: str = "cpu") -> np.ndarray:
    """Zero-shot forecast of a series [T] or [T, V] (a NumPy array or anything array-like) -> [horizon] or
    [horizon, V], with the shipped forecaster or a checkpoint's model."""
    from omnimae.forecasting.forecaster import Forecaster
    from omnimae.forecasting.run import default_checkpoint

    values = np.asarray(series, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ConfigError("series", f"expected [T] or [T, V], got shape {values.shape}")
    forecaster = Forecaster.from_checkpoint(checkpoint or default_checkpoint(), device=device)
    out = forecaster.predict(values.reshape(len(values), -1), horizon, periodicity)[0]  # [horizon, V]
    return out[:, 0] if values.ndim == 1 else out


# --- helpers --------------------------------------------------------------------------------
def _config_of(model: MaskedAutoencoder) -> DictConfig:
    cfg = model.config  # set by build_model (and so by build and load)
    if cfg is None:
        raise ConfigError("model.config", "this model carries no config: make it with omnimae.build or omnimae.load")
    return cfg


def _modality(model: MaskedAutoencoder, modality: str | None) -> str:
    names = list(model.adapters)
    if modality is None:
        if len(names) > 1:
            raise ConfigError("modality", f"the model has several modalities {names}: name one")
        return names[0]
    if modality not in names:
        raise ConfigError("modality", f"{modality!r} is not in the model (it has {names})")
    return modality
