"""Scan orders over an (h, w) token grid: zig-zag, Hilbert, Peano and spiral.

Each order is a permutation of the row-major token indices h * W + w: order[i] is the i-th token
along the curve. Orders are computed once per (curve, H, W) and cached; the work is vectorized over
tokens, looping only over the curve's recursion levels.

Grids that do not fit a curve's recursion (Hilbert: a square of side 2^k; Peano: 3^k) take the
smallest such square covering them, and keep its order clipped to the grid: the tokens outside are
dropped. On a fitting square every step moves to a grid neighbour; clipped orders jump where the
larger curve leaves the grid and comes back.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

CURVES: dict[str, Callable[[int, int], torch.Tensor]] = {}


def _curve(name: str):
    def wrap(fn: Callable[[int, int], torch.Tensor]) -> Callable[[int, int], torch.Tensor]:
        CURVES[name] = fn
        return fn

    return wrap


@lru_cache(maxsize=128)
def curve_order(name: str, height: int, width: int) -> torch.Tensor:
    """[H*W] row-major token indices in the named curve's order (cached; host memory, read-only use)."""
    if name not in CURVES:
        raise KeyError(f"unknown curve {name!r}; known: {', '.join(sorted(CURVES))}")
    return CURVES[name](height, width)


def _clip(hs: torch.Tensor, ws: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Curve points (h, w) in order on a covering square -> row-major indices of those inside the grid."""
    inside = (hs < height) & (ws < width)
    return hs[inside] * width + ws[inside]


@_curve("zigzag")
def zigzag(height: int, width: int) -> torch.Tensor:
    """Boustrophedon: row 0 left to right, row 1 right to left, and so on."""
    grid = torch.arange(height * width).view(height, width)
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


@_curve("hilbert")
def hilbert(height: int, width: int) -> torch.Tensor:
    """Hilbert curve on the 2^k square covering the grid, clipped (the classic d -> (x, y) conversion)."""
    side = 1
    while side < max(height, width):
        side *= 2
    t = torch.arange(side * side)
    x = torch.zeros_like(t)
    y = torch.zeros_like(t)
    s = 1
    while s < side:
        rx = (t // 2) % 2
        ry = (t ^ rx) % 2
        # rotate the quadrant so each sub-curve enters where the previous one left
        flip = (ry == 0) & (rx == 1)
        x = torch.where(flip, s - 1 - x, x)
        y = torch.where(flip, s - 1 - y, y)
        x, y = torch.where(ry == 0, y, x), torch.where(ry == 0, x, y)
        x, y = x + s * rx, y + s * ry
        t = t // 4
        s *= 2
    return _clip(y, x, height, width)


@_curve("peano")
def peano(height: int, width: int) -> torch.Tensor:
    """Peano's curve on the 3^k square covering the grid, clipped. With d's base-3 digits
    t1 t2 t3 ... (most significant first), x takes the odd digits t1, t3, ... and y the even ones
    t2, t4, ...; a digit is complemented (2 - digit) when the digits of the other axis before it sum
    to an odd number (Peano, 1890)."""
    side, levels = 1, 0
    while side < max(height, width):
        side, levels = side * 3, levels + 1
    d = torch.arange(side * side)
    digits = [(d // 3 ** (2 * levels - 1 - i)) % 3 for i in range(2 * levels)]  # most significant first
    x = torch.zeros_like(d)
    y = torch.zeros_like(d)
    sum_x = torch.zeros_like(d)  # digits taken by x so far (they flip y's next digit)
    sum_y = torch.zeros_like(d)
    for i in range(levels):
        dx, dy = digits[2 * i], digits[2 * i + 1]
        dx = torch.where(sum_y % 2 == 1, 2 - dx, dx)
        sum_x = sum_x + digits[2 * i]
        dy = torch.where(sum_x % 2 == 1, 2 - dy, dy)
        sum_y = sum_y + digits[2 * i + 1]
        x, y = x * 3 + dx, y * 3 + dy
    return _clip(y, x, height, width)


@_curve("spiral")
def spiral(height: int, width: int) -> torch.Tensor:
    """Clockwise from the top-left corner, ring by ring inward to the centre."""
    h = torch.arange(height).view(-1, 1).expand(height, width)
    w = torch.arange(width).view(1, -1).expand(height, width)
    ring = torch.minimum(torch.minimum(h, w), torch.minimum(height - 1 - h, width - 1 - w))
    top, left, bottom, right = ring, ring, height - 1 - ring, width - 1 - ring
    across, down = right - left, bottom - top  # ring side lengths minus one
    pos = torch.where(
        h == top, w - left,
        torch.where(w == right, across + (h - top),
                    torch.where(h == bottom, across + down + (right - w), 2 * across + down + (bottom - h))))
    before = height * width - (height - 2 * ring) * (width - 2 * ring)  # tokens on the outer rings
    return torch.argsort((before + pos).reshape(-1))
