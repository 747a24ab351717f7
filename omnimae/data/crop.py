"""Cutting fixed-size windows from larger samples, and standardizing them: one policy for every
modality that crops (microscopy images, arrays, video frames, audio frames).

A training crop is drawn from the sample's own RNG stream (a generator seeded with the key's seed,
see omnimae.data.protocol; torchvision's transforms draw from the global RNG seeded alike), axis by
axis, so a resumed run cuts exactly the windows an uninterrupted one would; an evaluation crop is
centred.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

from omnimae.errors import DataError

STD_FLOOR = 1e-3  # a crop's std counts as at least this share of the std of the whole sample it was cut from


def sample_generator(seed: int | None) -> torch.Generator | None:
    """The RNG stream of one sample: a CPU generator seeded with its key's seed; None without a seed."""
    return None if seed is None else torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def global_rng_from(seed: int) -> Iterator[None]:
    """Within: torch's global CPU RNG seeded with the sample's seed, for transforms that draw from it
    (torchvision's RandomResizedCrop, flips); outside, the global stream is as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs 70x more
        yield


def crop_starts(sizes: Sequence[int], crop: Sequence[int], generator: torch.Generator | None = None,
                random: bool = True) -> list[int]:
    """Where a window of size `crop` starts along each axis of `sizes`: with random, uniform over every
    start that fits, one draw per axis in order from `generator` (None: torch's global RNG); else centred."""
    if len(sizes) != len(crop) or any(c > s for s, c in zip(sizes, crop)):
        raise ValueError(f"a crop of {list(crop)} does not fit a sample of {list(sizes)}")
    if not random:
        return [(s - c) // 2 for s, c in zip(sizes, crop)]
    return [int(torch.randint(0, s - c + 1, (1,), generator=generator)) for s, c in zip(sizes, crop)]


def cut(x: torch.Tensor, starts: Sequence[int], crop: Sequence[int]) -> torch.Tensor:
    """The window of x over its last len(crop) axes: x[..., s0 : s0 + c0, s1 : s1 + c1, ...]."""
    return x[(..., *[slice(s, s + c) for s, c in zip(starts, crop)])]


def standardize_crop(crop: torch.Tensor, whole_std: torch.Tensor) -> torch.Tensor:
    """A crop [C, ...] standardized per channel by its own mean and std, the std floored at STD_FLOOR
    times whole_std ([C, 1, ...], the whole sample's): a blank crop of a sparse image (empty
    background) becomes zeros instead of dividing by zero. Callers refuse a whole_std of 0 first."""
    dims = tuple(range(1, crop.ndim))
    std = torch.maximum(crop.std(dim=dims, keepdim=True), STD_FLOOR * whole_std)
    return (crop - crop.mean(dim=dims, keepdim=True)) / std


def standardize_sample_crop(crop: torch.Tensor, whole_std: torch.Tensor, names: Sequence, source: str,
                            what: str = "sample") -> torch.Tensor:
    """standardize_crop, after refusing channels constant over the whole sample (whole_std 0), which
    carry no signal: a DataError naming the source and those channels (`names`: one per channel)."""
    flat = [names[i] for i in torch.nonzero(whole_std.flatten() == 0).flatten().tolist()]
    if flat:
        raise DataError(f"{source}: channel(s) {flat} are constant over the whole {what} and cannot be standardized")
    return standardize_crop(crop, whole_std)
