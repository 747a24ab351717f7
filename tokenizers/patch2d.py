"""2D patch tokenizer for images, spectrograms and rasterized series."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from omnimae.patches import Patches, grid_coords


class PatchTokenizer2D:
    """[B, C, H, W] -> Patches(values [B, (H/p)(W/q), p*q*C]) in the official MAE (p, q, c) order.

    With pad=True an input whose sides are not multiples of the patch size is zero-padded at
    the bottom/right and unpatchify crops the padding away again.
    """

    def __init__(self, patch_size: int | tuple[int, int], in_chans: int, pad: bool = False):
        self.patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        self.in_chans = in_chans
        self.pad = pad

    @property
    def patch_dim(self) -> int:
        return self.patch_size[0] * self.patch_size[1] * self.in_chans

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """One token's values unflattened in value order: (p, q, c)."""
        return (*self.patch_size, self.in_chans)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        p, q = self.patch_size
        return -(-height // p), -(-width // q)

    def patchify(self, x: torch.Tensor) -> Patches:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}")
        p, q = self.patch_size
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % p, (-width) % q
        if pad_h or pad_w:
            if not self.pad:
                raise ValueError(f"input {height}x{width} is not a multiple of the patch size {p}x{q}")
            x = F.pad(x, (0, pad_w, 0, pad_h))
        gh, gw = self.grid(height, width)
        values = rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=q)  # [B, N, p*q*C]
        coords = grid_coords(gh, gw)  # stays on the host: it keys the position cache
        return Patches(values, coords, (gh, gw), {"size": (height, width)})

    def unpatchify(self, patches: Patches) -> torch.Tensor:
        p, q = self.patch_size
        gh, gw = patches.grid
        x = rearrange(patches.values, "b (h w) (p q c) -> b c (h p) (w q)", h=gh, w=gw, p=p, q=q)
        height, width = patches.meta.get("size", (gh * p, gw * q))
        return x[..., :height, :width]
