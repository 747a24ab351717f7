"""Features of an encoded sequence: the one pooling every use takes (probe, embed, fine-tuning, serving).

The encoder's output latent [B, 1 + N, D] holds the CLS token first, then the N patch tokens. MAE's
papers report both: the CLS token, and the mean of the patch tokens (global average pooling, the
fine-tuning default).
"""
from __future__ import annotations

from typing import Literal

import torch

from omnimae.errors import ConfigError

Pool = Literal["cls", "mean"]
POOLS: tuple[str, ...] = ("cls", "mean")


def check_pools(pool: str | list[str] | tuple[str, ...], key: str = "pool") -> list[str]:
    """A pooling name or a list of them -> the list, each checked (ConfigError naming the key)."""
    pools = [pool] if isinstance(pool, str) else list(pool)
    if not pools:
        raise ConfigError(key, f"name at least one of {', '.join(POOLS)}")
    for p in pools:
        if p not in POOLS:
            raise ConfigError(key, f"must be {' or '.join(POOLS)}, got {p!r}")
    return pools


def pool_tokens(latent: torch.Tensor, pool: Pool) -> torch.Tensor:
    """latent [B, 1 + N, D] (CLS first) -> [B, D]: the CLS token, or the mean of the patch tokens."""
    if pool == "cls":
        return latent[:, 0]
    if pool == "mean":
        return latent[:, 1:].mean(dim=1)
    raise ConfigError("pool", f"must be {' or '.join(POOLS)}, got {pool!r}")
