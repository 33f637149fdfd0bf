"""Election bookkeeping against a fake etcd, on virtual time: leadership, keeping our place in
line through a transient error, a lost lease, an earlier run's key, and a follower that waits
on a watch of the keys before its own instead of polling. (Real etcd: tests/integration/test_ha.py;
the whole runtime on the in-memory etcd: tests/runtime/test_election_watch.py.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

import pytest
from structlog.testing import capture_logs

from statemanager.core.errors import EtcdUnavailable
from statemanager.core.ports import Candidate, Candidates, Event, Header, KeyValue, WatchBatch
from statemanager.runtime.election import Election, candidate_value
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.outage import Outage
from statemanager.runtime.records import LaterFormats

from support.runtime import until

pytestmark = pytest.mark.looptime

A = b"/sm/leader/00000000000000aa"
B = b"/sm/leader/00000000000000bb"


class FakeEtcd:
    """Just enough of etcd's lease, key and watch behaviour for an election: one revision per
    change, deletions watchable from a revision, and counted requests."""

    def __init__(self) -> None:
        self.keys: dict[bytes, tuple[bytes, int]] = {}
        self.revision = 10
        self.deletions: list[tuple[int, bytes]] = []
        self._changed = asyncio.Condition()
        self.leases = 0
        self.lease_alive = True
        self.fail_next_requests = 0
        self.reads = 0
        self.keep_alives = 0
        self.watches = 0
        self.after_next_read: Callable[[], None] | None = None

    def _request(self) -> None:
        if self.fail_next_requests:
            self.fail_next_requests -= 1
            raise EtcdUnavailable("etcd request failed: UNAVAILABLE")

    def put(self, key: bytes, value: bytes) -> None:
        self.revision += 1
        self.keys[key] = (value, self.revision)

    def remove(self, key: bytes) -> None:
        """Delete `key` as etcd does (a lease expiry, a revoke, another client's delete)."""
        if self.keys.pop(key, None) is None:
            return
        self.revision += 1
        self.deletions.append((self.revision, key))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def grant_lease(self, ttl: int) -> int:
        self._request()
        self.leases += 1
        return self.leases

    async def keep_alive(self, lease_id: int) -> int:
        self._request()
        self.keep_alives += 1
        return 5 if self.lease_alive else 0

    async def revoke_lease(self, lease_id: int) -> None:
        for key in list(self.keys):
            self.remove(key)

    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int:
        self._request()
        if key not in self.keys:
            self.put(key, value)
        return self.keys[key][1]

    async def candidates(self, prefix: str) -> Candidates:
        self._request()
        self.reads += 1
        found = sorted(
            (Candidate(k, v, r) for k, (v, r) in self.keys.items()), key=lambda c: c.create_revision
        )
        revision = self.revision
        action, self.after_next_read = self.after_next_read, None
        if action is not None:
            action()
        return Candidates(revision, found)

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        return [KeyValue(k, v, r) for k, (v, r) in self.keys.items()]

    async def delete(self, key: bytes) -> None:
        self.remove(key)

    async def watch(
        self, starts: Mapping[str, int], progress_every: float
    ) -> AsyncGenerator[WatchBatch, None]:
        """Deletions under the watched prefixes from their start revisions, then live ones."""
        self._request()
        self.watches += 1
        delivered = {prefix: start - 1 for prefix, start in starts.items()}
        while True:
            for revision, key in self.deletions:
                for prefix, done in delivered.items():
                    if revision > done and key.startswith(prefix.encode()):
                        delivered[prefix] = revision
                        event = Event(key, None, revision)
                        yield WatchBatch(prefix, (event,), revision, Header(revision, 1))
            try:
                async with asyncio.timeout(progress_every), self._changed:
                    await self._changed.wait()
            except TimeoutError:  # quiet for a while: etcd's progress notification
                yield WatchBatch(None, (), 0, Header(self.revision, 1))


def _election(
    etcd: FakeEtcd,
    node: str = "node-a",
    on_change: Callable[[bool], None] = lambda _l: None,
    metrics: Metrics | None = None,
    on_other_leader: Callable[[int], None] = lambda _r: None,
) -> Election:
    """An election on `etcd`; `on_change` hears whether it leads, `on_other_leader` when it
    finds another daemon leading; `metrics` counts the keys of later formats it meets."""
    clock = asyncio.get_running_loop().time
    outage = Outage(clock=clock)
    return Election(
        client=etcd,
        own_prefix="/sm/",
        node=node,
        ttl=3,
        on_change=lambda leading, _fence, _revision: on_change(leading),
        on_other_leader=on_other_leader,
        reachability=outage,
        later_formats=LaterFormats(metrics or Metrics()),
        clock=clock,
    )


@contextlib.asynccontextmanager
async def _running(election: Election) -> AsyncIterator[None]:
    task = asyncio.create_task(election.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_leads_survives_a_transient_error_and_resigns() -> None:
    """A lone candidate leads; one failed renewal pauses its writes but not its key; resign
    removes the key. Each leader/follower line says why; the outage is one line each way."""
    etcd = FakeEtcd()
    changes: list[bool] = []
    election = _election(etcd, on_change=changes.append)
    with capture_logs() as logged:
        async with _running(election):
            fence = await asyncio.wait_for(election.wait_leader(), 5)
            assert election.leader_name() == "node-a"
            etcd.fail_next_requests = 1
            await until(lambda: election.fence() is None)
            await until(lambda: election.fence() is not None)
            assert election.fence() == fence  # same key, same place in line: no new campaign
            assert etcd.leases == 1
            assert changes == [True, False, True]
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


async def test_a_lost_lease_starts_a_new_campaign() -> None:
    """When etcd says the lease is gone the daemon stops writing and campaigns with a new one."""
    etcd = FakeEtcd()
    election = _election(etcd)
    async with _running(election):
        first = await asyncio.wait_for(election.wait_leader(), 5)
        etcd.lease_alive = False
        etcd.remove(first.key)  # etcd deletes the key with the lease
        await until(lambda: etcd.leases >= 2)
        etcd.lease_alive = True
        second = await asyncio.wait_for(election.wait_leader(), 5)
        assert second != first


async def test_an_earlier_run_under_our_name_is_removed_first() -> None:
    """A key left by an earlier run of this node is deleted instead of waited for."""
    etcd = FakeEtcd()
    etcd.put(A, b"node-a")
    etcd.put(B, b"node-b")
    election = _election(etcd)
    async with _running(election):
        await until(lambda: election.decided)
        assert election.fence() is None  # node-b now precedes us
        assert election.leader_name() == "node-b"
        assert A not in etcd.keys


async def test_candidate_keys_of_every_format() -> None:
    """Our key's value is format 2 (`{"format": 2, "node": ...}`); an earlier release's bare
    node name is read as its name, and an earlier run of ours in that format is removed; a key
    of a later format keeps its place in line, is never deleted, and is reported once."""
    etcd = FakeEtcd()
    newer = b"/sm/leader/0000000000000001"
    etcd.put(newer, b'{"format": 9, "node": "node-a", "more": [1]}')
    etcd.put(A, b"node-a")  # format 1: an earlier run of this node
    etcd.put(B, b"node-b")
    metrics = Metrics()
    election = _election(etcd, metrics=metrics)
    with capture_logs() as logged:
        async with _running(election):
            await until(lambda: election.decided)
            assert A not in etcd.keys
            assert etcd.keys[newer][0] == b'{"format": 9, "node": "node-a", "more": [1]}'
            assert election.leader_name() == (
                "unknown (a newer statemanager's key /sm/leader/0000000000000001)"
            )
            assert election.fence() is None
            ours = [v for k, (v, _) in etcd.keys.items() if k not in (newer, B)]
            assert ours == [candidate_value("node-a")] == [b'{"format": 2, "node": "node-a"}']
            etcd.remove(newer)
            await until(lambda: election.leader_name() == "node-b")
    reports = [e for e in logged if e["event"] == "record_unknown_format"]
    assert [(e["key"], e["format"], e["record"]) for e in reports] == [
        ("/sm/leader/0000000000000001", 9, "leader_key")
    ]
    sample = metrics.registry.get_sample_value(
        "statemanager_records_unknown_format_total", {"record": "leader_key"}
    )
    assert sample == 1


async def test_a_follower_waits_on_a_watch_not_a_poll() -> None:
    """A follower reads the candidates once, then only renews its lease (every third of the
    TTL) until its predecessor's key is deleted; then it reads again and leads at once."""
    etcd = FakeEtcd()
    etcd.put(B, b"node-b")
    election = _election(etcd)
    loop = asyncio.get_running_loop()
    async with _running(election):
        await until(lambda: election.decided)
        assert election.leader_name() == "node-b"
        reads, keep_alives = etcd.reads, etcd.keep_alives
        await asyncio.sleep(60)  # deliberately: a virtual minute passes, nothing changing
        assert etcd.reads == reads == 1
        assert 59 <= etcd.keep_alives - keep_alives <= 61  # ttl 3: one renewal a second
        assert etcd.watches == 1
        deleted_at = loop.time()
        etcd.remove(B)
        await asyncio.wait_for(election.wait_leader(), 5)
        assert loop.time() - deleted_at < 0.1
        assert etcd.reads == 2


async def test_a_deletion_between_the_read_and_the_watch_is_not_missed() -> None:
    """The watch starts just after the revision the candidates were read at: a predecessor
    that goes before the watch exists is still seen going."""
    etcd = FakeEtcd()
    etcd.put(B, b"node-b")
    etcd.after_next_read = lambda: etcd.remove(B)
    election = _election(etcd)
    async with _running(election):
        await asyncio.wait_for(election.wait_leader(), 5)
        assert etcd.reads == 2


async def test_a_follower_learns_of_a_new_leader_ahead_of_its_predecessor() -> None:
    """Three candidates: the last one watches its predecessor and the leader, so when the
    leader goes it knows the new leader's name and stays a follower. It is told of each
    other leader once (what it learnt as leader must go, even if it later leads again under
    the same key), and not of itself leading."""
    etcd = FakeEtcd()
    etcd.put(A, b"node-a")
    etcd.put(B, b"node-b")
    others: list[str | None] = []
    election = _election(etcd, "node-c", on_other_leader=lambda _r: others.append(leader()))
    leader = election.leader_name
    async with _running(election):
        await until(lambda: election.leader_name() == "node-a")
        etcd.remove(A)
        await until(lambda: election.leader_name() == "node-b")
        assert election.fence() is None
        etcd.remove(B)
        await asyncio.wait_for(election.wait_leader(), 5)
    assert others == ["node-a", "node-b"]


async def test_a_leader_whose_key_is_deleted_campaigns_again() -> None:
    """A leader watches its own key: deleted from outside (its lease still alive), it stops
    writing and campaigns with a new key at once, not at its next renewal."""
    etcd = FakeEtcd()
    election = _election(etcd)
    async with _running(election):
        first = await asyncio.wait_for(election.wait_leader(), 5)
        keep_alives = etcd.keep_alives
        etcd.remove(first.key)
        await until(lambda: etcd.leases == 2)
        assert etcd.keep_alives == keep_alives
        second = await asyncio.wait_for(election.wait_leader(), 5)
        assert second.key != first.key
