"""Liveness and readiness, as the HTTP endpoints and (later) the systemd watchdog judge them.

No I/O: the daemon's loops report in, the HTTP thread reads. Plain attribute writes and reads
of floats and bools are atomic under the GIL, so no lock is needed between the two threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# How long a refusal from etcd keeps the daemon unready without another one. While etcd
# refuses, deferred writes are retried at least every ~15 s (work queue cap plus the writer's
# retries); when nothing is left to write nothing is asked, so the refusal must fade on its own.
REFUSAL_MEMORY_SECONDS = 30.0


class Health:
    def __init__(self, stuck_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stuck_after = stuck_after
        self._beat = clock()
        self._synced = False
        self._watching = False
        self._problem = "listing etcd"
        self._revision = 0
        self._refusing = ""  # why etcd refused our last write, in its words; "" once it accepts
        self._refused_at = 0.0

    def beat(self) -> None:
        """Called by a task on the event loop every few seconds: proves the loop is not stuck."""
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

    @property
    def revision(self) -> int:
        """The newest etcd revision the watch delivered (0 before the first listing)."""
        return self._revision

    def refusing(self, why: str) -> None:
        """etcd refused a write for now (`why`, in its words), or accepted one (empty)."""
        self._refusing = why
        self._refused_at = self._clock()

    def etcd_refusing(self) -> str:
        """Why etcd refuses writes now; empty when it accepted the last one, or when it has not
        refused any for REFUSAL_MEMORY_SECONDS."""
        if self._clock() - self._refused_at >= REFUSAL_MEMORY_SECONDS:
            return ""
        return self._refusing

    def liveness(self) -> tuple[bool, str]:
        stalled = self._clock() - self._beat
        if stalled > self._stuck_after:
            return False, f"event loop stuck for {stalled:.0f} s"
        return True, "alive"

    def readiness(self) -> tuple[bool, str]:
        alive, why = self.liveness()
        if not alive:
            return False, why
        if refusing := self.etcd_refusing():
            return False, f"etcd refuses writes: {refusing}"
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
        if refusing := self.etcd_refusing():
            return f"etcd refuses writes: {refusing}"
        if not self._synced:
            return f"syncing: writing the states of etcd revision {self._revision}"
        return f"watching etcd at revision {self._revision}"
