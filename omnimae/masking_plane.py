"""Masking strategies over the (h, w) plane of the tokens: block, grid and the curve scans.

They fit any token grid whose last two axes are a plane: (h, w) images, time-series rasters and
array tiles, (t, f) spectrograms, and the (h, w) of (t, h, w) video tubes or (c, h, w) microscopy
channels. A strategy draws one plane mask per sample and repeats it over the leading axis, so a
video hides the same places in every frame (as tube masking does) and a microscopy image hides the
same places in every channel (a hidden place cannot be read off another channel).

Every strategy scores the plane's tokens per sample and hides the highest scores: the pattern's
tokens score above the rest, and a uniform draw below one orders the tokens inside each group. So
every sample hides exactly the MAE rule's count, N - int(N x (1 - mask_ratio)) of the N plane
tokens: where a pattern hides more, the excess is revealed at random among its tokens (trim); where
it hides fewer, random others are hidden too (top-up).

- block (BEiT): rectangles of random area (uniform from min_block_tokens to the hidden count) and
  aspect ratio (log-uniform in [min_aspect, 1 / min_aspect]) at random places, taken in turn until
  they cover the hidden count; the last one taken is trimmed at random to the exact count.
  min_block_tokens defaults to BEiT's 16 on a 14 x 14 grid, scaled to the plane's size.
- grid: one visible token per cell of cell x cell tokens, at a random offset per sample (the same
  place in every cell). cell defaults to round(1 / sqrt(1 - mask_ratio)), at least 2 (0.75 -> 2).
- zigzag, hilbert, peano, spiral: the plane's tokens in the curve's order (omnimae.curves), and
  runs along it: the token at place i of the order is hidden when (i + phase) mod period <
  round(period x mask_ratio), with phase uniform in {0, ..., period - 1} per sample; period
  defaults to 8 tokens (at 0.75: runs of 6 hidden, 2 visible). A partial last period then meets
  the exact count by the trim or top-up above.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from omnimae.curves import curve_order
from omnimae.errors import ConfigError
from omnimae.masking import MaskIndices, explicit_masking, num_visible, register_masking
from omnimae.patches import Patches

PLANE_LAYOUT = "tokens on a grid whose last two axes are an (h, w) plane of 2+ tokens, e.g. (h, w), (t, h, w), (c, h, w)"
CURVE_NAMES = ("zigzag", "hilbert", "peano", "spiral")
PLANE_MASKINGS = ("block", "grid", *CURVE_NAMES)
BLOCK_CANDIDATES = 16  # rectangles drawn at once per sample; a rare shortfall is topped up at random


def plane_of(patches: Patches, name: str) -> tuple[int, int, int]:
    """(leading tokens, h, w) of the tokens' grid; a ConfigError naming the layout where there is no plane."""
    grid = tuple(patches.grid)
    if len(grid) < 2 or grid[-1] * grid[-2] < 2:
        raise ConfigError("masking", f"{name} masking needs {PLANE_LAYOUT}; these tokens lie on a grid {grid}")
    return math.prod(grid[:-2]), grid[-2], grid[-1]


def mask_from_scores(scores: torch.Tensor, lead: int, mask_ratio: float) -> MaskIndices:
    """scores [B, S] over the plane (highest hidden first) -> indices over the [B, lead * S] tokens."""
    b, s = scores.shape
    keep = num_visible(s, mask_ratio)
    plane = torch.ones(b, s, device=scores.device)
    plane.scatter_(1, torch.argsort(scores, dim=1)[:, :keep], 0.0)  # [B, S], 1 = hidden
    return explicit_masking(plane.repeat(1, lead), num_keep=keep * lead)  # leading-major tokens


def _uniform(b: int, n: int, generator, device) -> torch.Tensor:
    return torch.rand(b, n, generator=generator, device=device)


