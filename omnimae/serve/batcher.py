"""Dynamic micro-batching: requests that arrive within `max_wait_ms` share one forward pass.

Each caller submits one item with a key (items of one key stack into one batch: the same modality and
input shape, say) and awaits its own result. One worker thread runs the model, so the event loop keeps
answering while a batch computes and the model is never entered by two threads at once. A batch that
fails is run again item by item, so a bad item fails alone and its batch-mates still get their results.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from omnimae.errors import ConfigError

RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]  # (key, items) -> one result per item, in order


@dataclass
class _Pending:
    key: Hashable
    item: Any
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects items for up to `max_wait_ms` (or until `max_batch` are waiting) and runs them by key."""

    def __init__(self, run: RunBatch, max_batch: int = 8, max_wait_ms: float = 5.0):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError("max_batch", f"must be a positive integer, got {max_batch!r}")
        if not isinstance(max_wait_ms, (int, float)) or isinstance(max_wait_ms, bool) or max_wait_ms < 0:
            raise ConfigError("max_wait_ms", f"must be a number >= 0, got {max_wait_ms!r}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="omnimae-model")
        self.batch_sizes: list[int] = []  # what each forward pass held: the batching a benchmark reports
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, key: Hashable, item: Any) -> Any:
        """The result of `item`, computed in a batch with other items of the same key."""
        if self._worker is None:  # created on first use, inside the server's event loop
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(key, item, future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        self.executor.shutdown(wait=True)

    async def _collect(self) -> list[_Pending]:
        """The first waiting item, then whatever else arrives before the deadline, up to max_batch."""
        pending = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(pending) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                while len(pending) < self.max_batch and not self._queue.empty():
                    pending.append(self._queue.get_nowait())
                break
            try:
                pending.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return pending

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [p for p in await self._collect() if not p.future.done()]  # a caller that timed out is gone
            groups: dict[Hashable, list[_Pending]] = {}
            for p in pending:
                groups.setdefault(p.key, []).append(p)
            for key, group in groups.items():
                self.batch_sizes.append(len(group))
                outcomes = await loop.run_in_executor(self.executor, self._run_group, key, [p.item for p in group])
                for p, (ok, value) in zip(group, outcomes):
                    if p.future.done():
                        continue
                    p.future.set_result(value) if ok else p.future.set_exception(value)

    def _run_group(self, key: Hashable, items: list[Any]) -> list[tuple[bool, Any]]:
        """(ok, result or exception) per item; after a failed batch each item runs alone."""
        try:
            results = list(self.run(key, items))
            if len(results) != len(items):
                raise RuntimeError(f"the batch of {len(items)} gave {len(results)} results")
            return [(True, r) for r in results]
        except Exception as e:
            if len(items) == 1:
                return [(False, e)]
            return [self._alone(key, item) for item in items]

    def _alone(self, key: Hashable, item: Any) -> tuple[bool, Any]:
        try:
            return True, self.run(key, [item])[0]
        except Exception as e:  # handed to that caller only
            return False, e
