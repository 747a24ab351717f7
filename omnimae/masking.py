"""Masking as index functions, and the registry of strategies adapters choose from by name.

Every function returns MaskIndices(ids_keep [B, K], ids_restore [B, N], mask [B, N]): mask is 1
for a masked (hidden) token and 0 for a visible one, as in the MAE paper; ids_restore un-shuffles
[visible tokens, mask tokens] back to the original order. Every sample of a batch keeps the same
visible count K, so the encoder's input is one dense [B, K, D] tensor.

A strategy is `fn(patches, mask_ratio, *, generator=None, **params) -> MaskIndices`, registered
with `@register_masking(name)`. It reads the token grid (`patches.grid`) and the batch size and
device from `patches.values`; its parameters come from the adapter's config. Adapters choose and
configure a strategy (`masking: <name>`), they never plan masks themselves.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Callable, NamedTuple

import torch

from omnimae.errors import ConfigError
from omnimae.patches import Patches


class MaskIndices(NamedTuple):
    ids_keep: torch.Tensor  # [B, K] the visible tokens, in the order the encoder sees them
    ids_restore: torch.Tensor  # [B, N] un-shuffles [visible, mask tokens] to the original order
    mask: torch.Tensor  # [B, N] 1 = hidden, 0 = visible


MaskingStrategy = Callable[..., MaskIndices]
MASKINGS: dict[str, MaskingStrategy] = {}
LAYOUTS: dict[str, str] = {}  # strategy name -> the token layout it needs, for error messages


def register_masking(name: str, layout: str = "any tokens"):
    """Function decorator: make a masking strategy known by name (adapters take `masking: <name>`);
    `layout` says which token grids it fits."""

    def wrap(fn: MaskingStrategy) -> MaskingStrategy:
        MASKINGS[name] = fn
        LAYOUTS[name] = layout
        return fn

    return wrap


def masking_strategy(name: str) -> MaskingStrategy:
    if name not in MASKINGS:
        raise ConfigError("masking", f"unknown masking {name!r}; registered: {', '.join(sorted(MASKINGS))}")
    return MASKINGS[name]


def masking_choice(value) -> tuple[str, dict]:
    """`masking:` in config -> (strategy name, its parameters): a name (`masking: spiral`), or a mapping
    with the name and parameters (`masking: {name: spiral, period: 16}`), checked against the strategy."""
    if isinstance(value, str):
        return value, {}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ConfigError("masking", f"expected a strategy name or {{name: <strategy>, <parameters>}}, got {value!r}")
    params = {k: v for k, v in value.items() if k != "name"}
    fn = masking_strategy(value["name"])
    known = [p for p in inspect.signature(fn).parameters if p not in ("patches", "mask_ratio", "generator")]
    for key in params:
        if key not in known:
            raise ConfigError(f"masking.{key}", f"not a parameter of {value['name']} masking; it takes: {', '.join(known) or 'none'}")
    return value["name"], params


# --- counts --------------------------------------------------------------------------------
def num_visible(num_tokens: int, mask_ratio: float) -> int:
    # int() truncation of the visible count, exactly as the MAE paper's code
    return max(1, int(num_tokens * (1 - mask_ratio)))


def tube_num_visible(tokens_per_frame: int, mask_ratio: float) -> int:
    # VideoMAE's TubeMaskingGenerator truncates the hidden count instead: S - int(ratio * S) stay visible
    return max(1, tokens_per_frame - int(mask_ratio * tokens_per_frame))


# --- primitives ----------------------------------------------------------------------------
def random_masking(
    batch: int,
    num_tokens: int,
    mask_ratio: float,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    num_keep: int | None = None,
) -> MaskIndices:
    """Per-sample random masking by argsort of uniform noise [B, N] (the MAE paper's): the tokens with
    the smallest noise stay visible. num_keep overrides the visible count that mask_ratio gives."""
    if noise is None:
        noise = torch.rand(batch, num_tokens, generator=generator, device=device)  # [B, N]
    elif noise.shape != (batch, num_tokens):
        raise ValueError(f"noise must be [{batch}, {num_tokens}], got {tuple(noise.shape)}")
    len_keep = num_visible(num_tokens, mask_ratio) if num_keep is None else num_keep
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return MaskIndices(ids_keep, ids_restore, mask)


def explicit_masking(mask: torch.Tensor, num_keep: int | None = None) -> MaskIndices:
    """Indices for a given mask [B, N] (1 = hidden); every sample must hide the same count. A caller
    that knows the visible count by construction passes it as num_keep: no check, no device sync."""
    mask = mask.float()
    if num_keep is None:
        hidden = mask.sum(1)
        if (hidden != hidden[0]).any():
            raise ValueError("explicit mask must hide the same number of tokens in every sample")
        num_keep = mask.shape[1] - int(hidden[0].item())
    ids_shuffle = torch.argsort(mask, dim=1, stable=True)  # visible first, each group in order
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return MaskIndices(ids_shuffle[:, :num_keep], ids_restore, mask)


def right_columns_mask(rows: int, cols: int, visible_columns: int, device=None) -> torch.Tensor:
    """[rows * cols] row-major token mask hiding every column from `visible_columns` on: the future
    of a rasterized series (time runs along the columns)."""
    m = torch.ones(rows, cols, device=device)
    m[:, :visible_columns] = 0
    return m.reshape(-1)


def host_draws(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n uniform draws on the host for decisions that shape a batch's mask (which masking, how many
    columns or channels): seeded from the step's generator without reading anything back from a
    GPU, so choosing a masking strategy costs no device synchronization."""
    host = torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None
    return torch.rand(n, generator=host)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], ids [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _shape(patches: Patches) -> tuple[int, int, torch.device]:
    b, n, _ = patches.values.shape
    return b, n, patches.values.device


# --- strategies ----------------------------------------------------------------------------
@register_masking("random")
def random_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None) -> MaskIndices:
    """The MAE paper's: an independent random subset of the tokens per sample."""
    b, n, device = _shape(patches)
    return random_masking(b, n, mask_ratio, generator=generator, device=device)