# --- block ------------------------------------------------------------------------------------
def block_scores(b: int, h: int, w: int, hidden: int, *, min_block_tokens: int, min_aspect: float,
                 generator=None, device=None) -> torch.Tensor:
    """[B, h*w] scores: 2 + u for tokens of the rectangles before the one that reaches `hidden`,
    1 + u for tokens only in that one, u elsewhere (u uniform in [0, 1))."""
    r = BLOCK_CANDIDATES
    draws = torch.rand(b, r, 4, generator=generator, device=device)  # area, aspect, top, left
    low = min(float(min_block_tokens), float(hidden))
    area = low + draws[..., 0] * (hidden - low)
    log_aspect = math.log(min_aspect) + draws[..., 1] * (-2 * math.log(min_aspect))
    aspect = torch.exp(log_aspect)
    rh = torch.sqrt(area * aspect).round().clamp(1, h)  # [B, R]
    rw = torch.sqrt(area / aspect).round().clamp(1, w)
    top = (draws[..., 2] * (h - rh + 1)).floor()
    left = (draws[..., 3] * (w - rw + 1)).floor()
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    in_rows = (rows >= top[..., None]) & (rows < (top + rh)[..., None])  # [B, R, h]
    in_cols = (cols >= left[..., None]) & (cols < (left + rw)[..., None])  # [B, R, w]
    rect = (in_rows[..., :, None] & in_cols[..., None, :]).flatten(2)  # [B, R, h*w]
    covered = rect.cumsum(dim=1) > 0  # [B, R, h*w]: the union of rectangles 0..r
    reached = (covered.sum(-1) < hidden).sum(1, keepdim=True).clamp(max=r - 1)  # [B, 1]: first r covering enough
    last = covered.gather(1, reached[..., None].expand(-1, 1, h * w))[:, 0]  # [B, h*w]
    before = covered.gather(1, (reached - 1).clamp(min=0)[..., None].expand(-1, 1, h * w))[:, 0]
    before = before * (reached > 0)
    return before.float() + last.float() + _uniform(b, h * w, generator, device)


@register_masking("block", layout=PLANE_LAYOUT)
def block_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None,
                   min_block_tokens: int | None = None, min_aspect: float = 0.3) -> MaskIndices:
    """BEiT's block-wise masking on the (h, w) plane, repeated over any leading axis."""
    lead, h, w = plane_of(patches, "block")
    if not 0 < min_aspect <= 1:
        raise ConfigError("masking", f"block masking's min_aspect must lie in (0, 1], got {min_aspect}")
    hidden = h * w - num_visible(h * w, mask_ratio)
    if min_block_tokens is None:
        min_block_tokens = max(1, round(16 * h * w / 196))  # BEiT's 16 of 14 x 14
    scores = block_scores(patches.values.shape[0], h, w, hidden, min_block_tokens=min_block_tokens,
                          min_aspect=min_aspect, generator=generator, device=patches.values.device)
    return mask_from_scores(scores, lead, mask_ratio)


# --- grid -------------------------------------------------------------------------------------
def grid_cell(mask_ratio: float) -> int:
    """The cell side whose one visible token comes nearest the ratio: 1 / cell^2 ~ 1 - mask_ratio."""
    return max(2, round(1 / math.sqrt(1 - mask_ratio)))


@register_masking("grid", layout=PLANE_LAYOUT)
def grid_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None,
                  cell: int | None = None) -> MaskIndices:
    """One visible token per cell x cell cell of the (h, w) plane, at a random offset per sample."""
    lead, h, w = plane_of(patches, "grid")
    cell = grid_cell(mask_ratio) if cell is None else cell
    if cell < 2:
        raise ConfigError("masking", f"grid masking's cell must be at least 2 tokens, got {cell}")
    b, device = patches.values.shape[0], patches.values.device
    offset = torch.randint(0, cell, (b, 2, 1, 1), generator=generator, device=device)  # [B, (dh, dw), 1, 1]
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    shown = ((rows - offset[:, 0]) % cell == 0) & ((cols - offset[:, 1]) % cell == 0)  # [B, h, w]
    scores = (~shown).float().flatten(1) + _uniform(b, h * w, generator, device)
    return mask_from_scores(scores, lead, mask_ratio)


# --- curve scans ------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def curve_position(name: str, h: int, w: int, device: str) -> torch.Tensor:
    """[h*w]: each row-major token's place along the curve, on the device (cached per grid)."""
    order = curve_order(name, h, w)
    return torch.argsort(order).to(device)


def curve_strategy(name: str):
    def strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None,
                 period: int = 8) -> MaskIndices:
        lead, h, w = plane_of(patches, name)
        if period < 2:
            raise ConfigError("masking", f"{name} masking's period must be at least 2 tokens, got {period}")
        b, device = patches.values.shape[0], patches.values.device
        place = curve_position(name, h, w, str(device))  # [S]
        phase = torch.randint(0, period, (b, 1), generator=generator, device=device)
        hidden_run = max(1, min(period - 1, round(period * mask_ratio)))
        hide = (place + phase) % period < hidden_run  # [B, S]
        scores = hide.float() + _uniform(b, h * w, generator, device)
        return mask_from_scores(scores, lead, mask_ratio)

    strategy.__name__ = f"{name}_strategy"
    strategy.__doc__ = f"Runs along the {name} order of the (h, w) plane, at a random phase per sample."
    return strategy


for _name in CURVE_NAMES:
    register_masking(_name, layout=PLANE_LAYOUT)(curve_strategy(_name))
