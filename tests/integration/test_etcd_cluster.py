"""A three-member etcd cluster under a running daemon given all three endpoints: the member it
talks to killed, the raft leader paused past an election, members restarted, all during
container churn. Throughout, the states etcd holds end equal to the oracle (fleet.py), and
etcd's own history shows every state key written once per change: never the same value twice
in a row, so no write was repeated by a failover, a lost answer or a resumed watch."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aetcd
import pytest
from etcdcluster import Cluster
from etcdhistory import values_written

from statemanager.core.keys import KeyLayout

from conftest import Daemon, DaemonMaker, Etcd, eventually
from fleet import Churn, converged

# Requests to a dead or paused member give up within 2 s and a silent watch is resumed
# within 3 s, so each fault is noticed in seconds, not the production defaults' minute.
QUICK = {"STATEMANAGER_ETCD_TIMEOUT_SECONDS": "2", "STATEMANAGER_ETCD_WATCH_SILENCE_SECONDS": "3"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "cluster")
    try:
        await c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def daemons(tmp_path: Path, layout: KeyLayout, cluster: Cluster) -> Iterator[DaemonMaker]:
    """Daemons given the three members in order m0, m1, m2 (they dial m0 first)."""
    maker = DaemonMaker(cluster.endpoints(0, 1, 2), layout, tmp_path)
    yield maker
    maker.stop_all()


@asynccontextmanager
async def client_on(cluster: Cluster, member: int, layout: KeyLayout) -> AsyncIterator[Etcd]:
    """The test's own client (churn, oracle, history) on one member the test leaves alone."""
    client = aetcd.Client(host="127.0.0.1", port=cluster.members[member].client_port, timeout=5)
    await client.connect()
    try:
        yield Etcd(client, layout)
    finally:
        await client.close()


async def churning(etcd: Etcd, daemon: Daemon, seed: int) -> Churn:
    """The fleet set up, the daemon synced, churn running and already 50 operations in."""
    churn = Churn(etcd, seed)
    await churn.setup()
    daemon.start()
    await daemon.wait_synced()
    churn.start()
    await churn.progressed(50)
    return churn


async def failed_over_from(daemon: Daemon, endpoint: str) -> None:
    async def moved() -> bool:
        return any(e["unreachable"] == endpoint for e in daemon.events("etcd_failover"))

    await eventually(moved, 30, f"the daemon to move off {endpoint}")


async def written_once(etcd: Etcd) -> int:
    """Assert, from etcd's history, that no state key was ever written the value it already
    held; return how many state writes there were."""
    history = await values_written(
        etcd.client, [etcd.layout.model_states, etcd.layout.package_states], "/state"
    )
    repeated = {key: values for key, values in history.items()
                if any(a == b for a, b in itertools.pairwise(values))}  # fmt: skip
    assert not repeated, repeated
    return sum(len(values) for values in history.values())


async def test_member_the_daemon_talks_to_is_killed(
    cluster: Cluster, daemons: DaemonMaker, layout: KeyLayout
) -> None:
    """SIGKILL the member the daemon dials first, during churn: it moves to another member,
    states follow the churn while that member stays dead, and nothing is written twice."""
    async with client_on(cluster, 2, layout) as etcd:
        churn = await churning(etcd, d := daemons(**QUICK), seed=31)
        cluster.members[0].kill()
        await failed_over_from(d, cluster.members[0].endpoint)
        await churn.progressed(150)
        await churn.stop()
        took = await converged(etcd)
        writes = await written_once(etcd)
    print(f"\nmember killed: {churn.ops} churn ops, {writes} state writes, "
          f"states right {took:.2f} s after churn stopped")  # fmt: skip


async def test_leader_paused_past_an_election(
    cluster: Cluster, tmp_path: Path, layout: KeyLayout
) -> None:
    """SIGSTOP the raft leader, which is the member the daemon talks to, until the other two
    have elected a new one; states follow the churn during the pause and after SIGCONT, when
    the old leader rejoins as a follower and catches up; nothing is written twice."""
    old = await cluster.leader()
    others = [i for i in range(3) if i != old]
    maker = DaemonMaker(cluster.endpoints(old, *others), layout, tmp_path)
    try:
        async with client_on(cluster, others[1], layout) as etcd:
            churn = await churning(etcd, d := maker(**QUICK), seed=32)
            term = (await cluster.status(old) or {})["term"]
            cluster.pause(old)
            new = await cluster.leader(among=others)
            assert (await cluster.status(new) or {})["term"] > term
            await failed_over_from(d, cluster.members[old].endpoint)
            await churn.progressed(100)
            await churn.stop()
            during = await converged(etcd)
            churn.start()
            cluster.resume(old)
            assert await cluster.leader() == new  # the old leader follows it
            await churn.progressed(100)
            await churn.stop()
            after = await converged(etcd)
            await cluster.caught_up(old, others[1])
            writes = await written_once(etcd)
    finally:
        maker.stop_all()
    print(f"\nleader paused: {churn.ops} churn ops, {writes} state writes, states right "
          f"{during:.2f} s (paused) and {after:.2f} s (resumed) after churn stopped")  # fmt: skip


async def test_members_restart_one_after_another(
    cluster: Cluster, daemons: DaemonMaker, layout: KeyLayout
) -> None:
    """Restart the member the daemon talks to (SIGTERM, started again on its data), then the
    one it moved to, during churn: each restarted member catches up with the writes it
    missed, the daemon follows, states stay right, nothing is written twice."""
    async with client_on(cluster, 2, layout) as etcd:
        churn = await churning(etcd, d := daemons(**QUICK), seed=33)
        for member in (0, 1):
            await cluster.restart(member)
            await failed_over_from(d, cluster.members[member].endpoint)
            await churn.progressed(100)
            await cluster.caught_up(member, 2)
        await churn.stop()
        took = await converged(etcd)
        writes = await written_once(etcd)
    print(f"\nmembers restarted: {churn.ops} churn ops, {writes} state writes, "
          f"states right {took:.2f} s after churn stopped")  # fmt: skip
