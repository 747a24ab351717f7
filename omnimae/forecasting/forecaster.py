"""Zero-shot forecasting with an MAE: the VisionTS pipeline over omnimae's core.

    f = Forecaster.from_checkpoint("mae_base")          # or a path: omnimae, official MAE or HF ViTMAE
    y = f.predict(context, horizon=24, periodicity=24)  # context [T, V] or [B, T, V] -> [B, 24, V]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from omnimae.config.build import build_model
from omnimae.checkpoint.convert import convert_to_omnimae, detect_layout, hf_to_official
from omnimae.checkpoint.format import load_weights, read_checkpoint, rebuild_model, state_dict_of
from omnimae.errors import CheckpointError, ConfigError, DataError
from omnimae.model import MaskedAutoencoder
from omnimae.forecasting.series import SERIES, RasterGeometry

DEFAULT_RASTER = {"norm_const": 0.4, "align_const": 0.4, "interpolation": "bilinear"}


def config_for_architecture(arch: dict) -> DictConfig:
    """An omnimae config (model + timeseries adapter) for an MAE architecture given by its shapes."""
    from omnimae.config.compose import compose

    a = "modalities.timeseries.adapter"
    overrides = ["experiment=none", "modality=timeseries", "model=vit_base"]
    overrides += [f"model.{k}={arch[k]}" for k in ("embed_dim", "depth", "num_heads", "decoder_embed_dim",
                                                    "decoder_depth", "decoder_num_heads", "mlp_ratio")]
    overrides += [f"{a}.{k}={arch[k]}" for k in ("img_size", "patch_size", "in_chans")]
    return compose("pretrain", overrides)


class Forecaster:
    """Forecasts by reconstructing the masked right-hand columns of a rasterized series.

    The raster is the time-series modality's, taken through the forecasting contract (forecast/series.py);
    the model's adapter may be any that takes 2D images (a time-series one lends its raster settings)."""

    def __init__(
        self,
        model: MaskedAutoencoder,
        modality: str = "timeseries",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        norm_const: float | None = None,
        align_const: float | None = None,
        interpolation: str | None = None,
        eps: str = "relative",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError("batch_size", f"must be a positive integer, got {batch_size!r}")
        if modality not in model.adapters:
            raise ConfigError("modality", f"{modality!r} is not in the model (it has {list(model.adapters)})")
        adapter = model.adapters[modality]
        if adapter.norm_pix_loss:
            raise CheckpointError(
                f"modality {modality!r} was trained with norm_pix_loss: its predictions are per-patch "
                "normalized and cannot be read back as values; forecasting needs a pixel-target model"
            )
        self.model = model.eval().to(device)
        self.modality, self.adapter, self.device, self.batch_size = modality, adapter, torch.device(device), batch_size
        own = {k: getattr(adapter, k) for k in DEFAULT_RASTER if isinstance(adapter, SERIES)}  # a time-series adapter's own
        given = {"norm_const": norm_const, "align_const": align_const, "interpolation": interpolation}
        self.raster = DEFAULT_RASTER | own | {k: v for k, v in given.items() if v is not None}
        self.eps = SERIES.check_eps(eps)  # relative: scale-true forecasts; visionts: its absolute +1e-5 on the variance

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, device: str = "cpu", num_heads: int | None = None,
        decoder_num_heads: int | None = None, trust_checkpoint: bool = False, **kwargs,
    ) -> "Forecaster":
        """An omnimae checkpoint, an official MAE .pth (by path or name: mae_base/large/huge) or HF ViTMAE weights.
        trust_checkpoint: let an omnimae checkpoint's stored config build classes other than omnimae's own."""
        from omnimae.checkpoint import hub

        path = hub.fetch_checkpoint(str(checkpoint)) if str(checkpoint) in hub.OFFICIAL else Path(checkpoint)
        ckpt = read_checkpoint(path)
        if ckpt.get("omnimae"):
            model, cfg = rebuild_model(ckpt, str(path), trust_checkpoint)
            modality = "timeseries" if "timeseries" in model.adapters else next(iter(model.adapters))
            return cls(model, modality, device, **kwargs)
        sd = state_dict_of(ckpt)
        layout = detect_layout(sd)
        if layout == "hf":
            sd = hf_to_official(sd)
        elif layout != "official":
            raise CheckpointError(f"{path}: not an omnimae, official MAE or Hugging Face ViTMAE checkpoint")
        arch = hub.infer_official_architecture(sd, num_heads=num_heads, decoder_num_heads=decoder_num_heads)
        model = build_model(config_for_architecture(arch))
        load_weights(model, convert_to_omnimae(sd, str(path), modality="timeseries"), str(path))
        return cls(model, "timeseries", device, **kwargs)

    def geometry(self, context_len: int, horizon: int, periodicity: int) -> RasterGeometry:
        a = self.adapter
        geo = SERIES.raster_geometry(context_len, horizon, periodicity, a.img_size, a.patch_size,
                                     self.raster["align_const"], self.raster["interpolation"])
        geo.check()
        return geo

    @torch.no_grad()
    def predict(self, context, horizon: int, periodicity: int = 1) -> np.ndarray:
        """context [T, V] or [B, T, V] (no NaNs) -> forecast [B, horizon, V] (float64)."""
        # normalized and read back in float64: a series far from zero (a level of 1e8 around a swing
        # of 5, say) keeps its detail; only the normalized images go through the model in float32
        x = torch.as_tensor(np.asarray(context), dtype=torch.float64)
        if x.ndim == 2:
            x = x.unsqueeze(0)
        if x.ndim != 3:
            raise ValueError(f"context must be [T, V] or [B, T, V], got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("context holds NaN or infinite values")
        geo = self.geometry(x.shape[1], horizon, periodicity)
        images, scale = SERIES.rasterize(x, geo, self.raster["norm_const"], self.eps)  # [B*V, 3, H, W]
        images = images[:, :1].float().expand(-1, self.adapter.in_chans, -1, -1)  # grey in every channel
        mask = geo.mask().to(self.device)
        recon = []
        for i in range(0, images.shape[0], self.batch_size):
            chunk = images[i : i + self.batch_size].to(self.device)
            out = self.model.forward_modality(chunk, self.modality, mask=mask.expand(chunk.shape[0], -1))
            recon.append(self.adapter.untokenize(out.patches.replace(out.pred.float())).cpu())
        y = SERIES.read_back(torch.cat(recon).double(), geo, scale)  # [B, horizon, V], float64
        if not torch.isfinite(y).all():  # only de-normalizing can overflow: the series is near float64's limit
            peak = float(x.abs().max())
            raise DataError(f"the forecast leaves float64's range ({int((~torch.isfinite(y)).sum())} of {y.numel()} "
                            f"values overflow when scaled back to the series' magnitude, up to {peak:.3g})")
        return y.numpy()


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


def predict(forecaster: Forecaster, values: np.ndarray, horizon: int, periodicity: int, source: str) -> np.ndarray:
    """The forecast [H, V] of `values` [T, V] from the file `source`, or a DataError naming it."""
    try:
        return forecaster.predict(values, horizon, periodicity)[0]
    except DataError as e:
        raise DataError(f"{source}: {e}") from None
