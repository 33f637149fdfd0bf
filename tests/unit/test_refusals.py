"""Reporting etcd's refusals: readiness, the gauge and the counter, and when the report ends."""

from __future__ import annotations

from statemanager.health import REFUSAL_MEMORY_SECONDS, Health
from statemanager.metrics import Metrics
from statemanager.refusals import RefusalReport

NOSPACE = "etcd refused txn: RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ready_health(clock: Clock) -> Health:
    health = Health(stuck_after=1e9, clock=clock)
    health.synced()
    health.watching(1)
    return health


def _sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_nospace_makes_the_daemon_unready_until_a_write_is_accepted() -> None:
    """A NOSPACE refusal: unready with etcd's words, gauge 1, counted; an accepted write ends it."""
    clock = Clock()
    health, metrics = _ready_health(clock), Metrics()
    report = RefusalReport(metrics, health)
    report.refused("nospace", NOSPACE)
    assert health.readiness() == (False, f"etcd refuses writes: {NOSPACE}")
    assert _sample(metrics, "statemanager_etcd_refusing_writes") == 1
    assert _sample(metrics, "statemanager_etcd_refusals_total", reason="nospace") == 1
    report.accepted()
    assert health.readiness() == (True, "ready")
    assert _sample(metrics, "statemanager_etcd_refusing_writes") == 0


def test_refusal_fades_when_nothing_asks_again() -> None:
    """With nothing left to write nobody asks etcd again: the refusal stops counting after a while."""
    clock = Clock()
    health = _ready_health(clock)
    report = RefusalReport(Metrics(), health)
    report.refused("too_many_requests", "etcdserver: too many requests")
    clock.now += REFUSAL_MEMORY_SECONDS - 1
    assert not health.readiness()[0]
    clock.now += 1
    assert health.readiness() == (True, "ready")


def test_too_large_is_counted_but_not_a_readiness_problem() -> None:
    """A request too large is the caller's to split or skip: counted, readiness unchanged."""
    clock = Clock()
    health, metrics = _ready_health(clock), Metrics()
    RefusalReport(metrics, health).refused("request_too_large", "etcdserver: request is too large")
    assert health.readiness() == (True, "ready")
    assert _sample(metrics, "statemanager_etcd_refusals_total", reason="request_too_large") == 1
    assert _sample(metrics, "statemanager_etcd_refusing_writes") == 0