def tube_masking(batch: int, num_frames: int, tokens_per_frame: int, mask_ratio: float, *,
                 generator: torch.Generator | None = None, device: torch.device | str | None = None) -> MaskIndices:
    """VideoMAE tube masking over t-major tokens: one spatial mask repeated over every frame, hiding
    int(mask_ratio * S) of its S tokens as VideoMAE does (176 of 196 at 0.9, where MAE's rule hides 177)."""
    _, _, spatial = random_masking(batch, tokens_per_frame, mask_ratio, generator=generator, device=device,
                                   num_keep=tube_num_visible(tokens_per_frame, mask_ratio))  # [B, S]
    keep = tube_num_visible(tokens_per_frame, mask_ratio) * num_frames  # known by construction: no device sync
    return explicit_masking(spatial.repeat(1, num_frames), num_keep=keep)  # [B, T*S]


@register_masking("tube", layout="tokens on a (t, h, w) grid, t-major")
def tube_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None) -> MaskIndices:
    """Tokens on a (t, h, w) grid: the same (h, w) positions hidden in every frame (VideoMAE)."""
    if len(patches.grid) != 3:
        raise ConfigError("masking", f"tube masking needs a (t, h, w) token grid, got {patches.grid}")
    b, _, device = _shape(patches)
    gt, gh, gw = patches.grid
    return tube_masking(b, gt, gh * gw, mask_ratio, generator=generator, device=device)


@lru_cache(maxsize=64)
def time_frequency_plan(grid_t: int, grid_f: int, mask_ratio: float) -> tuple[int, int]:
    """(visible time columns, visible frequency rows) for a time-frequency mask near mask_ratio.

    The visible tokens are the crossings of the visible columns and rows, so their count is the
    product; the pair whose product is nearest the random masking's visible count wins, ties going
    to the pair that keeps similar shares of both axes.
    """
    target = num_visible(grid_t * grid_f, mask_ratio)
    best, best_score = None, None
    for kf in range(1, grid_f + 1):
        for kt in range(1, grid_t + 1):
            if kt == grid_t and kf == grid_f:
                continue  # something must be hidden
            score = (abs(kt * kf - target), abs(math.log((kt / grid_t) / (kf / grid_f))))
            if best_score is None or score < best_score:
                best, best_score = (kt, kf), score
    if best is None:
        raise ConfigError("masking", f"a {grid_t}x{grid_f} token grid has no time-frequency mask; it needs 2+ tokens")
    return best


