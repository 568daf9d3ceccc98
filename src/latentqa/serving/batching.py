"""Dynamic batching: queries that arrive together go through the model together.

Requests wait in `pending`, at most `max_pending` of them (`Overloaded` past that: the server answers 503 rather
than letting the queue grow without bound); the loop takes up to `max_batch_size` of them as soon as that many are
there, or whatever is there `max_wait_ms` after the oldest arrived, and runs them in one model call on its worker thread
(the event loop keeps accepting requests meanwhile). Each caller awaits its own future. If a batch fails, its
queries are run one by one, so only the one at fault gets the error.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ..config import option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batching:
    """How the server batches concurrent queries (`latentqa serve` has a flag per field)."""

    max_batch_size: int = option(8, "queries answered in one model call at most")
    max_wait_ms: float = option(10.0, "how long the oldest waiting query waits for others to join its batch")
    max_pending: int = option(256, "queries waiting for the model at most; a request that would go past it is "
                                   "answered 503 with Retry-After")

    def __post_init__(self):
        for name in ("max_batch_size", "max_pending"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms < math.inf:
            raise ValueError(f"max_wait_ms must be a finite number of at least 0, got {self.max_wait_ms:g}")


class Overloaded(RuntimeError):
    """The queue holds `max_pending` queries already."""


@dataclass
class Pending:
    item: object
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class Counters:
    requests: int = 0  # queries answered (or failed) by the model
    batches: int = 0
    failures: int = 0
    largest_batch: int = 0

    def as_dict(self) -> dict:
        return {**vars(self), "mean_batch_size": round(self.requests / self.batches, 2) if self.batches else None}


@dataclass
class Timed:
    """A query's result with where its time went: waiting for its batch, and the batch's model call."""

    result: object
    queue_ms: float
    model_ms: float
    batch_size: int


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[list], list], batching: Batching = Batching()):
        self.run_batch = run_batch
        self.max_batch_size, self.max_pending = batching.max_batch_size, batching.max_pending
        self.max_wait_s = batching.max_wait_ms / 1000
        self.pending: list[Pending] = []
        self.counters = Counters()
        self._arrived = asyncio.Event()  # something is pending (or closing)
        self._full = asyncio.Event()  # a whole batch is pending
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="latentqa-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item) -> Timed:
        """The result of `run_batch` for `item`, once its batch has run (its exception, if it failed)."""
        return await self.enqueue([item])[0]

    def room(self) -> int:
        """How many more queries the queue takes now."""
        return self.max_pending - len(self.pending)

    def enqueue(self, items: list) -> list[asyncio.Future]:
        """Queue all of `items` or none (`Overloaded`); each future gets its item's `Timed` result or error."""
        if self._closing:
            raise RuntimeError("the server is shutting down")
        if len(items) > self.room():
            raise Overloaded(f"{len(self.pending)} queries are waiting; the queue holds {self.max_pending}")
        loop = asyncio.get_running_loop()
        added = [Pending(item, loop.create_future()) for item in items]
        self.pending.extend(added)
        self._arrived.set()
        if len(self.pending) >= self.max_batch_size:
            self._full.set()
        return [p.future for p in added]

    async def close(self) -> None:
        """Answer everything still pending, then stop."""
        self._closing = True
        self._arrived.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self.pending:
                if self._closing:
                    return
                self._arrived.clear()
                continue
            wait = self.pending[0].arrived + self.max_wait_s - time.perf_counter()
            if len(self.pending) < self.max_batch_size and wait > 0 and not self._closing:
                with contextlib.suppress(asyncio.TimeoutError):  # Event.wait loses nothing when cancelled
                    await asyncio.wait_for(self._full.wait(), wait)
            batch, self.pending = self.pending[:self.max_batch_size], self.pending[self.max_batch_size:]
            if len(self.pending) < self.max_batch_size:
                self._full.clear()
            await loop.run_in_executor(self._executor, self._answer, batch, loop)

    def _answer(self, batch: list[Pending], loop: asyncio.AbstractEventLoop) -> None:
        """On the worker thread: run the batch (or its queries one by one, if it fails) and hand each result
        to its future on the event loop."""
        start = time.perf_counter()
        items = [p.item for p in batch]
        try:
            outcomes = [(result, len(batch)) for result in self.run_batch(items)]
        except Exception:  # noqa: BLE001 - find the query at fault; the others still get answers
            log.exception("a batch of %d failed; answering its queries one by one", len(batch))
            outcomes = []
            for item in items:
                try:
                    outcomes.append((self.run_batch([item])[0], 1))
                except Exception as err:  # noqa: BLE001 - this query's own error, sent to its caller
                    outcomes.append((err, 1))
        model_ms = (time.perf_counter() - start) * 1000
        self.counters.batches += 1
        self.counters.requests += len(batch)
        self.counters.largest_batch = max(self.counters.largest_batch, len(batch))
        for p, (outcome, size) in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                self.counters.failures += 1
            timed = outcome if isinstance(outcome, Exception) else \
                Timed(outcome, (start - p.arrived) * 1000, model_ms, size)
            loop.call_soon_threadsafe(_settle, p.future, timed)


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():  # the caller went away (its connection closed)
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
