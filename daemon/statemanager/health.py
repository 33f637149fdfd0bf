"""Liveness and readiness, as the HTTP endpoints and (later) the systemd watchdog judge them.

No I/O: the daemon's loops report in, the HTTP thread reads. Plain attribute writes and reads
of floats and bools are atomic under the GIL, so no lock is needed between the two threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Health:
    def __init__(self, stuck_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stuck_after = stuck_after
        self._beat = clock()
        self._synced = False
        self._watching = False
        self._problem = "listing etcd"
        self._revision = 0
        self._refusing = ""  # why etcd refuses our writes now, in its words; "" when it does not

    def beat(self) -> None:
        """Called by a task on the event loop every second: proves the loop is not stuck."""
        self._beat = self._clock()

    def synced(self) -> None:
        self._synced = True

    def watching(self, revision: int | None = None) -> None:
        """The watch delivered something (events up to `revision`, or a progress note)."""
        self._watching = True
        self._problem = ""
        if revision is not None:
            self._revision = revision

    def broken(self, problem: str) -> None:
        self._watching = False
        self._problem = problem

    def refusing(self, why: str) -> None:
        """etcd refuses writes for now (`why`), or accepts them again (empty)."""
        self._refusing = why

    def liveness(self) -> tuple[bool, str]:
        stalled = self._clock() - self._beat
        if stalled > self._stuck_after:
            return False, f"event loop stuck for {stalled:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        alive, why = self.liveness()
        if not alive:
            return False, why
        if self._refusing:
            return False, f"etcd refuses writes: {self._refusing}"
        if not self._synced:
            return False, f"first sync not done ({self._problem or 'writing states'})"
        if not self._watching:
            return False, f"watch not healthy: {self._problem}"
        return True, "ready"

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what the daemon is doing now. Before the first sync
        it says so: the unit is already active then, but not ready (/readyz)."""
        if not self._watching and self._problem:
            return self._problem if self._synced else f"waiting for etcd: {self._problem}"
        if self._refusing:
            return f"etcd refuses writes: {self._refusing}"
        if not self._synced:
            return f"syncing: writing the states of etcd revision {self._revision}"
        return f"watching etcd at revision {self._revision}"
