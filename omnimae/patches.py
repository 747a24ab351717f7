"""The one contract between modality adapters and the MAE core: a sequence of patch tokens."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def grid_coords(*sizes: int) -> torch.Tensor:
    """Row-major integer coordinates of a grid: [prod(sizes), len(sizes)]."""
    axes = [torch.arange(s) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))


@dataclass
class Patches:
    """Patch tokens of one batch, all samples with the same grid.

    values: [B, N, P] token values (P = flattened patch, in the tokenizer's value order)
    coords: [N, A] integer grid coordinates of each token, e.g. (h, w), (t, h, w), (c, h, w);
            kept on the host (CPU): they key the position-embedding cache
    grid:   tokens per axis, prod(grid) == N
    meta:   whatever the tokenizer needs to invert itself (input shape, padding, channels)
    """

    values: torch.Tensor
    coords: torch.Tensor
    grid: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 3:
            raise ValueError(f"Patches.values must be [B, N, P], got shape {tuple(self.values.shape)}")
        n = self.values.shape[1]
        if self.coords.shape[0] != n:
            raise ValueError(f"Patches.coords has {self.coords.shape[0]} rows for {n} tokens")

    @property
    def num_tokens(self) -> int:
        return self.values.shape[1]

    def replace(self, values: torch.Tensor) -> "Patches":
        """Same grid, new values (e.g. a prediction) so the tokenizer can invert it."""
        return Patches(values, self.coords, self.grid, self.meta)
