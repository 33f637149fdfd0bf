"""Fault harness (issue 3): random container churn while etcd or the daemon is killed, paused or
compacted; afterwards the written states must equal an oracle computed from the final keys
(fleet.py)."""

from __future__ import annotations

import asyncio
import signal

from statemanager.benchload import cpu_seconds
from statemanager.localetcd import LocalEtcd

from conftest import Daemon, Etcd, eventually
from fleet import CONTAINERS, PACKAGES, Churn, converged


async def churning_daemon(
    private: Etcd, make_daemon: type[Daemon], seed: int, **env: str
) -> tuple[Churn, Daemon]:
    """A fleet set up for churn, and a daemon that has synced it."""
    churn = Churn(private, seed=seed)
    await churn.setup()
    daemon = make_daemon(**env)
    daemon.start()
    await daemon.wait_synced()
    return churn, daemon


async def test_etcd_killed_and_restarted_during_churn(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """SIGKILL etcd five times during churn: the daemon resumes and ends with zero differences."""
    churn, daemon = await churning_daemon(private, make_daemon, 1)
    churn.start()
    recoveries = []
    for _ in range(5):
        await asyncio.sleep(1.0)
        server.kill()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        await asyncio.sleep(1.0)
    await churn.stop()
    recoveries.append(await converged(private))
    print(
        f"\netcd restarts: {churn.ops} churn ops; states right {recoveries[0]:.2f} s after churn stopped"
    )
    assert daemon.events("watch_broken"), "the test should have broken the watch"


async def test_daemon_paused_while_history_is_compacted(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
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
    private: Etcd, make_daemon: type[Daemon]
) -> None:
    """SIGKILL the daemon five times during churn and restart it: zero differences at the end."""
    churn = Churn(private, seed=3)
    await churn.setup()
    churn.start()
    for _ in range(5):
        daemon = make_daemon()
        daemon.start()
        await asyncio.sleep(1.5)
        daemon.kill()
    final = make_daemon()
    final.start()
    await final.wait_synced()
    await churn.stop()
    took = await converged(private)
    print(f"\ndaemon kills: {churn.ops} churn ops; states right {took:.2f} s after churn stopped")


async def test_silent_watch_is_detected(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
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
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """With etcd down for 30 s the daemon uses under 1 s of CPU, then catches up."""
    churn, daemon = await churning_daemon(private, make_daemon, 5)
    assert daemon.process is not None
    server.kill()
    before = cpu_seconds(daemon.process.pid)
    await asyncio.sleep(30)
    used = cpu_seconds(daemon.process.pid) - before
    print(f"\netcd down 30 s: daemon used {used:.3f} s CPU")
    assert used < 1.0
    await asyncio.to_thread(server.start)
    for _ in range(200):
        await churn.step()
    took = await converged(private)
    print(f"etcd back: states right {took:.2f} s after the churn that followed")


async def test_periodic_resync_writes_nothing_when_all_is_right(
    private: Etcd, make_daemon: type[Daemon]
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
