"""etcd outages as an operator wants to read them: one line when etcd stops answering (with the
reason), a reminder at most every `remind_every` seconds while it stays away, one line when it
answers again (with how long it was gone).

The election's requests are the probe (every daemon renews its lease every third of the TTL,
leader or not, and its watch breaks as soon as the connection does): they report failures and
successes here. The watch reports its failures too (it is
often the first to notice); everything that fails meanwhile logs at debug level only, asking
`down` first. Without this, each retry of each loop logged a warning with gRPC's long
error text: tens of thousands of lines a day of one outage.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("statemanager.outage")


class Outage:
    def __init__(self, remind_every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._remind_every = remind_every
        self._clock = clock
        self._since: float | None = None  # when the current outage began; None: etcd answers
        self._reminded = 0.0
        self._failures = 0

    @property
    def down(self) -> bool:
        """True from the first failed probe until the next successful one."""
        return self._since is not None

    def failed(self, error: str) -> None:
        """A probe request failed for a reason that says etcd cannot be reached or used."""
        now = self._clock()
        self._failures += 1
        if self._since is None:
            self._since = self._reminded = now
            log.warning("etcd_unreachable", error=error)
        elif now - self._reminded >= self._remind_every:
            self._reminded = now
            log.warning(
                "etcd_still_unreachable",
                for_seconds=round(now - self._since),
                failed_requests=self._failures,
                error=error,
            )

    def succeeded(self) -> None:
        """A probe request succeeded: an outage, if any, is over."""
        if self._since is None:
            return
        log.info(
            "etcd_reachable",
            down_for_seconds=round(self._clock() - self._since, 1),
            failed_requests=self._failures,
        )
        self._since = None
        self._failures = 0
