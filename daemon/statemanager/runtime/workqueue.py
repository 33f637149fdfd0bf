"""A deduplicating work queue of keys, after client-go's `util/workqueue`.

Guarantees:
- a key is never handed out twice at once: a key added while it is being processed is held
  back and handed out again after `done`;
- a key added many times before it is handed out is handed out once (bursts coalesce).

Callers must call `done(keys)` for every batch `get_batch` returned, success or not. A key
whose processing failed goes back with `add_rate_limited(key)`: its delay grows exponentially
with that key's own failures (one stuck key never slows the others down), and `forget(key)`
after a success starts it afresh. The queue knows nothing of etcd or Prometheus; it reports to
an optional `QueueObserver`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueObserver(Protocol):
    def depth(self, depth: int) -> None: ...
    def added(self) -> None: ...
    def waited(self, seconds: float) -> None: ...


class _Ignore:
    def depth(self, depth: int) -> None: ...
    def added(self) -> None: ...
    def waited(self, seconds: float) -> None: ...


class ShutDown(Exception):
    """Raised by `get_batch` once the queue is shut down and empty of waiting workers."""


class WorkQueue(Generic[K]):
    def __init__(
        self,
        observer: QueueObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        retry_initial: float = 0.5,
        retry_cap: float = 10.0,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        # Every key in `_queue` is in `_dirty` and not in `_processing`, and appears once.
        # A deque, not an ordered dict: popping a dict's first key rescans the holes earlier
        # pops left, which made draining large queues quadratic.
        self._queue: deque[K] = deque()
        self._queued_at: dict[K, float] = {}  # for the wait-time observer
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._wakeup = asyncio.Event()
        self._shut_down = False
        self._observer: QueueObserver = observer or _Ignore()
        self._clock = clock
        # At most one pending timer per key: the earliest wins (client-go's delaying queue).
        self._timers: dict[K, asyncio.TimerHandle] = {}
        # Per key: failures since its last success (`forget`), for `add_rate_limited`.
        self._failures: dict[K, int] = {}
        self._retry_initial = retry_initial
        self._retry_cap = retry_cap
        self._jitter = jitter

    def __len__(self) -> int:
        return len(self._queue)

    def __contains__(self, key: K) -> bool:
        """True while `key` waits to be handed out (not while it is only being processed)."""
        return key in self._dirty

    def add(self, key: K) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._observer.added()
        if key in self._processing:
            return  # re-queued by done()
        self._push(key)
        self._changed()

    def add_all(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.add(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` once `delay` seconds have passed; an earlier pending add of it stands."""
        if self._shut_down:
            return
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()

        def fire() -> None:
            del self._timers[key]
            self.add(key)

        self._timers[key] = loop.call_later(delay, fire)

    def add_rate_limited(self, key: K) -> float:
        """Re-add `key` after its processing failed, once a delay that doubles with each of its
        failures since `forget` (full jitter, capped) has passed. Returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = min(failures + 1, 64)
        ceiling = min(self._retry_cap, self._retry_initial * 2.0**failures)
        delay = self._jitter(ceiling / 2, ceiling)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """`key` was processed successfully: its next failure starts from the initial delay."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many times `key` failed since it was last forgotten."""
        return self._failures.get(key, 0)

    async def get_batch(self, limit: int) -> list[K]:
        """Wait for at least one key; return up to `limit` keys, now marked as processing."""
        while not self._queue:
            if self._shut_down:
                raise ShutDown
            self._wakeup.clear()
            await self._wakeup.wait()
        batch: list[K] = []
        now = self._clock()
        while self._queue and len(batch) < limit:
            key = self._queue.popleft()
            self._observer.waited(now - self._queued_at.pop(key))
            self._dirty.discard(key)
            self._processing.add(key)
            batch.append(key)
        self._changed()
        return batch

    def done(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._processing.discard(key)
            if key in self._dirty:
                self._push(key)
        self._changed()

    def _push(self, key: K) -> None:
        self._queue.append(key)
        self._queued_at[key] = self._clock()

    def shutdown(self) -> None:
        """Stop accepting keys and wake waiting workers; they get ShutDown once it is empty."""
        self._shut_down = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._wakeup.set()

    def idle(self) -> bool:
        """Nothing queued, processing or scheduled for later."""
        return not (self._queue or self._processing or self._timers)

    def _changed(self) -> None:
        depth = len(self._queue)
        if depth:
            self._wakeup.set()
        self._observer.depth(depth)