def time_frequency_masking(batch: int, grid_t: int, grid_f: int, mask_ratio: float, *,
                           generator: torch.Generator | None = None, device: torch.device | str | None = None) -> MaskIndices:
    """AudioMAE-style structured masking of (t, f) row-major tokens: whole time columns and whole
    frequency rows hidden, the same counts (`time_frequency_plan`) at random places per sample."""
    keep_t, keep_f = time_frequency_plan(grid_t, grid_f, float(mask_ratio))
    noise_t = torch.rand(batch, grid_t, generator=generator, device=device)
    noise_f = torch.rand(batch, grid_f, generator=generator, device=device)
    vis_t = torch.zeros(batch, grid_t, device=noise_t.device)
    vis_t.scatter_(1, noise_t.argsort(dim=1)[:, :keep_t], 1.0)  # [B, T], 1 = visible column
    vis_f = torch.zeros(batch, grid_f, device=noise_f.device)
    vis_f.scatter_(1, noise_f.argsort(dim=1)[:, :keep_f], 1.0)  # [B, F], 1 = visible row
    visible = vis_t[:, :, None] * vis_f[:, None, :]  # [B, T, F]
    return explicit_masking(1.0 - visible.reshape(batch, grid_t * grid_f), num_keep=keep_t * keep_f)


@register_masking("time_frequency", layout="tokens on a (t, f) grid")
def time_frequency_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None) -> MaskIndices:
    """Tokens on a (t, f) grid: whole time columns and frequency rows hidden (AudioMAE)."""
    if len(patches.grid) != 2:
        raise ConfigError("masking", f"time-frequency masking needs a (t, f) token grid, got {patches.grid}")
    b, _, device = _shape(patches)
    return time_frequency_masking(b, *patches.grid, mask_ratio, generator=generator, device=device)


@register_masking("channel_subset", layout="tokens on a (c, h, w) grid, channel-major")
def channel_subset_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None,
                            channel_subset_prob: float = 0.5) -> MaskIndices:
    """Tokens on a (c, h, w) grid, channel-major: random over channel x space, and with probability
    channel_subset_prob the encoder sees only a random subset of the channels (shared by the batch;
    each channel kept with probability 1/2, at least one), mask_ratio of that subset's tokens hidden."""
    b, n, device = _shape(patches)
    c = patches.grid[0]
    if c < 2 or channel_subset_prob == 0:
        return random_masking(b, n, mask_ratio, generator=generator, device=device)
    draw = host_draws(c + 1, generator)
    if draw[0] >= channel_subset_prob:
        return random_masking(b, n, mask_ratio, generator=generator, device=device)
    keep_channels = draw[1:] < 0.5
    if not keep_channels.any():
        keep_channels[int(torch.argmin(draw[1:]))] = True
    per_token = keep_channels.repeat_interleave(n // c).to(device)  # [N]
    noise = torch.rand(b, n, generator=generator, device=device) + (~per_token).float() * 2  # dropped: never kept
    num_keep = max(1, int(int(keep_channels.sum()) * (n // c) * (1 - mask_ratio)))  # host values: no sync
    return random_masking(b, n, mask_ratio, noise=noise, num_keep=num_keep)


@register_masking("future_or_random", layout="tokens on an (h, w) raster whose columns are time")
def future_or_random_strategy(patches: Patches, mask_ratio: float, *, generator: torch.Generator | None = None,
                              future_mask_prob: float = 0.5, min_visible_columns: int = 2,
                              max_visible_columns: int = 7) -> MaskIndices:
    """Tokens on an (h, w) grid of a rasterized series: with probability future_mask_prob every column
    right of a random split (min..max visible columns) is hidden, a forecasting task; else random."""
    b, n, device = _shape(patches)
    if future_mask_prob > 0:
        draw = host_draws(2, generator)
        if draw[0] < future_mask_prob:
            rows, cols = patches.grid
            lo, hi = min_visible_columns, max_visible_columns
            visible = lo + int(draw[1] * (hi - lo + 1))
            mask = right_columns_mask(rows, cols, visible, device).unsqueeze(0).expand(b, -1)
            return explicit_masking(mask, num_keep=rows * visible)
    return random_masking(b, n, mask_ratio, generator=generator, device=device)


# the strategies over the (h, w) plane (block, grid, curve scans) register themselves on import
from omnimae import masking_plane  # noqa: E402,F401
