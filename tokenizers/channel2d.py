"""Per-channel 2D patch tokenizer for channel-agnostic images (CA-MAE): one token per channel per patch."""
from __future__ import annotations

import torch
from einops import rearrange

from omnimae.patches import Patches, grid_coords


class ChannelPatchTokenizer:
    """[B, C, H, W] -> Patches(values [B, C*(H/p)*(W/p), p*p]) channel-major, coords (c, h, w).

    Every channel's patches are single-channel, so one shared stem embeds any number of channels.
    """

    def __init__(self, patch_size: int):
        self.patch_size = patch_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size

    @property
    def patch_shape(self) -> tuple[int, int, int]:
        """One token's values unflattened in value order: (p, p, 1), a single channel."""
        return self.patch_size, self.patch_size, 1

    def patchify(self, x: torch.Tensor) -> Patches:
        if x.ndim != 4:
            raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
        _, c, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image {h}x{w} is not a multiple of the patch size {p}")
        values = rearrange(x, "b c (h p) (w q) -> b (c h w) (p q)", p=p, q=p)
        return Patches(values, grid_coords(c, h // p, w // p), (c, h // p, w // p), {"size": (h, w)})

    def unpatchify(self, patches: Patches) -> torch.Tensor:
        c, gh, gw = patches.grid
        p = self.patch_size
        return rearrange(patches.values, "b (c h w) (p q) -> b c (h p) (w q)", c=c, h=gh, w=gw, p=p, q=p)
