"""The shared file policies of omnimae.data, on their own."""
from __future__ import annotations

import multiprocessing

import pytest

from omnimae.data.skip import SkipBudget, load_or_stand_in, scan_splits
from omnimae.errors import DataError


def _use(budget: SkipBudget, index: int, out) -> None:
    out.put(budget.allow(index, DataError(f"file{index}: bad")))


def test_the_skip_budget_is_one_count_across_worker_processes():
    ctx = multiprocessing.get_context("fork")
    budget = SkipBudget(limit=1, num_files=4)
    out = ctx.Queue()
    worker = ctx.Process(target=_use, args=(budget, 2, out))
    worker.start()
    worker.join()
    assert out.get(timeout=5) is True  # the worker used the one skip allowed
    assert budget.allow(3, DataError("file3: bad")) is False  # so the main process may not skip another file
    assert budget.allow(2, DataError("file2: bad")) is True  # the file the worker skipped stays skipped


def test_scan_splits_drops_at_most_skip_bad_files_and_names_them():
    def check(p):
        if p.startswith("bad"):
            raise DataError(f"{p}: unreadable")

    splits = {"train": (["a", "bad1", "b"], [0, 1, 0]), "val": (["bad2", "c"], [1, 1])}
    kept, bad = scan_splits(splits, check, skip_bad=2, root="root")
    assert kept == {"train": (["a", "b"], [0, 0]), "val": (["c"], [1])} and len(bad) == 2
    with pytest.raises(DataError, match=r"^bad1: unreadable \[2 bad files, skip_bad=1 allows 1: bad2: unreadable\]"):
        scan_splits(splits, check, skip_bad=1, root="root")


def test_a_bad_item_borrows_the_next_readable_one_only_within_the_budget():
    paths = ["ok0", "bad", "ok2"]

    def load(i):
        if paths[i] == "bad":
            raise DataError("bad: unreadable")
        return paths[i]

    assert load_or_stand_in(paths, 1, load, SkipBudget(1, 3)) == "ok2"
    with pytest.raises(DataError, match="^bad: unreadable"):
        load_or_stand_in(paths, 1, load, SkipBudget(1, 3), stand_ins=False)
    with pytest.raises(DataError, match="^bad: unreadable"):
        load_or_stand_in(paths, 1, load, SkipBudget(0, 3))
