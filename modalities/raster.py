"""Time series as grey images, following VisionTS (Chen et al. 2024): the raster both forecasting and
pretraining draw series on.

A series is normalized by its context's mean and std (scaled by `norm_const`), left-padded to a
whole number of periods, folded into a [periodicity x periods] image, resized so the context fills
the left `num_patch_input` patch columns (`align_const`), and the right-hand columns are masked.
The MAE's reconstruction of those columns, resized back and de-normalized, is the forecast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from omnimae.errors import ConfigError
from omnimae.masking import right_columns_mask

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    # antialias off, as VisionTS resizes
    return TF.resize(x, list(size), interpolation=INTERPOLATIONS[interpolation], antialias=False)


@dataclass(frozen=True)
class RasterGeometry:
    """Where context and forecast go in the image, for one (context, horizon, periodicity)."""

    context_len: int
    pred_len: int
    periodicity: int
    img_size: int = 224
    patch_size: int = 16
    align_const: float = 0.4
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.pred_len < 1:
            raise ConfigError("horizon", f"must be at least 1, got {self.pred_len}")
        if self.periodicity < 1:
            raise ConfigError("periodicity", f"must be at least 1, got {self.periodicity}")
        if self.context_len < self.periodicity:
            raise ConfigError("context", f"{self.context_len} points is shorter than one period ({self.periodicity})")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError("interpolation", f"must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")

    @property
    def num_patch(self) -> int:
        return self.img_size // self.patch_size

    @property
    def pad_left(self) -> int:
        return (-self.context_len) % self.periodicity

    @property
    def pad_right(self) -> int:
        return (-self.pred_len) % self.periodicity

    @property
    def num_patch_input(self) -> int:
        total = self.pad_left + self.context_len + self.pad_right + self.pred_len
        ratio = (self.pad_left + self.context_len) / total
        return max(1, int(ratio * self.num_patch * self.align_const))

    @property
    def input_width(self) -> int:
        return int(self.img_size * self.num_patch_input / self.num_patch)

    @property
    def output_width(self) -> int:
        scale_x = ((self.pad_left + self.context_len) // self.periodicity) / self.input_width
        return int(round(self.img_size * scale_x))

    def mask(self) -> torch.Tensor:
        """[num_patch^2] token mask: 1 for the right-hand (future) patch columns."""
        return right_columns_mask(self.num_patch, self.num_patch, self.num_patch_input)

    def check(self) -> None:
        if self.output_width * self.periodicity < self.pad_left + self.context_len + self.pred_len:
            raise ConfigError(
                "horizon",
                f"{self.pred_len} steps do not fit the image at this context ({self.context_len}) and "
                f"periodicity ({self.periodicity}); use a longer context or a shorter horizon",
            )


EPS_MODES = ("relative", "visionts")


def check_eps(eps: str) -> str:
    if eps not in EPS_MODES:
        raise ConfigError("eps", f"must be one of {', '.join(EPS_MODES)}, got {eps!r}")
    return eps


@dataclass(frozen=True)
class SeriesScale:
    """Per-series normalization x -> (x / unit - mean) / std, [B, 1, V] each.

    `unit` is a power of two near the series' largest |value|: dividing by it is exact, and keeps
    every sum and square finite, so a series at 1e154 or 1.7e308 normalizes like one at 1.
    `mean` and `std` are in units; std includes 1 / norm_const and is 0 for a constant series.
    """

    unit: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x / self.unit - self.mean) / torch.where(self.std > 0, self.std, 1)  # a constant series: zeros

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.std + self.mean) * self.unit


def series_scale(x: torch.Tensor, norm_const: float, eps: str = "relative") -> SeriesScale:
    """The normalization of context x [B, T, V]: its mean and std (scaled by 1 / norm_const).

    eps="relative": the std itself, so forecasts scale with the series (a * x + b forecasts as
    a * forecast(x) + b at any a > 0); a constant series forecasts as that constant.
    eps="visionts": sqrt(var + 1e-5) in the series' own units, exactly as VisionTS (conformance).
    """
    check_eps(eps)
    _, exponent = torch.frexp(x.abs().amax(1, keepdim=True))
    unit = torch.ldexp(torch.ones_like(exponent, dtype=x.dtype), exponent - 1)  # |x| / unit < 2
    scaled = x / unit
    mean = scaled.mean(1, keepdim=True)
    sd = torch.sqrt(torch.var(scaled - mean, dim=1, keepdim=True, unbiased=False))
    if eps == "visionts":  # sqrt(var + 1e-5) in units, as a hypot so neither term overflows
        return SeriesScale(unit, mean, torch.hypot(sd, 1e-5**0.5 / unit) / norm_const)
    constant = (x == x[:, :1]).all(1, keepdim=True)  # exactly: its rounded mean could differ from it
    mean = torch.where(constant, scaled[:, :1], mean)
    return SeriesScale(unit, mean, torch.where(constant, 0, sd / norm_const))


def rasterize(x: torch.Tensor, geo: RasterGeometry, norm_const: float = 0.4, eps: str = "relative"):
    """Context x [B, T, V] -> (images [B*V, 3, H, W] with the future columns zero, its SeriesScale)."""
    scale = series_scale(x, norm_const, eps)
    x = rearrange(scale.apply(x), "b t v -> b v t")
    x = F.pad(x, (geo.pad_left, 0), mode="replicate")  # [B, V, pad + T]
    x = rearrange(x, "b v (p f) -> (b v) 1 f p", f=geo.periodicity)  # folded: periodicity rows
    x = resize(x, (geo.img_size, geo.input_width), geo.interpolation)
    future = x.new_zeros(x.shape[0], 1, geo.img_size, geo.img_size - geo.input_width)
    image = torch.cat([x, future], dim=-1)  # [B*V, 1, H, W]
    return repeat(image, "n 1 h w -> n c h w", c=3), scale


def read_back(images: torch.Tensor, geo: RasterGeometry, scale: SeriesScale) -> torch.Tensor:
    """Reconstructed images [B*V, C, H, W] -> forecast [B, pred_len, V] in the series' units."""
    grey = images.mean(1, keepdim=True)  # colour to grey
    folded = resize(grey, (geo.periodicity, geo.output_width), geo.interpolation)
    flat = rearrange(folded, "(b v) 1 f p -> b (p f) v", b=scale.unit.shape[0])
    start = geo.pad_left + geo.context_len
    return scale.invert(flat[:, start : start + geo.pred_len])
