"""Masking as index functions. Each returns (ids_keep [B, K], ids_restore [B, N], mask [B, N]).

mask is 1 for a masked (hidden) token and 0 for a visible one, as in the MAE paper;
ids_restore un-shuffles [visible tokens, mask tokens] back to the original order.
"""
from __future__ import annotations

import torch

MaskIndices = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def num_visible(num_tokens: int, mask_ratio: float) -> int:
    # int() truncation of the visible count, exactly as the MAE paper's code
    return max(1, int(num_tokens * (1 - mask_ratio)))


def tube_num_visible(tokens_per_frame: int, mask_ratio: float) -> int:
    # VideoMAE's TubeMaskingGenerator truncates the hidden count instead: S - int(ratio * S) stay visible
    return max(1, tokens_per_frame - int(mask_ratio * tokens_per_frame))


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
    """Per-sample random masking by argsort of uniform noise (the MAE paper's).

    num_keep overrides the visible count that mask_ratio gives (e.g. when some tokens carry
    noise above 1 so that they are always hidden).
    """
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
    return ids_keep, ids_restore, mask


def explicit_masking(mask: torch.Tensor) -> MaskIndices:
    """Indices for a given mask [B, N] (1 = hidden); every sample must hide the same count."""
    mask = mask.float()
    hidden = mask.sum(1)
    if (hidden != hidden[0]).any():
        raise ValueError("explicit mask must hide the same number of tokens in every sample")
    len_keep = mask.shape[1] - int(hidden[0].item())
    ids_shuffle = torch.argsort(mask, dim=1, stable=True)  # visible first, each group in order
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    return ids_shuffle[:, :len_keep], ids_restore, mask


def tube_masking(
    batch: int,
    num_frames: int,
    tokens_per_frame: int,
    mask_ratio: float,
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskIndices:
    """VideoMAE tube masking: one spatial mask repeated over every (t-major) frame, hiding
    int(mask_ratio * S) of its S tokens as VideoMAE does (176 of 196 at 0.9, where MAE's rule hides 177)."""
    _, _, spatial = random_masking(
        batch, tokens_per_frame, mask_ratio, noise=noise, generator=generator, device=device,
        num_keep=tube_num_visible(tokens_per_frame, mask_ratio),
    )  # [B, S]
    return explicit_masking(spatial.repeat(1, num_frames))  # [B, T*S]


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], ids [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def host_draws(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n uniform draws on the host for decisions that shape a batch's mask (which masking, how many
    columns or channels): seeded from the step's generator without reading anything back from a
    GPU, so choosing a masking strategy costs no device synchronization."""
    host = torch.Generator().manual_seed(generator.initial_seed()) if generator is not None else None
    return torch.rand(n, generator=host)
