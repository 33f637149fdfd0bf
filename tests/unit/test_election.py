"""Election bookkeeping against a fake etcd: leadership, the validity deadline, and keeping our
place in line through a transient error. (Real-etcd behaviour: tests/integration/test_ha.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from structlog.testing import capture_logs

from statemanager.election import Election
from statemanager.errors import EtcdUnavailable
from statemanager.etcd import KeyValue
from statemanager.outage import Outage


class FakeEtcd:
    """Just enough of etcd's lease and key behaviour for one candidate."""

    def __init__(self) -> None:
        self.keys: dict[bytes, tuple[bytes, int]] = {}
        self.revision = 10
        self.leases = 0
        self.fail_next_ranges = 0
        self.lease_alive = True

    async def grant_lease(self, ttl: int) -> int:
        self.leases += 1
        return self.leases

    async def keep_alive(self, lease_id: int) -> int:
        return 5 if self.lease_alive else 0

    async def revoke_lease(self, lease_id: int) -> None:
        self.keys.clear()

    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int:
        self.revision += 1
        self.keys.setdefault(key, (value, self.revision))
        return self.keys[key][1]

    async def first_created(self, prefix: str) -> tuple[bytes, bytes, int] | None:
        if self.fail_next_ranges:
            self.fail_next_ranges -= 1
            raise EtcdUnavailable("etcd range failed: UNAVAILABLE")
        if not self.keys:
            return None
        key, (value, created) = min(self.keys.items(), key=lambda kv: kv[1][1])
        return key, value, created

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        return [KeyValue(k, v, r) for k, (v, r) in self.keys.items()]

    async def delete(self, key: bytes) -> None:
        self.keys.pop(key, None)


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition the election's own loop changes (it exposes no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_leads_survives_a_transient_error_and_resigns() -> None:
    """A lone candidate leads; one failed range pauses its writes but not its key; resign
    removes the key. Each leader/follower line says why; the outage is one line each way."""
    etcd = FakeEtcd()
    changes: list[bool] = []
    election = Election(
        etcd, "/sm/", "node-a", ttl=3, on_change=changes.append, reachability=Outage()
    )
    task = asyncio.create_task(election.run())
    with capture_logs() as logged:
        await _hold_through_a_failed_range(election, etcd, changes, task)
    await election.resign()
    assert etcd.keys == {}
    assert election.fence() is None
    roles = [(e["event"], e["why"]) for e in logged if e["event"] in ("leader", "follower")]
    assert roles == [
        ("leader", "our candidate key is the oldest"),
        ("follower", "etcd unreachable or refusing: cannot tell who leads"),
        ("leader", "our candidate key is the oldest"),
    ]
    outage = [e["event"] for e in logged if e["event"].startswith("etcd_")]
    assert outage == ["etcd_unreachable", "etcd_reachable"]


async def _hold_through_a_failed_range(
    election: Election, etcd: FakeEtcd, changes: list[bool], task: asyncio.Task[None]
) -> None:
    try:
        fence = await asyncio.wait_for(election.wait_leader(), 5)
        assert election.leader_name() == "node-a"
        etcd.fail_next_ranges = 1
        await _until(lambda: election.fence() is None)
        await _until(lambda: election.fence() is not None)
        assert election.fence() == fence  # same key, same place in line: no new campaign
        assert etcd.leases == 1
        assert changes == [True, False, True]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_lost_lease_starts_a_new_campaign() -> None:
    """When etcd says the lease is gone the daemon stops writing and campaigns with a new one."""
    etcd = FakeEtcd()
    election = Election(
        etcd, "/sm/", "node-a", ttl=2, on_change=lambda _leading: None, reachability=Outage()
    )
    task = asyncio.create_task(election.run())
    try:
        first = await asyncio.wait_for(election.wait_leader(), 5)
        etcd.lease_alive = False
        etcd.keys.clear()  # etcd deletes the key with the lease
        await _until(lambda: etcd.leases >= 2)
        etcd.lease_alive = True
        second = await asyncio.wait_for(election.wait_leader(), 5)
        assert second != first
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_earlier_run_under_our_name_is_removed_first() -> None:
    """A key left by an earlier run of this node is deleted instead of waited for."""
    etcd = FakeEtcd()
    etcd.keys[b"/sm/leader/00000000000000aa"] = (b"node-a", 1)
    etcd.keys[b"/sm/leader/00000000000000bb"] = (b"node-b", 2)
    election = Election(
        etcd, "/sm/", "node-a", ttl=3, on_change=lambda _leading: None, reachability=Outage()
    )
    task = asyncio.create_task(election.run())
    try:
        await _until(lambda: election.decided)
        assert election.fence() is None  # node-b now precedes us
        assert election.leader_name() == "node-b"
        assert b"/sm/leader/00000000000000aa" not in etcd.keys
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
