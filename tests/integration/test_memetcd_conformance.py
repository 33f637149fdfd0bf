"""The in-memory etcd (tests/support/memetcd.py) answers as a real etcd does.

One scripted sequence of operations runs against a fresh real etcd (raw v3 stubs for the
generic calls, the daemon's own EtcdClient adapter for the calls the daemon makes) and against
MemEtcd; each step's answer goes into a trace, and the two traces must be equal: revisions,
values, create/mod revisions and versions, compare outcomes, watch events, lease expiry, the
error family of compaction, future revisions and refusals, and the raft term and store after
a restart, a restore from a snapshot and a wipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import pytest
from aetcd import rpc
from etcdhistory import replace_history, save_snapshot

from statemanager.adapters.etcd import EtcdClient
from statemanager.adapters.etcderrors import classify
from statemanager.core.errors import Compacted, EtcdUnavailable, StateManagerError
from statemanager.core.ports import Delete, Fence, Guard, Put, WatchBatch
from statemanager.devtools.localetcd import LocalEtcd

from support.memetcd import Compare, LeasedPut, MemEtcd, Range, Record, StoreSnapshot

T = TypeVar("T")

Row = tuple[bytes, bytes, int, int, int]  # key, value, create revision, mod revision, version


class Client(Protocol):
    """The adapter calls the daemon makes, as both EtcdClient and MemEtcd offer them."""

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> Any: ...
    async def snapshot(self, prefixes: Sequence[str], page_size: int = ...) -> Any: ...
    async def grant_lease(self, ttl: int) -> int: ...
    async def keep_alive(self, lease_id: int) -> int: ...
    async def revoke_lease(self, lease_id: int) -> None: ...
    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int: ...
    async def first_created(self, prefix: str) -> tuple[bytes, bytes, int] | None: ...
    async def candidates(self, prefix: str) -> tuple[int, list[Any]]: ...
    async def get(self, key: bytes) -> Any: ...
    async def revision(self) -> int: ...
    async def header(self) -> Any: ...
    async def delete(self, key: bytes) -> None: ...
    async def list_prefix(self, prefix: str) -> Any: ...
    async def newest(
        self, ranges: Sequence[tuple[bytes, bytes]], limit: int = ..., keys_only: bool = ...
    ) -> Any: ...
    def watch(self, starts: Mapping[str, int], progress_every: float) -> Any: ...


class Driver(Protocol):
    """Generic etcd calls (put, range, txn with any compare, compact), the adapter, and what an
    operator does to the member (restart it, save a snapshot, restore it or wipe it)."""

    @property
    def client(self) -> Client: ...

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int: ...
    async def range(
        self, key: bytes, end: bytes | None = None, limit: int = 0, revision: int = 0
    ) -> tuple[list[Row], bool, int]: ...
    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Any], failure: Sequence[Any]
    ) -> tuple[bool, int, list[list[Row] | None]]: ...
    async def compact(self, revision: int) -> None: ...
    async def restart(self) -> None: ...
    async def save(self) -> None: ...
    async def replace(self, how: str) -> None: ...


def _rows(records: Sequence[Record]) -> list[Row]:
    return [(r.key, r.value, r.create_revision, r.mod_revision, r.version) for r in records]


class MemDriver:
    def __init__(self, mem: MemEtcd) -> None:
        self.client = mem
        self._mem = mem
        self._saved: StoreSnapshot | None = None

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        return self._mem.put_now(key, value, lease)

    async def range(
        self, key: bytes, end: bytes | None = None, limit: int = 0, revision: int = 0
    ) -> tuple[list[Row], bool, int]:
        result = self._mem.range_now(key, end, limit=limit, revision=revision)
        return _rows(result.records), result.more, result.count

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Any], failure: Sequence[Any]
    ) -> tuple[bool, int, list[list[Row] | None]]:
        result = self._mem.txn_now(compares, success, failure)
        return (
            result.succeeded,
            result.revision,
            [None if r is None else _rows(r) for r in result.responses],
        )

    async def compact(self, revision: int) -> None:
        self._mem.compact(revision)

    async def restart(self) -> None:
        self._mem.restart()

    async def save(self) -> None:
        self._saved = self._mem.snapshot_now()

    async def replace(self, how: str) -> None:
        self._mem.replace_history(self._saved if how == "restored" else None)


_RESULTS = {"==": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, "<": rpc.Compare.LESS}
_RESULTS[">"] = rpc.Compare.GREATER
_TARGETS = {
    "value": (rpc.Compare.VALUE, "value"),
    "version": (rpc.Compare.VERSION, "version"),
    "create": (rpc.Compare.CREATE, "create_revision"),
    "mod": (rpc.Compare.MOD, "mod_revision"),
}


class RealDriver:
    def __init__(
        self, channel: grpc.aio.Channel, client: EtcdClient, server: LocalEtcd, snapshot: Path
    ) -> None:
        self.client = client
        self._kv = rpc.KVStub(channel)
        self._server = server
        self._snapshot = snapshot

    async def restart(self) -> None:
        await asyncio.to_thread(self._server.stop)
        await asyncio.to_thread(self._server.start)

    async def save(self) -> None:
        await asyncio.to_thread(save_snapshot, self._server, self._snapshot)

    async def replace(self, how: str) -> None:
        await asyncio.to_thread(replace_history, self._server, how, self._snapshot)

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._kv, method)(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            # The adapter's own translation: the families the daemon would see.
            raise classify(exc.code(), exc.details() or "", method.lower()).error from None

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        resp = await self._call("Put", rpc.PutRequest(key=key, value=value, lease=lease))
        return int(resp.header.revision)

    async def range(
        self, key: bytes, end: bytes | None = None, limit: int = 0, revision: int = 0
    ) -> tuple[list[Row], bool, int]:
        req = rpc.RangeRequest(key=key, range_end=end or b"", limit=limit, revision=revision)
        resp = await self._call("Range", req)
        return [_row(kv) for kv in resp.kvs], bool(resp.more), int(resp.count)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Any], failure: Sequence[Any]
    ) -> tuple[bool, int, list[list[Row] | None]]:
        cmp = []
        for c in compares:
            target, field = _TARGETS[c.target]
            cmp.append(
                rpc.Compare(result=_RESULTS[c.op], target=target, key=c.key, **{field: c.operand})
            )
        req = rpc.TxnRequest(compare=cmp, success=_ops(success), failure=_ops(failure))
        resp = await self._call("Txn", req)
        responses: list[list[Row] | None] = [
            [_row(kv) for kv in r.response_range.kvs] if r.HasField("response_range") else None
            for r in resp.responses
        ]
        return bool(resp.succeeded), int(resp.header.revision), responses

    async def compact(self, revision: int) -> None:
        await self._call("Compact", rpc.CompactionRequest(revision=revision, physical=True))


def _row(kv: Any) -> Row:
    return (bytes(kv.key), bytes(kv.value), kv.create_revision, kv.mod_revision, kv.version)


def _ops(ops: Sequence[Any]) -> list[Any]:
    result = []
    for op in ops:
        if isinstance(op, Range):
            req = rpc.RangeRequest(key=op.key, range_end=op.range_end or b"")
            result.append(rpc.RequestOp(request_range=req))
        elif isinstance(op, Put):
            lease = op.lease if isinstance(op, LeasedPut) else 0
            put = rpc.PutRequest(key=op.key, value=op.value, lease=lease)
            result.append(rpc.RequestOp(request_put=put))
        else:
            result.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key)))
    return result


async def _outcome(call: Any) -> object:
    """The answer of an awaitable, or the error family (and reason) it raised."""
    try:
        return await call
    except StateManagerError as exc:
        return type(exc).__name__, getattr(exc, "reason", None)


async def _watch(
    client: Client,
    starts: Mapping[str, int],
    last: Mapping[str, int],
    timeout: float = 10.0,
    created: asyncio.Event | None = None,
) -> dict[str, list[tuple[bytes, bytes | None, int]]] | str:
    """Every event per prefix until each prefix reached its `last` revision (`last` may be
    filled in while the watch runs), after checking that no batch splits a revision; or the
    error family the watch raised. `created` is set at the first answer (etcd's "created")."""
    seen: dict[str, list[tuple[bytes, bytes | None, int]]] = {p: [] for p in starts}
    batches: dict[str, list[WatchBatch]] = {p: [] for p in starts}
    stream = client.watch(starts, progress_every=0.2)  # progress batches re-check `last`
    try:
        async with asyncio.timeout(timeout):
            async for batch in stream:
                if created is not None:
                    created.set()
                if batch.prefix is not None:
                    batches[batch.prefix].append(batch)
                    seen[batch.prefix] += [(e.key, e.value, e.revision) for e in batch.events]
                if len(last) == len(starts) and all(
                    (s[-1][2] if s else 0) >= last[p] for p, s in seen.items()
                ):
                    break
    except (Compacted, EtcdUnavailable) as exc:
        return type(exc).__name__
    finally:
        await stream.aclose()
    for prefix, got in batches.items():
        boundaries = [(b.events[0].revision, b.events[-1].revision) for b in got]
        for (_, end), (start, _) in itertools.pairwise(boundaries):
            assert end < start, f"{prefix}: a revision split across watch responses"
    return seen


Note = Callable[[str, object], None]


async def scenario(d: Driver) -> list[tuple[str, object]]:
    """The sequence both etcds run; each step appends (what, answer)."""
    trace: list[tuple[str, object]] = []

    def note(what: str, answer: object) -> None:
        trace.append((what, answer))

    await _reads_and_compares(d, note)
    await _adapter_calls(d, note)
    now = await _leases_and_watches(d, note)
    await _compaction(d, note, now)
    await _history_replaced(d, note)
    return trace


async def _reads_and_compares(d: Driver, note: Note) -> None:
    note("put a", await d.put(b"a", b"1"))
    note("put a again", await d.put(b"a", b"2"))
    for i in range(5):
        note(f"put p/{i}", await d.put(f"p/{i}".encode(), str(i).encode()))
    note("put q/x", await d.put(b"q/x", b"x"))
    note("range a", await d.range(b"a"))
    note("range a at 2", await d.range(b"a", revision=2))
    note("range p/ limit 2", await d.range(b"p/", b"p0", limit=2))
    note("range p/ at 4", await d.range(b"p/", b"p0", revision=4))
    note("range absent", await d.range(b"zz"))
    note("range future", await _outcome(d.range(b"a", revision=1000)))

    # Compares on every target, and a value compare against an absent key (false in etcd).
    for compare in [
        Compare(b"a", "value", "==", b"2"),
        Compare(b"a", "value", "!=", b"2"),
        Compare(b"a", "value", ">", b"1"),
        Compare(b"a", "version", "==", 2),
        Compare(b"a", "create", "==", 2),
        Compare(b"a", "mod", "<", 3),
        Compare(b"a", "mod", ">", 2),
        Compare(b"nope", "version", "==", 0),
        Compare(b"nope", "create", "==", 0),
        Compare(b"nope", "value", "==", b""),
        Compare(b"nope", "value", "!=", b"x"),
    ]:
        note(f"compare {compare}", await d.txn([compare], [], [Range(b"a")]))
    note(
        "txn success writes",
        await d.txn(
            [Compare(b"a", "version", "==", 2)],
            [Put(b"a", b"3"), Delete(b"p/0"), Put(b"n", b"new"), Range(b"a")],
            [],
        ),
    )
    note(
        "txn failure branch",
        await d.txn([Compare(b"a", "value", "==", b"x")], [], [Put(b"f", b"1")]),
    )
    note("txn deletes nothing", await d.txn([], [Delete(b"absent")], []))
    note("txn empty", await d.txn([], [], []))
    note("txn duplicate put", await _outcome(d.txn([], [Put(b"d", b"1"), Put(b"d", b"2")], [])))
    note("txn put+delete same key", await _outcome(d.txn([], [Put(b"d", b"1"), Delete(b"d")], [])))
    note("range after txns", await d.range(b"\x00", b"\x00"))


async def _adapter_calls(d: Driver, note: Note) -> None:
    """The calls the daemon makes, through EtcdClient on the real side."""
    c = d.client
    kv = await c.get(b"a")
    note("get a", kv)
    note("guarded txn ok", await c.txn([Guard(b"a", kv.mod_revision)], [Put(b"a", b"4")]))
    note("guarded txn stale", await c.txn([Guard(b"a", kv.mod_revision)], [Put(b"a", b"5")]))
    note("guard absent ok", await c.txn([Guard(b"g", 0)], [Put(b"g", b"1")]))
    kv = await c.get(b"a")
    note("value guard other", await c.txn([Guard(b"a", kv.mod_revision, b"x")], [Put(b"a", b"6")]))
    note("value guard ok", await c.txn([Guard(b"a", kv.mod_revision, kv.value)], [Put(b"a", b"7")]))
    note("revision", await c.revision())
    note("header", await c.header())
    await c.delete(b"g")
    await c.delete(b"g")  # absent: no new revision
    note("after deletes", (await c.revision(), await c.get(b"g")))
    note("list_prefix", await c.list_prefix("p/"))
    ranges = [(b"p/", b"p0"), (b"a", b"b"), (b"none/", b"none0")]
    note("newest", await c.newest(ranges))
    note("newest 2 keys only", await c.newest(ranges, 2, keys_only=True))
    note("newest all", await c.newest([(b"p/", b"p0")], 0))
    note("range delete", await c.txn([], [Delete(b"p/1", b"p/3")]))
    note("after range delete", await c.newest([(b"p/", b"p0")], 0))
    lease = await c.grant_lease(30)
    created = await c.create_if_absent(b"L/one", b"node-1", lease)
    note("create_if_absent", created)
    note("create_if_absent again", await c.create_if_absent(b"L/one", b"node-2", lease))
    other = await c.grant_lease(30)
    note("second candidate", await c.create_if_absent(b"L/two", b"node-2", other))
    note("first_created", await c.first_created("L/"))
    note("candidates", await c.candidates("L/"))
    note("keep_alive", await c.keep_alive(lease))
    fence = Fence(b"L/one", created)
    note("fenced txn ok", await c.txn([], [Put(b"s", b"1")], fence))
    await c.revoke_lease(lease)
    note("after revoke", await d.range(b"L/", b"L0"))
    note("first_created after revoke", await c.first_created("L/"))
    note("keep_alive revoked", await c.keep_alive(lease))
    note("revoke again", await _outcome(c.revoke_lease(lease)))
    note("fenced txn deposed", await c.txn([Guard(b"s", 0)], [Put(b"s", b"2")], fence))
    note(
        "txn over 128 ops",
        await _outcome(c.txn([], [Put(f"o{i}".encode(), b"") for i in range(129)])),
    )
    note("snapshot paged", await c.snapshot(["p/", "q/", "L/", "none/"], page_size=1))


async def _leases_and_watches(d: Driver, note: Note) -> int:
    """Lease expiry (the key goes at one revision, as a DELETE event), then a watch replaying
    history and following live puts. Returns the last revision."""
    c = d.client
    short = await c.grant_lease(2)
    expiring = await c.create_if_absent(b"E/k", b"v", short)
    note("expiring key created", expiring)
    deadline = asyncio.get_running_loop().time() + 10
    while await d.range(b"E/k") != ([], False, 0):
        assert asyncio.get_running_loop().time() < deadline, "lease never expired"
        await asyncio.sleep(0.1)
    expired_at = (await c.snapshot(["E/"]))[0]
    note("expired at", expired_at)

    # Watch: history from a revision, then live events written while it runs.
    starts = {"p/": 3, "q/": 1, "E/": 1, "a": 10}
    last: dict[str, int] = {}
    created = asyncio.Event()
    live = asyncio.create_task(_watch(c, starts, last, created=created))
    await asyncio.wait_for(created.wait(), 10)  # the puts below are then live events
    revs = [await d.put(b"q/live", b"1"), await d.put(b"p/9", b"9"), await d.put(b"a", b"6")]
    note("live puts", revs)
    last.update({"p/": revs[1], "q/": revs[0], "E/": expired_at, "a": revs[2]})
    note("watch history and live", await live)
    note("watch replay", await _watch(c, starts, last))
    note("progress answer", await _barrier(c, {"p/": revs[2] + 1, "q/": revs[2] + 1}))
    note("progress answer after events", await _answered_after_events(d))

    return revs[2]


async def _barrier(client: Client, starts: Mapping[str, int]) -> int:
    """The revision of a fresh stream's first answer to the stream-wide progress request (the
    watcher's barrier), skipping the "created" answers, which carry none."""
    async with asyncio.timeout(10), contextlib.aclosing(client.watch(starts, 60.0)) as stream:
        async for batch in stream:
            if batch.prefix is None and batch.revision:
                return batch.revision
    raise AssertionError("the watch ended")


async def _answered_after_events(d: Driver) -> bool:
    """Whether a stream-wide progress answer at or past a put's revision follows its event
    within 0.5 s on a stream whose periodic asks are 1.6 s apart by then (its fifth answer):
    the client asks at once after events, which the watcher holds until an answer."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10), contextlib.aclosing(d.client.watch({"P/": 0}, 60.0)) as stream:
        answers = 0
        async for batch in stream:
            answers += batch.prefix is None and batch.revision > 0
            if answers == 5:
                break
        put, start = await d.put(b"P/x", b"1"), loop.time()
        async for batch in stream:
            if batch.prefix is None and batch.revision >= put:
                return loop.time() - start < 0.5
    raise AssertionError("the watch ended")


async def _compaction(d: Driver, note: Note, now: int) -> None:
    """Reads and watches below the compacted revision fail as compacted; at it they work."""
    c = d.client
    await d.compact(now - 3)
    note("range below compaction", await _outcome(d.range(b"a", revision=now - 4)))
    note("range at compaction", await d.range(b"a", revision=now - 3))
    note("watch below compaction", await _watch(c, {"a": now - 4}, {"a": now}))
    note("watch at compaction", await _watch(c, {"a": now - 3}, {"a": now}))
    note("compact again", await _outcome(d.compact(now - 5)))
    note("compact future", await _outcome(d.compact(now + 5)))


async def _settled(call: Callable[[], Awaitable[T]]) -> T:
    """`call`'s answer once the member answers again after a restart (a few seconds at most:
    the client reconnects with backoff)."""
    async with asyncio.timeout(20):
        while True:
            try:
                return await call()
            except EtcdUnavailable:
                await asyncio.sleep(0.2)


async def _history_replaced(d: Driver, note: Note) -> None:
    """A restart raises the raft term and keeps everything; a restore from a snapshot brings
    back the store, history and leases as of the snapshot, its revision lower and its term a
    new cluster's; a wipe leaves nothing (revision 1)."""
    c = d.client
    lease = await c.grant_lease(30)
    note("leased key", await c.create_if_absent(b"H/leased", b"v", lease))
    saved = await d.put(b"H/a", b"1")
    await d.save()
    note("puts after the snapshot", [await d.put(b"H/b", b"2"), await d.put(b"H/a", b"3")])
    await d.restart()
    note("header after a restart", await _settled(c.header))
    note("keys after a restart", await _settled(lambda: d.range(b"H/", b"H0")))
    note("lease after a restart", await _settled(lambda: c.keep_alive(lease)))
    await d.replace("restored")
    note("header after a restore", await _settled(c.header))
    note("keys after a restore", await _settled(lambda: d.range(b"H/", b"H0")))
    note("lease after a restore", await _settled(lambda: c.keep_alive(lease)))
    note("put after a restore", await d.put(b"H/c", b"4"))
    note("watch after a restore", await _watch(c, {"H/": saved}, {"H/": saved + 1}))
    await d.replace("wiped")
    note("header after a wipe", await _settled(c.header))
    note("keys after a wipe", await _settled(lambda: d.range(b"\x00", b"\x00")))
    note("lease after a wipe", await _settled(lambda: c.keep_alive(lease)))


@pytest.fixture
async def real(server: LocalEtcd, tmp_path: Path) -> AsyncIterator[RealDriver]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.client_port}")
    client = EtcdClient([server.endpoint], timeout=5)
    try:
        yield RealDriver(channel, client, server, tmp_path / "saved.db")
    finally:
        await client.close()
        await channel.close()


async def test_memetcd_answers_as_a_real_etcd(real: RealDriver) -> None:
    """The same operations give the same revisions, values, compare outcomes, watch events,
    lease expiry, error families and raft terms, before and after the member is restarted,
    restored and wiped, on MemEtcd as on a fresh real etcd."""
    expected = await scenario(real)
    got = await scenario(MemDriver(MemEtcd()))
    for (what, want), (_, answer) in zip(expected, got, strict=True):
        assert answer == want, what
