"""Several daemons, one writer: three daemons against one real etcd, leader killed,
terminated, paused past its lease, and etcd restarted under them."""

from __future__ import annotations

import asyncio
import signal
import time

from statemanager.adapters.etcd import EtcdClient
from statemanager.core.ports import Delete, Fence, Put
from statemanager.devtools.localetcd import LocalEtcd

from cluster import TTL, is_leader, the_leader
from conftest import Daemon, DaemonMaker, Etcd, eventually
from fleet import Churn, converged


async def trio(private: Etcd, make_daemon: DaemonMaker, seed: int) -> tuple[list[Daemon], Churn]:
    churn = Churn(private, seed=seed)
    await churn.setup()
    daemons = [
        make_daemon(
            STATEMANAGER_HA_NODE_NAME=f"node-{n}", STATEMANAGER_HA_LEASE_TTL_SECONDS=str(TTL)
        )
        for n in "abc"
    ]
    for d in daemons:
        d.start()
    for d in daemons:
        await d.wait_synced()
    await converged(private)
    return daemons, churn


async def time_until_written(private: Etcd, model: str, want: str, timeout: float) -> float:
    """Seconds until /model/{model}/state holds `want`."""
    started = time.monotonic()

    async def written() -> bool:
        return await private.model_state(model) == want

    await eventually(written, timeout, f"{model} to become {want}")
    return time.monotonic() - started


async def test_only_the_leader_writes(private: Etcd, make_daemon: DaemonMaker) -> None:
    """With three daemons running churn, every transition comes from one of them."""
    daemons, churn = await trio(private, make_daemon, seed=11)
    leader = await the_leader(daemons)
    for _ in range(300):
        await churn.step()
    await converged(private)
    writers = [d for d in daemons if d.events("transition")]
    assert writers == [leader]
    followers = [d for d in daemons if d is not leader]
    assert all(e["role"] == "follower" for d in followers for e in d.events("synced"))


async def test_killed_leader_is_replaced_within_the_ttl(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """SIGKILL the leader: a follower writes the next change within TTL plus a small margin."""
    daemons, _ = await trio(private, make_daemon, seed=12)
    leader = await the_leader(daemons)
    leader.kill()
    await private.container("probe", "dead", "failover_probe")
    took = await time_until_written(private, "failover_probe", "Failed", TTL + 5)
    print(f"\nfailover after SIGKILL: {took:.2f} s (lease TTL {TTL} s)")
    assert took < TTL + 3  # lease expiry (checked every ~0.5 s by etcd) + a watch event + a write
    assert await the_leader(daemons) is not leader


async def test_terminated_leader_hands_over_at_once(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """SIGTERM the leader: it resigns, and the next daemon writes well within the TTL."""
    daemons, _ = await trio(private, make_daemon, seed=13)
    leader = await the_leader(daemons)
    assert leader.stop() == 0
    await private.container("probe", "dead", "failover_probe")
    took = await time_until_written(private, "failover_probe", "Failed", TTL + 5)
    print(f"\nhandover after SIGTERM: {took:.2f} s (lease TTL {TTL} s)")
    assert took < TTL / 2


async def test_paused_leader_is_deposed_and_cannot_write(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """SIGSTOP the leader past its lease, change containers, SIGCONT: it writes nothing more,
    follows, and the states equal the oracle."""
    daemons, churn = await trio(private, make_daemon, seed=14)
    leader = await the_leader(daemons)
    await paused_past_its_lease(private, leader, [d for d in daemons if d is not leader], churn)


async def paused_past_its_lease(
    etcd: Etcd, leader: Daemon, others: list[Daemon], churn: Churn
) -> None:
    """SIGSTOP `leader` until one of `others` leads, churning meanwhile, then SIGCONT and
    churn on: the states converge to the oracle, and the resumed daemon follows and has
    written nothing since it was paused."""
    assert leader.process is not None
    written_before = len(leader.events("transition"))
    leader.process.send_signal(signal.SIGSTOP)
    try:
        # Another daemon leads only once the paused leader's lease has lapsed.
        await the_leader(others, timeout=TTL + 20)
        for _ in range(200):
            await churn.step()
    finally:
        leader.process.send_signal(signal.SIGCONT)
    for _ in range(100):
        await churn.step()
    await converged(etcd)

    async def following() -> bool:
        return bool(leader.events("follower"))

    await eventually(following, 10, "the old leader to follow")
    assert not is_leader(leader)
    assert len(leader.events("transition")) == written_before


async def test_etcd_restart_under_three_daemons(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """etcd killed and restarted under three daemons: one leader again, states right."""
    daemons, churn = await trio(private, make_daemon, seed=15)
    server.kill()
    await asyncio.sleep(2)  # deliberately: etcd stays down for a while
    await asyncio.to_thread(server.start)
    for _ in range(200):
        await churn.step()
    await converged(private)
    await the_leader(daemons)


async def test_a_fenced_write_fails_atomically(server: LocalEtcd) -> None:
    """A transaction fenced on a leader key whose lease is gone writes nothing."""
    client = EtcdClient([server.endpoint], timeout=5)
    try:
        lease = await client.grant_lease(5)
        created = await client.create_if_absent(b"/fence-test/leader", b"me", lease)
        fence = Fence(b"/fence-test/leader", created)
        ok = await client.txn([], [Put(b"/fence-test/state", b"Running")], fence)
        assert ok.succeeded
        await client.revoke_lease(lease)  # deposed: etcd deletes the leader key
        late = await client.txn([], [Put(b"/fence-test/state", b"Failed"), Delete(b"/x")], fence)
        assert not late.succeeded
        assert late.fenced
        kv = await client.get(b"/fence-test/state")
        assert kv is not None
        assert kv.value == b"Running"
    finally:
        await client.close()
