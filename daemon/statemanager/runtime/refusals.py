"""How etcd's refusals are reported: a metric per refusal, and while etcd refuses writes for
now (space quota alarm, too many requests) a readiness reason, a gauge and one log line when it
starts and one when a write is accepted again. Retrying and splitting are the callers' business
(errors.py)."""

from __future__ import annotations

import structlog

from statemanager.core.ports import REFUSED_NOT_NOW
from statemanager.runtime.health import Health
from statemanager.runtime.metrics import Metrics

log = structlog.get_logger("statemanager.etcd")


class RefusalReport:
    """The etcd adapter's RefusalObserver for the daemon."""

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self._metrics = metrics
        self._health = health
        metrics.etcd_refusing_writes.set_function(lambda: 1.0 if health.etcd_refusing() else 0.0)

    def refused(self, reason: str, message: str) -> None:
        self._metrics.etcd_refusals.labels(reason).inc()
        if reason not in REFUSED_NOT_NOW:
            return  # the caller splits or skips the request and says so
        if not self._health.etcd_refusing():
            log.error("etcd_refusing_writes", reason=reason, error=message)
        self._health.refusing(message)

    def accepted(self) -> None:
        if self._health.etcd_refusing():
            log.info("etcd_accepting_writes")
            self._health.refusing("")
