"""One policy for unreadable files: skip at most `skip_bad` of them, each with a warning, never silently.

A data source checks every file before training (`scan_splits`): bad files are dropped and counted,
and more than skip_bad is an error naming the first ones. A file that fails later, while decoding,
is handed to a `SkipBudget` shared by every DataLoader worker (shared memory), which either allows
skipping it (the next readable file of the split stands in for it) or says the budget is spent.
Datasets that must not lend an item another file's data (embeddings saved by file name) set
`stand_ins = False`: their bad files always fail.
"""
from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from omnimae.data.protocol import Split
from omnimae.errors import DataError

log = logging.getLogger("omnimae")
T = TypeVar("T")


def scan_splits(splits: dict[str, Split], check: Callable[[Path], object], skip_bad: int,
                root: str | Path) -> tuple[dict[str, Split], list[DataError]]:
    """Check every file of every split; drop up to skip_bad bad ones (a warning each), else raise naming them.
    Returns the kept (paths, labels) per split and the errors of the dropped files."""
    bad: list[DataError] = []
    kept = {}
    for name, (paths, labels) in splits.items():
        keep = []
        for p, label in zip(paths, labels):
            try:
                check(p)
                keep.append((p, label))
            except DataError as e:
                bad.append(e)
        kept[name] = Split([p for p, _ in keep], [label for _, label in keep])
    if len(bad) > skip_bad:
        others = "; ".join(str(e) for e in bad[1:4]) + ("; ..." if len(bad) > 4 else "")
        more = f" [{len(bad)} bad files, skip_bad={skip_bad} allows {skip_bad}" + (f": {others}]" if others else "]")
        raise DataError(f"{bad[0]}{more}")
    for i, e in enumerate(bad, 1):
        log.warning("skipping a bad file (%d of skip_bad=%d): %s", i, skip_bad, e)
    if not kept["train"][0]:
        raise DataError(f"data.root={root}: no readable training files left")
    return kept, bad


class SkipBudget:
    """Up to `limit` unreadable files may be skipped, each with a logged warning; more is an error.

    Files dropped by the scan count against the limit (`already`); files that fail later, while
    decoding, are marked in shared memory, so the count holds across DataLoader workers and epochs.
    """

    def __init__(self, limit: int, num_files: int, already: int = 0):
        self.limit, self.already = limit, already
        ctx = multiprocessing.get_context()
        self._lock = ctx.Lock() if limit > already else None
        self._flags = ctx.Array("b", num_files, lock=False) if self._lock else None
        self._count = ctx.Value("i", 0, lock=False) if self._lock else None

    def allow(self, file_index: int, error: DataError) -> bool:
        """May this file be skipped? Logs the skip; False when the limit is used up."""
        if self._lock is None:
            return False
        with self._lock:
            if self._flags[file_index]:
                return True  # known bad, warned about when first seen
            used = self.already + self._count.value
            if used >= self.limit:
                return False
            self._flags[file_index] = 1
            self._count.value += 1
            used += 1
        log.warning("skipping a bad file (%d of skip_bad=%d): %s", used, self.limit, error)
        return True


def load_or_stand_in(paths: Sequence, index: int, load: Callable[[int], T], budget: SkipBudget | None,
                     offset: int = 0, stand_ins: bool = True) -> T:
    """load(index), or where that file fails and the budget allows skipping it, the next readable file's
    item (index + 1, ...). offset: this split's first file index in the budget."""
    for step in range(len(paths)):
        i = (index + step) % len(paths)
        try:
            return load(i)
        except DataError as e:
            if budget is None or not stand_ins or not budget.allow(offset + i, e):
                if budget is not None and budget.limit:
                    raise DataError(f"{e} (skip_bad={budget.limit}: no more files may be skipped)") from e
                raise
    raise DataError(f"no readable file among the {len(paths)} of this split")


def budget_for(splits: dict[str, Split], skip_bad: int, skipped: int) -> tuple[SkipBudget, dict[str, int]]:
    """A budget over every file of the splits, and each split's first index in it."""
    names = list(splits)
    offsets, total = {}, 0
    for name in names:
        offsets[name] = total
        total += len(splits[name][0])
    return SkipBudget(skip_bad, total, already=skipped), offsets
