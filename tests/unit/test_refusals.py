"""etcd's refusals: classified by what they mean (never as sent, or not now), and reported
(readiness, the gauge and the counter, and when the report ends)."""

from __future__ import annotations

import grpc
import pytest

from statemanager.adapters.etcderrors import classify
from statemanager.core.errors import EtcdBusy, EtcdError, EtcdUnavailable, TooLarge
from statemanager.runtime.health import REFUSAL_MEMORY_SECONDS, Health
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.refusals import RefusalReport

CODE = grpc.StatusCode
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


@pytest.mark.parametrize(
    ("code", "details", "what", "reason"),
    [
        (CODE.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded", "txn", "nospace"),
        (CODE.RESOURCE_EXHAUSTED, "etcdserver: too many requests", "txn", "too_many_requests"),
        (CODE.UNAVAILABLE, "etcdserver: too many requests", "range", "too_many_requests"),
    ],
)
def test_not_now_refusals_are_busy(
    code: grpc.StatusCode, details: str, what: str, reason: str
) -> None:
    """A full database or too many requests: transient (retried), with its reason and etcd's words."""
    error = classify(code, details, what).error
    assert isinstance(error, EtcdBusy)
    assert isinstance(error, EtcdUnavailable)
    assert error.reason == reason
    assert details in str(error)


@pytest.mark.parametrize(
    ("code", "details", "what", "reason"),
    [
        (
            CODE.INVALID_ARGUMENT,
            "etcdserver: too many operations in txn request",
            "txn",
            "too_many_ops",
        ),
        (CODE.INVALID_ARGUMENT, "etcdserver: request is too large", "txn", "request_too_large"),
        (
            CODE.RESOURCE_EXHAUSTED,
            "Received message larger than max (70000000 vs. 67108864)",
            "range",
            "response_too_large",
        ),
        (
            CODE.RESOURCE_EXHAUSTED,
            "grpc: received message larger than max (2100000 vs. 2097152)",
            "txn",
            "request_too_large",
        ),
    ],
)
def test_never_refusals_are_too_large(
    code: grpc.StatusCode, details: str, what: str, reason: str
) -> None:
    """Too many operations, a request or response too large: TooLarge, never transient."""
    error = classify(code, details, what).error
    assert isinstance(error, TooLarge)
    assert not isinstance(error, EtcdUnavailable)
    assert error.reason == reason


def test_other_refusals_stay_plain_errors() -> None:
    """A permission refusal is an EtcdError that is neither busy nor too large."""
    error = classify(CODE.PERMISSION_DENIED, "etcdserver: permission denied", "txn").error
    assert type(error) is EtcdError
