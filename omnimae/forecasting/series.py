"""The forecasting contract: what forecasting takes from the time-series modality, and how it finds it.

Forecasting is a use of the core; it never imports a modality module. It takes the time-series
adapter class from the registry, `omnimae.adapter.MODALITIES["timeseries"]` (as `SERIES`), and uses
only what `SeriesModality` declares:

- reading: `read_series(path, ...)` -> a `SeriesTable` (checked values [T, V], names, time index);
  `netcdf_suffixes`, the file names it reads as netCDF, which forecasts are also written as;
- the time index: `periodicity_candidates(time)` (seasonal periods its frequency suggests) and
  `future_index(time, horizon, length)` (the points a forecast stands at);
- the raster (VisionTS): `raster_geometry(...)` places context and horizon in the image,
  `rasterize(x, geo, norm_const, eps)` draws contexts [B, T, V] as images [B*V, 3, H, W] with their
  scale, `read_back(images, geo, scale)` turns reconstructions into forecasts [B, H, V];
  `check_eps` and `eps_modes`, `interpolations`: the normalizations and resize kernels it knows.

The raster is a property of the class, not of a model's adapter: any model whose adapter takes 2D
images (an image MAE too) forecasts through it. An adapter of this class also carries its own
`norm_const`, `align_const` and `interpolation`, which a Forecaster takes as its defaults.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import pandas as pd
import torch

import omnimae.modalities  # noqa: F401  registers every adapter, the time-series one among them
from omnimae.adapter import MODALITIES


class SeriesTable(Protocol):
    """A series read from a file."""

    values: np.ndarray  # [T, V] float64, finite
    names: list[str]  # one per variate
    time: pd.Index | None  # DatetimeIndex (freq set when regular), a numeric index, or None
    source: str  # the file it came from

    @property
    def freq(self) -> pd.DateOffset | None: ...

    def __len__(self) -> int: ...


class RasterGeometry(Protocol):
    """Where context and forecast go in the image, for one (context, horizon, periodicity)."""

    def check(self) -> None: ...  # a ConfigError naming the key when the horizon does not fit

    def mask(self) -> torch.Tensor: ...  # [num_patch^2]: 1 for the future patch columns


class SeriesModality(Protocol):
    """The time-series adapter class, as forecasting uses it (see the module docstring)."""

    eps_modes: tuple[str, ...]
    interpolations: tuple[str, ...]
    netcdf_suffixes: tuple[str, ...]

    @staticmethod
    def read_series(path: Any, time_column: str | None = None, variables: Sequence[str] | None = None,
                    max_gap: int = 3, allow_irregular: bool = False) -> SeriesTable: ...

    @staticmethod
    def periodicity_candidates(time: Any) -> list[int]: ...

    @staticmethod
    def future_index(time: pd.Index | None, horizon: int, length: int = 0) -> pd.Index: ...

    @staticmethod
    def raster_geometry(context_len: int, pred_len: int, periodicity: int, img_size: int, patch_size: int,
                        align_const: float, interpolation: str) -> RasterGeometry: ...

    @staticmethod
    def check_eps(eps: str) -> str: ...

    @staticmethod
    def rasterize(x: torch.Tensor, geo: RasterGeometry, norm_const: float, eps: str) -> tuple[torch.Tensor, Any]: ...

    @staticmethod
    def read_back(images: torch.Tensor, geo: RasterGeometry, scale: Any) -> torch.Tensor: ...


SERIES: SeriesModality = MODALITIES["timeseries"]
