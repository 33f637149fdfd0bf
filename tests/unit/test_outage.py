"""An etcd outage is one line when it starts, a reminder a minute, one line when it ends."""

from __future__ import annotations

from structlog.testing import capture_logs

from statemanager.runtime.outage import Outage


def test_one_line_each_way_and_rate_limited_reminders() -> None:
    """Failures every 2 s for 150 s: one `etcd_unreachable` with the reason, two reminders,
    one `etcd_reachable` with the duration; successes outside an outage log nothing."""
    now = [0.0]
    outage = Outage(remind_every=60, clock=lambda: now[0])
    with capture_logs() as logged:
        outage.succeeded()
        for t in range(0, 151, 2):
            now[0] = float(t)
            outage.failed("etcd range failed: UNAVAILABLE: connection refused")
        assert outage.down
        now[0] = 151.5
        outage.succeeded()
        outage.succeeded()
    assert not outage.down
    assert [e["event"] for e in logged] == [
        "etcd_unreachable",
        "etcd_still_unreachable",
        "etcd_still_unreachable",
        "etcd_reachable",
    ]
    assert logged[0]["error"].endswith("connection refused") and logged[0]["log_level"] == "warning"
    assert [e["for_seconds"] for e in logged[1:3]] == [60, 120]
    assert logged[3] == {
        "event": "etcd_reachable",
        "log_level": "info",
        "down_for_seconds": 151.5,
        "failed_requests": 76,
    }


def test_a_new_outage_starts_a_new_count() -> None:
    """After etcd came back, the next failure is a new outage with its own first line."""
    now = [0.0]
    outage = Outage(remind_every=60, clock=lambda: now[0])
    with capture_logs() as logged:
        outage.failed("a")
        outage.succeeded()
        now[0] = 10.0
        outage.failed("b")
        now[0] = 11.0
        outage.succeeded()
    assert [(e["event"], e.get("error")) for e in logged] == [
        ("etcd_unreachable", "a"),
        ("etcd_reachable", None),
        ("etcd_unreachable", "b"),
        ("etcd_reachable", None),
    ]
    assert logged[3]["failed_requests"] == 1 and logged[3]["down_for_seconds"] == 1.0
