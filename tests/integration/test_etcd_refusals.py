"""etcd refusing work, against a private real etcd started with small limits: the space quota
alarm (NOSPACE), requests over --max-request-bytes and --max-txn-ops. The daemon keeps running,
reports it, writes nothing wrong, and catches up once etcd accepts writes again."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import aetcd
import pytest

from statemanager.devtools.localetcd import LocalEtcd, free_port

from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are

QUOTA = 2 * 1024 * 1024
FILLER = b"f" * 200_000


@pytest.fixture
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalEtcd]:
    """A private etcd started with the flags the test is parametrised with."""
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port(), tuple(request.param))
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()


def readyz(d: Daemon) -> tuple[int, str]:
    """/readyz's status and body; (0, "") while nothing listens yet."""
    try:
        with urlopen(f"http://127.0.0.1:{d.metrics_port}/readyz", timeout=5) as resp:
            return int(resp.status), str(resp.read().decode())
    except HTTPError as exc:
        return exc.code, exc.read().decode()
    except URLError:
        return 0, ""


def metric(d: Daemon, line_start: str) -> float:
    for line in d.scrape().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def alive(d: Daemon) -> None:
    assert d.process is not None
    assert d.process.poll() is None, d.tail()
    assert not d.events("task_failed"), d.tail()


async def fill(private: Etcd, prefix: str) -> int:
    """Put filler values until etcd raises its NOSPACE alarm; returns how many went in."""
    for i in range(10 * QUOTA // len(FILLER)):
        try:
            await private.put(f"{prefix}{i:04}", FILLER)
        except aetcd.ClientError as exc:
            if "database space exceeded" not in str(exc):
                raise
            return i
    raise AssertionError("etcd never refused a put: is --quota-backend-bytes applied?")


async def free_space(server: LocalEtcd, private: Etcd, filler: str) -> None:
    """What an operator does about NOSPACE: delete, compact, defragment, disarm the alarm."""
    await private.client.delete_prefix(filler.encode())
    [status] = json.loads(server.etcdctl("endpoint", "status", "--write-out", "json"))
    revision = int(status["Status"]["header"]["revision"])
    server.etcdctl("compact", str(revision))
    server.etcdctl("defrag")
    server.etcdctl("alarm", "disarm")


@pytest.mark.parametrize("server", [("--quota-backend-bytes", str(QUOTA))], indirect=True)
async def test_nospace_alarm_reported_then_caught_up(
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker
) -> None:
    """NOSPACE: the daemon keeps running, /readyz says why in etcd's words, the metric counts
    it, nothing wrong is written; after compact + defrag + alarm disarm the states catch up."""
    d = make_daemon()
    d.start()
    await d.wait_synced()
    await private.package("p", ["m"])
    await private.container("c", "running", "m")
    await states_are(private, {"m": "Running", "pkg:p": "Running"})

    # Hold the daemon while its input changes and etcd fills, so its write meets the alarm.
    assert d.process is not None
    d.process.send_signal(signal.SIGSTOP)
    try:
        await private.container("c", "dead", "m")
        filler = "/filler/"
        assert await fill(private, filler) > 0
    finally:
        d.process.send_signal(signal.SIGCONT)

    async def refusing() -> bool:
        code, body = readyz(d)
        return code == 503 and "database space exceeded" in body

    await eventually(refusing, 30, "/readyz to say etcd refuses writes")
    assert metric(d, 'statemanager_etcd_refusals_total{reason="nospace"}') >= 1
    assert metric(d, "statemanager_etcd_refusing_writes") == 1
    [line] = d.events("etcd_refusing_writes")
    assert line["reason"] == "nospace"
    assert "database space exceeded" in line["error"]
    alive(d)
    assert await private.package_state("p") == "Running"  # nothing half-written
    assert await private.model_state("m") == "Running"

    await free_space(server, private, filler)

    await states_are(private, {"m": "Failed", "pkg:p": "Error"}, timeout=30)

    async def ready_again() -> bool:
        return readyz(d)[0] == 200

    await eventually(ready_again, 15, "/readyz back to 200")
    assert metric(d, "statemanager_etcd_refusing_writes") == 0
    assert d.events("etcd_accepting_writes")
    alive(d)


@pytest.mark.parametrize("server", [("--quota-backend-bytes", str(QUOTA))], indirect=True)
async def test_daemon_started_under_nospace_waits_then_syncs(
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker
) -> None:
    """Started while the NOSPACE alarm is raised (its lease grant is refused): it keeps running
    and unready with etcd's words, then leads and writes once the alarm is disarmed."""
    await private.package("p", ["m"])
    await private.container("c", "dead", "m")
    filler = "/filler/"
    assert await fill(private, filler) > 0
    d = make_daemon()
    d.start()

    async def refusing() -> bool:
        alive(d)
        code, body = readyz(d)
        return code == 503 and "database space exceeded" in body

    await eventually(refusing, 30, "/readyz to say etcd refuses writes")
    assert metric(d, 'statemanager_etcd_refusals_total{reason="nospace"}') >= 1
    assert await private.package_state("p") is None
    await free_space(server, private, filler)
    await d.wait_synced(timeout=30)
    await states_are(private, {"m": "Failed", "pkg:p": "Error"})
    alive(d)


@pytest.mark.parametrize(
    "server",
    [("--max-request-bytes", "900"), ("--max-txn-ops", "4")],
    indirect=True,
    ids=["max-request-bytes", "max-txn-ops"],
)
async def test_transactions_etcd_refuses_as_too_large_are_split(
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker
) -> None:
    """etcd run with lower limits than the defaults the daemon packs for: every state is still
    written (refused transactions are split), a single change etcd refuses even alone is
    skipped and reported, and the daemon keeps running."""
    for i in range(20):
        await private.package(f"p{i:02}", [f"m{i:02}"])
        await private.container(f"c{i:02}", "running", f"m{i:02}")
    long_name = "l" * 250
    await private.package(long_name, ["lm"])
    d = make_daemon()
    d.start()
    await d.wait_synced(timeout=60)
    expected = {f"pkg:p{i:02}": "Running" for i in range(20)}
    expected |= {f"m{i:02}": "Running" for i in range(20)}
    await states_are(private, expected)
    assert d.events("write_split")
    limited = "--max-request-bytes" in server.extra_args
    refusal = "request_too_large" if limited else "too_many_ops"
    assert metric(d, f'statemanager_etcd_refusals_total{{reason="{refusal}"}}') >= 1
    if limited:  # the long-named package's state write alone is over 900 bytes
        [refused] = d.events("write_refused")
        assert refused["key"] == f"package/{long_name}"
        assert refused["reason"] == "request_too_large"
        assert metric(d, "statemanager_writes_refused_total") == 1
        assert await private.package_state(long_name) is None
        assert await private.model_state("lm") == "Pending"
    else:
        assert await private.package_state(long_name) == "Paused"
    assert readyz(d)[0] == 200
    alive(d)
