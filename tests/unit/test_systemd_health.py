"""The sd_notify messages and the health judgement behind /healthz, /readyz and the watchdog."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from statemanager.app.systemd import Notifier
from statemanager.runtime.health import Health


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_messages_reach_the_notify_socket(listener: tuple[str, socket.socket]) -> None:
    """READY carries a STATUS; WATCHDOG and STOPPING are sent as systemd expects them."""
    path, sock = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.ready("watching etcd at revision 7")
    assert sock.recv(4096) == b"READY=1\nSTATUS=watching etcd at revision 7"
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_abstract_socket_names_are_supported() -> None:
    """An '@' address is an abstract socket (NUL-prefixed name)."""
    name = f"statemanager-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).status("syncing")
        assert sock.recv(4096) == b"STATUS=syncing"
    finally:
        sock.close()


def test_outside_systemd_everything_is_a_no_op() -> None:
    """Without NOTIFY_SOCKET nothing is sent and no watchdog is expected."""
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    notifier.ready("x")  # must not raise


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_the_deadline(
    env: dict[str, str], interval: float | None
) -> None:
    """Pings go at half of WATCHDOG_USEC, and only when the watchdog is meant for this PID."""
    assert Notifier(env).watchdog_interval == interval


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    """A notify socket that is gone does not crash the daemon."""
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).watchdog()


def test_health_before_sync_after_sync_and_when_etcd_breaks() -> None:
    """Readiness needs the first sync and a live watch; liveness only a turning loop."""
    now = [100.0]
    health = Health(stuck_after=10, clock=lambda: now[0])
    assert health.liveness() == (True, "alive")
    assert not health.readiness()[0]
    assert health.status_line() == "waiting for etcd: listing etcd"
    health.broken("etcd unreachable (unavailable): connection refused")
    assert (
        health.status_line()
        == "waiting for etcd: etcd unreachable (unavailable): connection refused"
    )
    health.watching(5)
    assert health.status_line() == "syncing: writing the states of etcd revision 5"
    health.synced()
    assert health.readiness() == (True, "ready")
    assert health.status_line() == "watching etcd at revision 5"
    health.broken("etcd unreachable (unavailable): connection refused")
    ok, why = health.readiness()
    assert not ok
    assert "etcd unreachable" in why
    assert health.status_line().startswith("etcd unreachable")
    now[0] = 111.0  # no beat for 11 s
    assert health.liveness()[0] is False
    health.beat()
    assert health.liveness()[0] is True


def test_the_revision_only_grows_until_a_listing_sets_it() -> None:
    """One stream's watches deliver their prefixes in no order between them: an older batch of
    one prefix after a newer one of another leaves the revision where it was. A listing (after
    a wipe or a restore, at a lower revision) sets it."""
    health = Health(stuck_after=10)
    health.watching(10)
    health.watching(4)
    assert health.revision == 10
    health.listed(3)
    assert health.revision == 3
    assert health.status_line() == "syncing: writing the states of etcd revision 3"
