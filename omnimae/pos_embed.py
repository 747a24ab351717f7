"""Fixed sin-cos position embedding from integer token coordinates of any number of axes."""
from __future__ import annotations

import torch


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos [M] -> [M, dim]: sin of pos * omega in the first half, cos in the second."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # [dim/2]
    out = pos.double().reshape(-1, 1) * omega.reshape(1, -1)  # [M, dim/2]
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_pos_embed(coords: torch.Tensor, dim: int) -> torch.Tensor:
    """coords [N, A] -> [N, dim] float32.

    The axes are encoded last-first and concatenated, so for (h, w) grids this equals the MAE
    paper's 2D embedding (whose first half encodes the column). Each axis gets an equal even
    share of dim; a remainder (e.g. 1024 dims over 3 axes) is left as zeros.
    """
    num_axes = coords.shape[1]
    share = (dim // num_axes) // 2 * 2
    if share == 0:
        raise ValueError(f"embedding dim {dim} is too small for {num_axes} position axes")
    parts = [sincos_1d(share, coords[:, a]) for a in reversed(range(num_axes))]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], dim - emb.shape[1])], dim=1)
    return emb.float()
