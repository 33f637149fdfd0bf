"""Fault harness: random container churn while etcd or the daemon is killed, paused or
compacted; afterwards the written states must equal an oracle computed from the final keys
(fleet.py)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from etcdhistory import replace_history, save_snapshot

from statemanager.devtools.benchload import cpu_seconds
from statemanager.devtools.localetcd import LocalEtcd

from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are
from fleet import CONTAINERS, PACKAGES, Churn, converged


async def churning_daemon(
    private: Etcd, make_daemon: DaemonMaker, seed: int, **env: str
) -> tuple[Churn, Daemon]:
    """A fleet set up for churn, and a daemon that has synced it."""
    churn = Churn(private, seed=seed)
    await churn.setup()
    daemon = make_daemon(**env)
    daemon.start()
    await daemon.wait_synced()
    return churn, daemon


async def test_etcd_killed_and_restarted_during_churn(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """SIGKILL etcd five times during churn: the daemon resumes and ends with zero differences."""
    churn, daemon = await churning_daemon(private, make_daemon, 1)
    churn.start()
    recoveries = []
    for _ in range(5):
        await churn.progressed(100)  # etcd answers: churn goes on
        server.kill()
        await asyncio.sleep(0.5)  # deliberately: etcd stays down for a while
        await asyncio.to_thread(server.start)
    await churn.progressed(100)
    await churn.stop()
    recoveries.append(await converged(private))
    print(
        f"\netcd restarts: {churn.ops} churn ops; states right {recoveries[0]:.2f} s after churn stopped"
    )
    assert daemon.events("watch_broken"), "the test should have broken the watch"


async def test_daemon_paused_while_history_is_compacted(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """SIGSTOP the daemon, churn with deletions, compact past its revision and restart etcd so
    its watch must resume from a compacted revision; SIGCONT: it relists and diffs."""
    churn, daemon = await churning_daemon(private, make_daemon, 2)
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGSTOP)
    for _ in range(400):
        await churn.step()
    for cid in CONTAINERS[:40]:  # deletions the daemon must notice by diffing
        await private.delete(private.layout.containers + cid)
    revision = await private.put(private.layout.containers + "c000", '{"state": {}}')
    await private.delete(private.layout.containers + "c000")
    await private.client.compact(revision)
    server.kill()  # the daemon's stream breaks; resuming it needs the compacted history
    await asyncio.to_thread(server.start)
    daemon.process.send_signal(signal.SIGCONT)
    took = await converged(private)
    print(f"\ncompaction: states right {took:.2f} s after SIGCONT")

    async def relisted() -> bool:
        return bool(daemon.events("watch_compacted"))

    await eventually(relisted, 10, "the compaction to be noticed")


async def test_daemon_killed_repeatedly_during_churn(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """SIGKILL the daemon five times during churn and restart it: zero differences at the end."""
    churn = Churn(private, seed=3)
    await churn.setup()
    churn.start()
    for _ in range(5):
        daemon = make_daemon()
        daemon.start()
        await asyncio.sleep(1.5)  # deliberately: killed wherever it got to in 1.5 s
        daemon.kill()
    final = make_daemon()
    final.start()
    await final.wait_synced()
    await churn.stop()
    took = await converged(private)
    print(f"\ndaemon kills: {churn.ops} churn ops; states right {took:.2f} s after churn stopped")


async def test_silent_watch_is_detected(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """etcd frozen (SIGSTOP) past the silence limit: the daemon notices, resumes, converges."""
    churn, daemon = await churning_daemon(
        private, make_daemon, 4, STATEMANAGER_ETCD_WATCH_SILENCE_SECONDS="2"
    )
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)

    async def silent() -> bool:
        return any(e.get("reason") == "silent" for e in daemon.events("watch_broken"))

    try:
        await eventually(silent, 15, "a silent-watch restart")
    finally:
        server.process.send_signal(signal.SIGCONT)
    for _ in range(300):
        await churn.step()
    took = await converged(private)
    print(f"\nsilent watch: states right {took:.2f} s after etcd resumed")


async def test_etcd_down_costs_almost_no_cpu(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """With etcd down for 30 s the daemon uses under 1 s of CPU, then catches up."""
    churn, daemon = await churning_daemon(private, make_daemon, 5)
    assert daemon.process is not None
    server.kill()
    before = cpu_seconds(daemon.process.pid)
    await asyncio.sleep(30)  # deliberately: the outage lasts 30 s
    used = cpu_seconds(daemon.process.pid) - before
    print(f"\netcd down 30 s: daemon used {used:.3f} s CPU")
    assert used < 1.0
    await asyncio.to_thread(server.start)
    for _ in range(200):
        await churn.step()
    took = await converged(private)
    print(f"etcd back: states right {took:.2f} s after the churn that followed")


async def test_periodic_resync_writes_nothing_when_all_is_right(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """The backstop relist runs on its interval, finds no drift and writes no transition."""
    _, daemon = await churning_daemon(
        private, make_daemon, 6, STATEMANAGER_ETCD_RESYNC_INTERVAL_SECONDS="1"
    )
    await converged(private)
    written = len(daemon.events("transition"))

    async def resynced_twice() -> bool:
        return len(daemon.events("resync_due")) >= 3

    await eventually(resynced_twice, 15, "three periodic resyncs")
    assert len(daemon.events("transition")) == written
    assert not daemon.events("resync_drift")
    # The backstop still corrects what it finds: a state key changed behind its back.
    key = f"{private.layout.package_states}{PACKAGES[0]}/state"
    await private.put(key, "Bogus")
    await converged(private)


def _ready(daemon: Daemon) -> bool:
    try:
        with urlopen(f"http://127.0.0.1:{daemon.metrics_port}/readyz", timeout=5) as resp:
            return int(resp.status) == 200
    except HTTPError:
        return False


@pytest.mark.parametrize(
    ("how", "grown", "went_back"),
    [("wiped", False, "revision"), ("restored", False, "revision"), ("wiped", True, "raft term")],
    ids=["wiped", "restored", "wiped-and-grown"],
)
async def test_etcd_history_replaced_is_noticed_and_relisted(
    private: Etcd,
    server: LocalEtcd,
    make_daemon: DaemonMaker,
    tmp_path: Path,
    how: str,
    grown: bool,
    went_back: str,
) -> None:
    """etcd wiped, or restored from an older snapshot, on the same ports: its revision is below
    what the daemon delivered, or (when the new history grew past it while the daemon was
    away) its raft term is below the one the daemon saw. The daemon says so (log, metric),
    relists, and writes the states of the new history, early changes included, instead of
    waiting silently for the old revision or resuming in the middle of the new history."""
    await private.package("shop", ["web"])
    await private.container("w0", "running", "web")
    snapshot = tmp_path / "old.db"
    await asyncio.to_thread(save_snapshot, server, snapshot)
    for i in range(1, 40):  # the daemon delivers a revision far above what etcd has later
        await private.container(f"w{i}", "running", "web")
    # A restart, as every long-lived cluster has had: its raft term is above a new cluster's.
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    daemon = make_daemon()
    daemon.start()
    await daemon.wait_synced()
    await states_are(private, {"web": "Running", "pkg:shop": "Running"})
    assert daemon.process is not None

    if grown:
        daemon.process.send_signal(signal.SIGSTOP)
    await asyncio.to_thread(replace_history, server, how, snapshot)
    await private.package("shop", ["web", "db"])  # early in the new history
    if grown:  # the new history passes the daemon's revision before it reconnects
        for i in range(150):
            await private.put(f"{private.layout.own}filler", str(i))
        daemon.process.send_signal(signal.SIGCONT)
    changed = time.monotonic()
    await private.container("w0", "dead", "web")
    expected = {"web": "Failed", "db": "Pending", "pkg:shop": "Degraded"}
    await states_are(private, expected, timeout=30)
    print(f"\nhistory {how}{' and grown' if grown else ''}: states right "
          f"{time.monotonic() - changed:.2f} s after the last change")  # fmt: skip

    noticed = daemon.events("etcd_revision_backwards")
    assert len(noticed) == 1, daemon.tail()
    assert noticed[0]["went_back"] == went_back
    assert noticed[0]["now"] < noticed[0]["before"]
    assert 'statemanager_watch_restarts_total{reason="revision_backwards"} 1.0' in daemon.scrape()

    async def ready() -> bool:
        return await asyncio.to_thread(_ready, daemon)

    await eventually(ready, 15, "/readyz 200 after the relist")
