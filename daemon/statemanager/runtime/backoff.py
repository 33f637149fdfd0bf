"""Capped, jittered exponential backoff for loops that outlive one failure (watch, requeue),
and the wait of a loop woken early by an event (`wait_woken`).

tenacity covers one operation's retries; these loops need a delay that grows while a fault
lasts and resets after the first success, which tenacity's per-call state cannot express.
"""

from __future__ import annotations

import asyncio
import random


async def wait_woken(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` pass, whichever comes first; at least a
    millisecond: a due time just reached can leave a float sliver (or nothing) to wait, and on
    a virtual clock (tests) a wait that sets no timer lets no time pass, a loop that spins.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives just after
    the event was set (it returns the event's result instead), and the loop around it then runs
    on, uncancellable: a stop that never ends. `asyncio.timeout` re-raises the cancellation.
    """
    try:
        async with asyncio.timeout(max(0.001, seconds)):
            await event.wait()
    except TimeoutError:
        pass


class Backoff:
    def __init__(self, initial: float = 0.2, cap: float = 10.0, factor: float = 2.0) -> None:
        self._initial = initial
        self._cap = cap
        self._factor = factor
        self._failures = 0

    def next(self) -> float:
        """The delay before the next attempt: full jitter over a capped exponential."""
        ceiling = min(self._cap, self._initial * self._factor**self._failures)
        self._failures = min(self._failures + 1, 64)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._failures = 0
