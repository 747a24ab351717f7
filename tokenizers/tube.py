"""3D tube tokenizer for video (VideoMAE's tubelets): t x p x p blocks of a [B, C, T, H, W] clip.

Value order within a tube is (t, p, q, c): time, row, column, channel, channel last. It is the
order VideoMAE's pretraining target uses (`b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c`)
and the image tokenizer's (p, q, c) with time in front.

A tubelet embedding `torch.nn.Conv3d(C, D, kernel_size=(t, p, p), stride=(t, p, p))` (VideoMAE's
`patch_embed.proj`, weight [D, C, t, p, p]) equals a Linear stem on these values whose weight is
`conv.weight.permute(0, 2, 3, 4, 1).reshape(D, t*p*p*C)` (channel moved last), with the same bias:
see `conv3d_weight_to_linear` and its inverse `linear_weight_to_conv3d`.
"""
from __future__ import annotations

import torch
from einops import rearrange

from omnimae.patches import Patches, grid_coords


def conv3d_weight_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """Conv3d tubelet weight [D, C, t, p, q] -> Linear weight [D, t*p*q*C] for TubeTokenizer values."""
    if weight.ndim != 5:
        raise ValueError(f"expected a Conv3d weight [D, C, t, p, q], got shape {tuple(weight.shape)}")
    return weight.permute(0, 2, 3, 4, 1).reshape(weight.shape[0], -1)


def linear_weight_to_conv3d(weight: torch.Tensor, tubelet_size: int, patch_size: int, in_chans: int) -> torch.Tensor:
    """Linear weight [D, t*p*p*C] -> Conv3d tubelet weight [D, C, t, p, p] (inverse of conv3d_weight_to_linear)."""
    d = weight.shape[0]
    return weight.reshape(d, tubelet_size, patch_size, patch_size, in_chans).permute(0, 4, 1, 2, 3)


class TubeTokenizer:
    """[B, C, T, H, W] -> Patches(values [B, (T/t)(H/p)(W/p), t*p*p*C], coords (t, h, w), t-major).

    Tokens run time-major: all tokens of the first tubelet frame row by row, then the next, so a
    spatial mask repeated T/t times is VideoMAE's tube mask. T, H and W must be multiples of
    the tubelet and patch sizes (no padding: a clip is cropped to fit by the data pipeline).
    """

    def __init__(self, tubelet_size: int = 2, patch_size: int = 16, in_chans: int = 3):
        for name, v in (("tubelet_size", tubelet_size), ("patch_size", patch_size), ("in_chans", in_chans)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.tubelet_size, self.patch_size, self.in_chans = tubelet_size, patch_size, in_chans

    @property
    def patch_dim(self) -> int:
        return self.tubelet_size * self.patch_size * self.patch_size * self.in_chans

    @property
    def patch_shape(self) -> tuple[int, int, int, int]:
        """One token's values unflattened in value order: (t, p, p, c)."""
        return self.tubelet_size, self.patch_size, self.patch_size, self.in_chans

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        t, p = self.tubelet_size, self.patch_size
        bad = [f"{name} {size} is not a multiple of {name2} {k}" for name, size, name2, k in (
            ("frames", frames, "tubelet_size", t), ("height", height, "patch_size", p), ("width", width, "patch_size", p),
        ) if size % k or size < k]
        if bad:
            raise ValueError("clip [T, H, W] = " + f"[{frames}, {height}, {width}]: " + "; ".join(bad))
        return frames // t, height // p, width // p

    def patchify(self, x: torch.Tensor) -> Patches:
        if x.ndim != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected [B, {self.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        gt, gh, gw = self.grid(*x.shape[-3:])
        t, p = self.tubelet_size, self.patch_size
        values = rearrange(x, "b c (t u) (h p) (w q) -> b (t h w) (u p q c)", u=t, p=p, q=p)  # [B, N, t*p*p*C]
        coords = grid_coords(gt, gh, gw)  # [N, 3] (t, h, w), host-side: it keys the position cache
        return Patches(values, coords, (gt, gh, gw), {"size": tuple(x.shape[-3:])})

    def unpatchify(self, patches: Patches) -> torch.Tensor:
        gt, gh, gw = patches.grid
        t, p = self.tubelet_size, self.patch_size
        return rearrange(
            patches.values, "b (t h w) (u p q c) -> b c (t u) (h p) (w q)", t=gt, h=gh, w=gw, u=t, p=p, q=p
        )
