"""Time series as grey images, following VisionTS (Chen et al. 2024): the adapter and its pretraining data.

The raster (normalization, period folding, resizing, the right-hand future mask) is in `raster.py`;
this adapter takes the images through 2D patches like an image adapter.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.signal import lfilter
from einops import rearrange

from omnimae.adapter import register_modality
from omnimae.data.protocol import SampleSet, Split
from omnimae.errors import ConfigError, DataError
from omnimae.masking_plane import PLANE_MASKINGS
from .image import ImageAdapter
from .raster import EPS_MODES, INTERPOLATIONS, RasterGeometry, check_eps, rasterize, read_back, resize, series_scale
from .readers.series import NETCDF_SUFFIXES, read_series
from .readers.series_index import future_index, periodicity_candidates


@register_modality("timeseries")
class TimeSeriesAdapter(ImageAdapter):
    """Rasterized series through 2D patches; in training, right-hand (future) masks mix with random ones."""

    maskings = ("future_or_random", "random", *PLANE_MASKINGS)
    # the forecasting contract (omnimae.forecasting.series.SeriesModality): forecasting reaches these through
    # the registry, as MODALITIES["timeseries"].<name>, since a use never imports a modality module
    eps_modes = EPS_MODES
    interpolations = tuple(INTERPOLATIONS)
    netcdf_suffixes = NETCDF_SUFFIXES
    read_series = staticmethod(read_series)
    periodicity_candidates = staticmethod(periodicity_candidates)
    future_index = staticmethod(future_index)
    raster_geometry = RasterGeometry
    check_eps = staticmethod(check_eps)
    rasterize = staticmethod(rasterize)
    read_back = staticmethod(read_back)

    def __init__(
        self,
        *,
        embed_dim: int,
        decoder_embed_dim: int,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        mask_ratio: float | dict = 0.75,
        masking: str = "future_or_random",
        norm_pix_loss: bool = False,
        norm_const: float = 0.4,
        align_const: float = 0.4,
        interpolation: str = "bilinear",
        future_mask_prob: float = 0.5,
        min_visible_columns: int = 2,
        max_visible_columns: int = 7,
    ):
        super().__init__(
            embed_dim=embed_dim, decoder_embed_dim=decoder_embed_dim, img_size=img_size, patch_size=patch_size,
            in_chans=in_chans, mask_ratio=mask_ratio, masking=masking, norm_pix_loss=norm_pix_loss,
            mean=(0.0,) * in_chans, std=(1.0,) * in_chans,
        )
        if norm_const <= 0:
            raise ConfigError("norm_const", f"must be positive, got {norm_const}")
        if not 0 < align_const <= 1:
            raise ConfigError("align_const", f"must lie in (0, 1], got {align_const}")
        if interpolation not in INTERPOLATIONS:
            raise ConfigError("interpolation", f"must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if not 0 <= future_mask_prob <= 1:
            raise ConfigError("future_mask_prob", f"must lie in [0, 1], got {future_mask_prob}")
        num_patch = img_size // patch_size
        if not 1 <= min_visible_columns <= max_visible_columns < num_patch:
            raise ConfigError(
                "min_visible_columns",
                f"need 1 <= min_visible_columns <= max_visible_columns < {num_patch}, got {min_visible_columns}, {max_visible_columns}",
            )
        self.norm_const, self.align_const, self.interpolation = norm_const, align_const, interpolation
        self.future_mask_prob = future_mask_prob
        self.visible_columns = (min_visible_columns, max_visible_columns)

    def geometry(self, context_len: int, pred_len: int, periodicity: int) -> RasterGeometry:
        return RasterGeometry(context_len, pred_len, periodicity, self.img_size, self.patch_size, self.align_const, self.interpolation)

    def masking_params(self) -> dict:
        if self.masking != "future_or_random":
            return {}
        lo, hi = self.visible_columns  # the range forecasting uses (align_const 0.4: 2-6 columns)
        return {"future_mask_prob": self.future_mask_prob, "min_visible_columns": lo, "max_visible_columns": hi}

    def to_display(self, x: torch.Tensor, mask: bool = False, reference: torch.Tensor | None = None) -> torch.Tensor:
        if mask:  # (a fixed mapping: reference is not needed)
            return x.float().amax(dim=1).unsqueeze(-1)
        grey = x.float().mean(1)  # [B, H, W], normalized series values (about -2.5 .. 2.5)
        return ((grey + 2.5) / 5).clamp(0, 1).unsqueeze(-1)


# --- pretraining data ----------------------------------------------------------------------
SEASONAL_PERIODS = (4, 5, 7, 12, 24, 48, 52, 96, 168, 336)


def synthetic_series(rng: np.random.Generator, length: int, period: int) -> np.ndarray:
    """One synthetic series in the spirit of KernelSynth: trend + seasonalities + level shifts + AR noise."""
    t = np.arange(length, dtype=np.float64)
    u = t / max(length - 1, 1)
    y = rng.normal(0, 1) + rng.normal(0, 1.5) * u + rng.normal(0, 1.0) * (u - 0.5) ** 2 * (rng.random() < 0.3)
    for p, scale in ((period, 1.0), (int(rng.choice(SEASONAL_PERIODS)), 0.4)):
        if p < 2 or (p != period and rng.random() < 0.5):
            continue
        for k in range(1, int(rng.integers(1, 4)) + 1):  # a few harmonics of each seasonality
            y = y + scale * rng.normal(0, 1) / k * np.sin(2 * np.pi * k * t / p + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.3:  # level shifts
        for start in rng.integers(0, length, size=int(rng.integers(1, 3))):
            y[start:] += rng.normal(0, 0.8)
    phi, sigma = rng.uniform(0, 0.9), rng.uniform(0.02, 0.4)
    noise = lfilter([1.0], [1.0, -phi], rng.normal(0, sigma, length))  # AR(1)
    return y + noise


def window_image(series: np.ndarray, period: int, img_size: int, context_fraction: float, norm_const: float,
                 interpolation: str, chans: int) -> torch.Tensor:
    """A whole window (context and future at one scale) folded by period -> [chans, H, W]."""
    x = torch.as_tensor(series, dtype=torch.float32).view(1, -1, 1)
    n_ctx = max(period, int(len(series) * context_fraction))
    x = series_scale(x[:, :n_ctx], norm_const).apply(x).view(1, 1, -1)  # context statistics, as at forecast time
    folded = rearrange(x, "b c (p f) -> b c f p", f=period)
    img = resize(folded, (img_size, img_size), interpolation)[0]  # [1, H, W]
    return img.expand(chans, -1, -1).contiguous()


def min_window(period: int, cols: int) -> int:
    """The shortest window drawn: 4 periods, or (period 1, not folded) 4 points per patch column."""
    return 4 * period if period > 1 else 4 * cols


class SeriesWindows(SampleSet):
    """Rasterized windows: of synthetic series (an endless, seeded stream) or of given series."""

    def __init__(self, size: int, adapter_kwargs: dict, series: list[tuple[np.ndarray, int]] | None, base_seed: int,
                 max_length: int):
        self.size, self.kw, self.series, self.base_seed, self.max_length = size, adapter_kwargs, series, base_seed, max_length
        self.labels = [-1] * size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key) -> torch.Tensor:
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = np.random.default_rng([self.base_seed, index] if seed is None else [self.base_seed, seed])
        kw = self.kw
        cols = kw["img_size"] // kw["patch_size"]
        if self.series is None:
            period = 1 if rng.random() < 0.1 else int(rng.choice(SEASONAL_PERIODS))
        else:
            values, period = self.series[int(rng.integers(len(self.series)))]
        lo = min_window(period, cols)
        if period > 1:
            max_periods = max(4, self.max_length // period)
            if self.series is not None:
                max_periods = min(max_periods, len(values) // period)
            length = int(rng.integers(lo // period, max_periods + 1)) * period
        else:  # unfolded: lo to max_length points, at most the whole series
            hi = max(lo, self.max_length)
            if self.series is not None:
                hi = min(hi, len(values))
            length = int(rng.integers(lo, hi + 1))
        if self.series is None:
            window = synthetic_series(rng, length, period)
        else:
            start = int(rng.integers(0, len(values) - length + 1))
            window = values[start : start + length]
        frac = rng.uniform(0.15, 0.6)  # the context share, like the visible columns at forecast time
        return window_image(window, period, kw["img_size"], frac, kw["norm_const"], kw["interpolation"], kw["in_chans"])


class TimeSeriesData:
    """Pretraining windows for the timeseries adapter: `builtin: synthetic` or a folder of CSV/netCDF/zarr series."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        norm_const: float = 0.4,
        interpolation: str = "bilinear",
        root: str | None = None,
        builtin: str | None = "synthetic",
        periodicity: int | None = None,
        samples_per_epoch: int = 8192,
        val_samples: int = 64,
        max_length: int = 4096,
        seed: int = 0,
    ):
        builtin = None if root is not None else builtin  # a folder, when given, replaces the built-in stream
        if root is None and builtin is None:
            raise ConfigError("root", "no data: set root (a folder of series, data.root=PATH) or builtin=synthetic")
        if builtin not in (None, "synthetic"):
            raise ConfigError("builtin", f"unknown built-in source {builtin!r}; the only one is 'synthetic'")
        if samples_per_epoch < 1 or val_samples < 0:
            raise ConfigError("samples_per_epoch", "must be positive (and val_samples >= 0)")
        self.adapter = dict(img_size=img_size, patch_size=patch_size, in_chans=in_chans, norm_const=norm_const, interpolation=interpolation)
        self.root, self.builtin, self.periodicity = root, builtin, periodicity
        self.samples_per_epoch, self.val_samples, self.max_length, self.seed = samples_per_epoch, val_samples, max_length, seed
        self._series: list[tuple[np.ndarray, int]] | None = None

    def _load(self) -> list[tuple[np.ndarray, int]] | None:
        if self.root is None:
            return None
        from pathlib import Path

        from omnimae.data.files import walk

        root = Path(self.root).expanduser()
        kinds = (".csv", ".tsv", ".zarr", *NETCDF_SUFFIXES)  # what read_series reads, in any case
        files = sorted(walk(root, lambda p, is_dir: p.suffix.lower() in kinds))  # a zarr store whole, not its insides
        if not files:
            raise DataError(f"data.root={root}: no series found ({', '.join(kinds)})")
        out = []
        cols = self.adapter["img_size"] // self.adapter["patch_size"]
        for f in files:
            table = read_series(f)
            period = self.periodicity or periodicity_candidates(table.time)[0]
            need = min_window(period, cols)
            if len(table.values) < need:
                what = f"4 periods of {period}" if period > 1 else f"4 per patch column ({cols} columns) at period 1"
                raise DataError(
                    f"{f}: series {table.names} have {len(table.values)} points, fewer than the {need} "
                    f"({what}) the shortest pretraining window needs"
                )
            out += [(table.values[:, v], period) for v in range(table.values.shape[1])]
        return out

    def splits(self) -> dict[str, tuple]:
        if self._series is None and self.root is not None:
            self._series = self._load()
        return {"train": Split(None, [-1] * self.samples_per_epoch), "val": Split(None, [-1] * self.val_samples)}

    def dataset(self, split: str, train: bool) -> SeriesWindows:
        self.splits()
        size = self.samples_per_epoch if split == "train" else self.val_samples
        base = self.seed * 2 + (0 if split == "train" else 1)  # train and val draw from disjoint streams
        return SeriesWindows(size, self.adapter, self._series, base, self.max_length)
