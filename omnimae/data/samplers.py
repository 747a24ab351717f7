"""Seeded samplers: which samples a rank sees, in which order, each with its own augmentation seed.

Plain torch (no Lightning), so inference code such as embed can batch by group without pulling in
the training machinery. Both samplers yield (index, sample seed) keys and can skip the part of an
epoch a resumed run has already trained on.
"""
from __future__ import annotations

import math
from typing import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

_MIX = 1_000_003  # a prime, so different tuples of parts rarely meet on one seed


def mix_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, epoch, index / step, rank)."""
    s = 0
    for p in parts:
        s = (s * _MIX + int(p) + 1) % (2**63 - 1)
    return s


class SeededSampler(Sampler):
    """Shuffles by (seed, epoch), shards across ranks, and yields (index, sample seed) keys.

    The per-sample seed drives the augmentation, so the same run always sees the same crops,
    also after a resume or with another number of data workers.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.skip = 0  # samples of this epoch already trained on (a mid-epoch resume), skipped once

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        skip, self.skip = self.skip, 0
        for n, key in enumerate(self._keys()):
            if n >= skip:
                yield key

    def _keys(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order += order[: len(self) * self.world_size - self.size]  # pad so every rank has len(self)
        for i in order[self.rank :: self.world_size]:
            yield i, mix_seed(self.seed, self.epoch, i)


class GroupedBatchSampler(Sampler):
    """Batches whose samples share a group key (e.g. a channel set, so their token counts agree):
    shuffled by (seed, epoch) within and across groups, sharded across ranks, keys (index, seed).

    `groups[i]` is sample i's key. With `drop_last`, each group's last partial batch is left out.
    """

    def __init__(self, groups: Sequence[Hashable], batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1):
        self.groups, self.batch_size, self.seed = groups, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.skip = 0  # batches of this epoch already trained on (a mid-epoch resume), skipped once

    @property
    def sampler(self) -> "GroupedBatchSampler":
        """Lightning sets the epoch through `loader.batch_sampler.sampler.set_epoch`: here, on this one."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        """This rank's batches of this epoch, as sample indices."""
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        members: dict = {}
        for i, key in enumerate(self.groups):
            members.setdefault(key, []).append(i)
        batches = []
        for key in sorted(members, key=str):
            idx = members[key]
            if self.shuffle:
                idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            stop = len(idx) - len(idx) % self.batch_size if self.drop_last else len(idx)
            batches += [idx[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]
        if self.shuffle:
            batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
        per_rank = math.ceil(len(batches) / self.world_size)
        batches += batches[: per_rank * self.world_size - len(batches)]  # every rank the same count
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        skip, self.skip = self.skip, 0
        for batch in self._batches()[skip:]:
            yield [(i, mix_seed(self.seed, self.epoch, i)) for i in batch]
