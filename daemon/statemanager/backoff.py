"""Capped, jittered exponential backoff for loops that outlive one failure (watch, requeue).

tenacity covers one operation's retries; these loops need a delay that grows while a fault
lasts and resets after the first success, which tenacity's per-call state cannot express.
"""

from __future__ import annotations

import random


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
