"""An in-memory etcd for in-process tests, with etcd's semantics (like httpx.MockTransport).

`MemEtcd` is an MVCC store: one global revision, bumped once by each put, delete or
transaction that changes something; per key a create revision, mod revision and version;
transactions with compares and success/failure branches; ranges by prefix with a limit and at
a past revision; leases that expire on the event loop's clock (virtual under `looptime`) and
delete their keys in one revision; compaction; watches that replay history from a start
revision and then follow live changes, one response never splitting a revision.

It offers the methods of `statemanager.adapters.etcd.EtcdClient` that the daemon's components use
(snapshot, watch, txn, get, leases, create_if_absent, first_created, candidates, list_prefix,
newest, delete), with
the same result types and the same error families (`EtcdUnavailable`, `Compacted`,
`EtcdError`), so Watcher, Controller/StateWriter, Election, ReconcileSender and StateService
can be handed one. `tests/integration/test_memetcd_conformance.py` runs the same operations
against it and a real etcd and compares the answers.

Faults are injected by the test: `outage()` (every request fails and open watches break until
`restore()`), `lose_next_txn_response()` (commits, then the caller sees EtcdUnavailable),
`refuse_next_txn()` (etcd's refusal, nothing applied), `break_watches()`, `silence_watches()`
(open streams deliver nothing, not even progress notifications, until broken), `compact()`,
`before_next_txn(action)` (another writer commits first), `restart()` (the member restarts:
its raft term goes up), `replace_history()` (etcd wiped, or restored from a `snapshot_now()`
taken earlier: the revision goes back, the raft term starts again). `txn_log` records every
guarded transaction with the fence it carried, for invariants such as "no write without the
lead".
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Literal

from statemanager.adapters.etcd import FIRST_PROGRESS_ASK, collect, prefix_end
from statemanager.core.errors import Compacted, EtcdBusy, EtcdError, EtcdUnavailable, TooLarge
from statemanager.core.ports import (
    Candidate,
    Candidates,
    Delete,
    Event,
    Fence,
    Guard,
    Header,
    KeyValue,
    Page,
    Put,
    Snapshot,
    TxnResult,
    WatchBatch,
)

Target = Literal["value", "version", "create", "mod"]
Op = Literal["==", "!=", "<", ">"]

# etcd's default --max-txn-ops: compares, and each branch's operations, counted separately.
MAX_TXN_OPS = 128
# etcd's default --max-request-bytes; MemEtcd counts keys and values only (etcd counts the
# encoded request), so it refuses a little later than etcd does.
MAX_REQUEST_BYTES = 1536 * 1024
# The raft term of a new cluster's first leader (one member: it elects itself at once). Each
# restart of the member elects it again in the next term; a wiped or restored etcd is a new
# cluster and starts here again.
RAFT_TERM = 2
# etcd raises a shorter lease TTL to 3/2 of its election timeout (1 s by default), rounded up.
MIN_LEASE_TTL = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """A key as one revision of the store holds it (etcd's mvccpb.KeyValue)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    def kv(self) -> KeyValue:
        return KeyValue(self.key, self.value, self.mod_revision)


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """One compare of a transaction: `target` of `key` `op` `operand` (etcd's pb.Compare).

    Against an absent key, version, create and mod revisions are 0; a value compare is false.
    """

    key: bytes
    target: Target
    op: Op
    operand: bytes | int


def _covers(delete: Delete, key: bytes) -> bool:
    """Whether `delete` (one key, or a range) deletes `key`."""
    if delete.range_end is None:
        return key == delete.key
    return delete.key <= key and (delete.range_end == b"\x00" or key < delete.range_end)


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """A read inside a transaction: one key, or every key in [key, range_end)."""

    key: bytes
    range_end: bytes | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class LeasedPut(Put):
    """A put bound to a lease (0: none)."""

    lease: int = 0


TxnOp = Put | Delete | Range


@dataclasses.dataclass(frozen=True, slots=True)
class RawTxnResult:
    """`responses` holds, per operation of the branch taken, the records a Range read (puts and
    deletes answer None)."""

    succeeded: bool
    revision: int
    responses: tuple[list[Record] | None, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int  # the store's current revision (etcd's response header), not the read one
    records: list[Record]
    more: bool
    count: int


@dataclasses.dataclass(frozen=True, slots=True)
class TxnRecord:
    """One call of the adapter's `txn`, as etcd answered it (`lost`: the caller never heard)."""

    revision: int
    fence: Fence | None
    succeeded: bool
    fenced: bool
    written: tuple[bytes, ...]
    lost: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSnapshot:
    """What `etcdctl snapshot save` keeps of a store, as a token for `replace_history`: the
    revision it was taken at and the compacted revision then."""

    revision: int
    compacted: int


@dataclasses.dataclass(slots=True)
class _Lease:
    ttl: int
    deadline: float
    keys: set[bytes] = dataclasses.field(default_factory=set)
    timer: asyncio.TimerHandle | None = None


class _Stream:
    """One open watch stream: revisions committed since it caught up are queued to it."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = frozenset(prefixes)
        self.queue: asyncio.Queue[int | BaseException] = asyncio.Queue()
        self.silent = False


class MemEtcd:
    """An etcd cluster of one member, in memory. Use it inside a running event loop."""

    endpoint = "mem://etcd"

    def __init__(self, *, lease_ids_from: int = 0x694D_0000_0000) -> None:
        self._revision = 1  # an empty etcd answers revision 1
        self._compacted = 0
        self._term = RAFT_TERM
        self.replaced = 0  # how many times the history was replaced (wiped or restored)
        # key -> versions in revision order; a deleted key's last version is None at the
        # delete's revision. MVCC reads at a revision pick the newest version at or below it.
        self._versions: dict[bytes, list[tuple[int, Record | None]]] = {}
        self._sorted_keys: list[bytes] = []
        # revision -> events committed at it (etcd's watchable history), in commit order.
        self._history: dict[int, list[Event]] = {}
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(lease_ids_from)
        self._ttls: dict[int, int] = {}  # every lease ever granted: its TTL (for a restore)
        # A dict, not a set: streams are woken in the order they opened, whatever their ids,
        # so a simulation replays the same interleaving (tests/simulation).
        self._streams: dict[_Stream, None] = {}
        self._lagging: set[str] = set()  # prefixes whose watches hold back (lag_watches)
        self._down = False
        self._lose_txn_responses = 0
        self._refusals: list[EtcdError | EtcdBusy] = []
        self.requests = 0  # every request answered or failed: a cheap busy-loop detector
        self.txn_log: list[TxnRecord] = []  # every guarded txn that reached the store
        self._before_txn: list[Callable[[], object]] = []
        self._lost_keep_alives: dict[int, Callable[[], object]] = {}

    # -- faults -------------------------------------------------------------------------------

    def outage(self) -> None:
        """etcd unreachable: every request raises EtcdUnavailable and open watches break, until
        `restore()`. Leases keep their deadlines (they expire during an outage as in etcd)."""
        self._down = True
        self.break_watches()

    def restore(self) -> None:
        self._down = False

    def lose_next_txn_response(self, count: int = 1) -> None:
        """The next `count` transactions commit, but their callers see EtcdUnavailable (a
        deadline that passed after etcd applied the request)."""
        self._lose_txn_responses += count

    def refuse_next_txn(self, error: EtcdError | EtcdBusy | None = None) -> None:
        """The next transaction is refused (nothing applied); by default as etcd refuses writes
        while its space quota alarm is raised."""
        refusal = EtcdBusy("nospace", "etcd refused txn: mvcc: database space exceeded")
        self._refusals.append(error or refusal)

    def before_next_txn(self, action: Callable[[], object]) -> None:
        """Run `action` (say, another writer's put) just before the next guarded txn applies:
        the race a guard or a fence exists for."""
        self._before_txn.append(action)

    def lose_next_keep_alive(self, lease_id: int, then: Callable[[], object]) -> None:
        """The next keep-alive of `lease_id` renews it, but its caller sees EtcdUnavailable (an
        answer past the deadline); `then` (say, another writer's put) runs right after."""
        self._lost_keep_alives[lease_id] = then

    def break_watches(self) -> None:
        """Every open watch stream raises EtcdUnavailable, as when etcd restarts."""
        for stream in self._streams:
            stream.queue.put_nowait(EtcdUnavailable("etcd watch failed: UNAVAILABLE"))

    def lag_watches(self, prefix: str, lagging: bool = True) -> None:
        """Watches of `prefix` deliver nothing while `lagging`, then catch up, after other
        prefixes' later revisions: how etcd's watches on one stream reorder while catching up."""
        if lagging:
            self._lagging.add(prefix)
            return
        self._lagging.discard(prefix)
        for stream in self._streams:
            stream.queue.put_nowait(self._revision)

    def silence_watches(self) -> None:
        """Open streams go quiet (a half-open connection): no events, no progress."""
        for stream in self._streams:
            stream.silent = True

    def restart(self) -> None:
        """The member restarts: open watches break, it elects itself in the next raft term,
        and as the new leader it renews every lease for its whole TTL (etcd's lessor does on
        promotion). Keys, revisions and history stay."""
        self.break_watches()
        self._term += 1
        for lease in self._leases.values():
            lease.deadline = self._loop_time() + lease.ttl
            self._arm(lease)

    def snapshot_now(self) -> StoreSnapshot:
        """A snapshot of the store now (`etcdctl snapshot save`), for `replace_history`."""
        return StoreSnapshot(self._revision, self._compacted)

    def replace_history(self, snapshot: StoreSnapshot | None, keep_term: bool = False) -> None:
        """etcd wiped (`snapshot` None: empty, revision 1) or restored from `snapshot` (every
        key, revision and event as of then; what came after is gone), as a new cluster: open
        watches break and the raft term starts again at RAFT_TERM. A restore brings back the
        leases its keys were bound to, each renewed for its whole TTL (etcd's lessor does when
        the restored member becomes leader); a wipe has none. History this store compacted
        after the snapshot is not kept, so the restored store answers as compacted up to
        where it no longer has it. `keep_term`: the new cluster's term is the old one's (a
        cluster restored before it ever changed leader, or whose elections since have brought
        it there): only revisions tell the history was replaced."""
        self.break_watches()
        self._term = self._term if keep_term else RAFT_TERM
        self.replaced += 1
        revision = snapshot.revision if snapshot is not None else 1
        for lease_id in list(self._leases):
            lease = self._leases.pop(lease_id)
            if lease.timer is not None:
                lease.timer.cancel()
        for key in list(self._versions):
            kept = [v for v in self._versions[key] if v[0] <= revision]
            if kept:
                self._versions[key] = kept
            else:
                del self._versions[key]
        self._sorted_keys = sorted(self._versions)
        self._history = {rev: ev for rev, ev in self._history.items() if rev <= revision}
        self._revision = revision
        compacted = 0 if snapshot is None else max(snapshot.compacted, self._compacted)
        self._compacted = min(compacted, revision)
        for key in self._sorted_keys:
            record = self._latest(key)
            if record is not None and record.lease:
                if record.lease not in self._leases:
                    ttl = self._ttls[record.lease]
                    self._leases[record.lease] = _Lease(ttl, self._loop_time() + ttl)
                    self._arm(self._leases[record.lease])
                self._leases[record.lease].keys.add(key)

    # -- the store ----------------------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._revision

    def watching(self, prefix: str) -> bool:
        """Whether an open watch stream covers `prefix` now."""
        return any(prefix in stream.prefixes for stream in self._streams)

    @property
    def current_term(self) -> int:
        """The raft term etcd answers with now."""
        return self._term

    @property
    def compacted_revision(self) -> int:
        return self._compacted

    def _enter(self) -> None:
        self.requests += 1
        if self._down:
            raise EtcdUnavailable("etcd request failed: UNAVAILABLE: mem etcd is down")
        self._expire_due_leases()

    def _at(self, key: bytes, revision: int) -> Record | None:
        versions = self._versions.get(key)
        if not versions:
            return None
        i = bisect.bisect_right(versions, revision, key=lambda v: v[0])
        return versions[i - 1][1] if i else None

    def _latest(self, key: bytes) -> Record | None:
        versions = self._versions.get(key)
        return versions[-1][1] if versions else None

    def _keys_in(self, key: bytes, range_end: bytes | None) -> list[bytes]:
        if range_end is None:
            return [key] if key in self._versions else []
        lo = bisect.bisect_left(self._sorted_keys, key)
        if range_end == b"\x00":  # etcd: every key from `key` on
            return self._sorted_keys[lo:]
        hi = bisect.bisect_left(self._sorted_keys, range_end)
        return self._sorted_keys[lo:hi]

    def range_now(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        limit: int = 0,
        revision: int = 0,
        sort_by_create: bool = False,
    ) -> RangeResult:
        """etcd's Range: keys in order (or by ascending create revision), at `revision` (0: now).

        Raises Compacted below the compacted revision, EtcdUnavailable above the current one
        (etcd's "future revision", which the real adapter reports as unavailable).
        """
        if revision and revision < self._compacted:
            raise Compacted(self._compacted)
        if revision > self._revision:
            raise EtcdUnavailable("etcd range failed: OUT_OF_RANGE: future revision")
        at = revision or self._revision
        found = [r for k in self._keys_in(key, range_end) if (r := self._at(k, at)) is not None]
        if sort_by_create:
            found.sort(key=lambda r: r.create_revision)
        page = found[:limit] if limit else found
        return RangeResult(self._revision, page, len(page) < len(found), len(found))

    def txn_now(
        self, compares: Sequence[Compare], success: Sequence[TxnOp], failure: Sequence[TxnOp]
    ) -> RawTxnResult:
        """etcd's Txn, applied atomically: at most one new revision for the whole branch."""
        if len(compares) > MAX_TXN_OPS or max(len(success), len(failure)) > MAX_TXN_OPS:
            raise TooLarge("too_many_ops", "etcd refused txn: too many operations in txn request")
        size = sum(
            len(op.key) + len(op.value) for op in (*success, *failure) if isinstance(op, Put)
        )
        if size > MAX_REQUEST_BYTES:
            raise TooLarge("request_too_large", "etcd refused txn: request is too large")
        for branch in (success, failure):
            puts = [op.key for op in branch if isinstance(op, Put)]
            deletes = [op for op in branch if isinstance(op, Delete)]
            if len(puts) != len(set(puts)) or any(_covers(d, k) for d in deletes for k in puts):
                raise EtcdError("etcd refused txn: INVALID_ARGUMENT: duplicate key given in txn")
        succeeded = all(self._holds(c) for c in compares)
        # Operations apply in order at the next revision; a Range sees the writes before it.
        rev = self._revision + 1
        staged: dict[bytes, Record | None] = {}
        responses: list[list[Record] | None] = []
        for op in success if succeeded else failure:
            if isinstance(op, Range):
                responses.append(self._read_staged(op, staged))
                continue
            responses.append(None)
            if isinstance(op, Delete):
                self._stage_delete(op, staged)
                continue
            old = staged[op.key] if op.key in staged else self._latest(op.key)
            lease = op.lease if isinstance(op, LeasedPut) else 0
            if lease and lease not in self._leases:
                raise EtcdUnavailable("etcd txn failed: NOT_FOUND: requested lease not found")
            created = old.create_revision if old is not None else rev
            version = old.version + 1 if old is not None else 1
            staged[op.key] = Record(op.key, op.value, created, rev, version, lease)
        if staged:
            self._commit(staged)
        return RawTxnResult(succeeded, self._revision, tuple(responses))

    def _stage_delete(self, op: Delete, staged: dict[bytes, Record | None]) -> None:
        """Stage the deletion of every key `op` covers that exists (staged or stored)."""
        keys = self._keys_in(op.key, op.range_end) if op.range_end else [op.key]
        for key in keys:
            if (staged[key] if key in staged else self._latest(key)) is not None:
                staged[key] = None

    def _read_staged(self, op: Range, staged: Mapping[bytes, Record | None]) -> list[Record]:
        keys = set(self._keys_in(op.key, op.range_end))
        if op.range_end is None:
            keys |= {op.key} & staged.keys()
        else:
            keys |= {
                k for k in staged if op.key <= k and (op.range_end == b"\x00" or k < op.range_end)
            }
        found = (staged[k] if k in staged else self._latest(k) for k in sorted(keys))
        return [r for r in found if r is not None]

    def _holds(self, compare: Compare) -> bool:
        record = self._latest(compare.key)
        if record is None and compare.target == "value":
            return False  # etcd: a value compare against an absent key is false
        actual: bytes | int
        if compare.target == "value":
            actual = record.value if record is not None else b""
        elif compare.target == "version":
            actual = record.version if record is not None else 0
        elif compare.target == "create":
            actual = record.create_revision if record is not None else 0
        else:
            actual = record.mod_revision if record is not None else 0
        operand = compare.operand
        if type(actual) is not type(operand):
            raise TypeError(f"compare {compare.target} with {type(operand).__name__}")
        if compare.op == "==":
            return actual == operand
        if compare.op == "!=":
            return actual != operand
        if compare.op == "<":
            return actual < operand  # type: ignore[operator]
        return actual > operand  # type: ignore[operator]

    def _commit(self, changes: Mapping[bytes, Record | None]) -> None:
        """Apply records (None: a deletion of an existing key) at the next revision."""
        self._revision += 1
        rev = self._revision
        events: list[Event] = []
        for key, record in changes.items():
            old = self._latest(key)
            if old is not None and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            if key not in self._versions:
                bisect.insort(self._sorted_keys, key)
                self._versions[key] = []
            self._versions[key].append((rev, record))
            if record is not None and record.lease:
                self._leases[record.lease].keys.add(key)
            events.append(Event(key, None if record is None else record.value, rev))
        self._history[rev] = events
        for stream in self._streams:
            stream.queue.put_nowait(rev)

    # -- simple writes (tests fill the store with these) --------------------------------------

    def put_now(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Put one key; returns the new revision."""
        self._enter()
        self.txn_now([], [LeasedPut(key, value, lease)], [])
        return self._revision

    def delete_now(self, key: bytes, range_end: bytes | None = None) -> int:
        """Delete one key (or a range); returns the revision (unchanged when nothing existed)."""
        self._enter()
        keys = [k for k in self._keys_in(key, range_end) if self._latest(k) is not None]
        if keys:
            self._commit(dict.fromkeys(keys))
        return self._revision

    def compact(self, revision: int) -> None:
        """Forget history below `revision`: reads and watches from before it raise Compacted."""
        self._enter()
        if revision > self._revision:
            raise EtcdUnavailable("etcd compact failed: OUT_OF_RANGE: future revision")
        if revision <= self._compacted:
            raise Compacted(self._compacted)
        self._compacted = revision
        for rev in [r for r in self._history if r < revision]:
            del self._history[rev]

    # -- leases -------------------------------------------------------------------------------

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _arm(self, lease: _Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        loop = asyncio.get_running_loop()
        lease.timer = loop.call_at(lease.deadline, self._expire_due_leases)

    def _expire_due_leases(self) -> None:
        now = self._loop_time()
        for lease_id, lease in list(self._leases.items()):
            if lease.deadline <= now:
                self._revoke(lease_id)

    def lease_of(self, key: bytes) -> int:
        """The lease `key` is bound to now (0: none, or no such key)."""
        record = self._latest(key)
        return record.lease if record is not None else 0

    def revoke_now(self, lease_id: int) -> None:
        """Revoke a lease at once, as its expiry or another client's revoke would."""
        self._revoke(lease_id)

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        if lease.timer is not None:
            lease.timer.cancel()
        live = sorted(k for k in lease.keys if self._latest(k) is not None)
        if live:  # etcd deletes a lease's keys in one revision
            self._commit(dict.fromkeys(live))

    # -- the EtcdClient interface -------------------------------------------------------------

    async def _request(self) -> None:
        """Each request is a scheduling point, as a network round trip is."""
        await asyncio.sleep(0)
        self._enter()

    async def close(self) -> None:
        for stream in self._streams:
            stream.queue.put_nowait(EtcdUnavailable("client closed"))

    async def revision(self) -> int:
        await self._request()
        return self._revision

    async def header(self) -> Header:
        await self._request()
        return self._header()

    def _header(self) -> Header:
        return Header(self._revision, self._term)

    async def get(self, key: bytes) -> KeyValue | None:
        await self._request()
        records = self.range_now(key).records
        return records[0].kv() if records else None

    async def snapshot(self, prefixes: Sequence[str], page_size: int = 1000) -> Snapshot:
        return await collect(self.pages(prefixes, page_size))

    async def pages(
        self, prefixes: Sequence[str], page_size: int = 1000
    ) -> AsyncGenerator[Page, None]:
        """Every prefix at one revision, `page_size` keys a page. Each page is one read and a
        scheduling point, so a fault or a compaction can land between two pages and the next
        read raises, as a real listing does."""
        revision = 0
        for prefix in prefixes:
            start = prefix.encode()
            while True:
                await self._request()
                end = prefix_end(prefix.encode())
                found = self.range_now(start, end, limit=page_size, revision=revision)
                revision = revision or found.revision
                yield Page(prefix, revision, [r.kv() for r in found.records])
                if not found.more or not found.records:
                    break
                start = found.records[-1].key + b"\x00"

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        return (await self.snapshot([prefix])).listing[prefix]

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult:
        """The adapter's guarded transaction: mod revision guards and an optional fence."""
        await self._request()
        if self._refusals:
            raise self._refusals.pop(0)
        if self._before_txn:
            self._before_txn.pop(0)()
        compares = [Compare(g.key, "mod", "==", g.mod_revision) for g in guards]
        compares += [Compare(g.key, "value", "==", g.value) for g in guards if g.value is not None]
        failure: list[TxnOp] = [Range(g.key) for g in guards]
        if fence is not None:
            compares.append(Compare(fence.key, "create", "==", fence.create_revision))
            failure.append(Range(fence.key))
        result = self.txn_now(compares, ops, failure)
        lost = self._lose_txn_responses > 0
        written = tuple(op.key for op in ops) if result.succeeded else ()
        self.txn_log.append(
            TxnRecord(result.revision, fence, result.succeeded, False, written, lost)
        )
        if lost:
            self._lose_txn_responses -= 1
            raise EtcdUnavailable("etcd txn failed: DEADLINE_EXCEEDED (applied, answer lost)")
        if result.succeeded:
            return TxnResult(True, result.revision, {})
        current: dict[bytes, KeyValue | None] = {}
        for guard, records in zip(guards, result.responses, strict=False):
            current[guard.key] = records[0].kv() if records else None
        fenced = False
        if fence is not None:
            records = result.responses[len(guards)]
            fenced = not records or records[0].create_revision != fence.create_revision
            self.txn_log[-1] = dataclasses.replace(self.txn_log[-1], fenced=fenced)
        return TxnResult(False, result.revision, current, fenced)

    async def newest(
        self, ranges: Sequence[tuple[bytes, bytes]], limit: int = 1, keys_only: bool = False
    ) -> list[list[KeyValue]]:
        """etcd's Range sorted by key descending with `limit` (0: all), per range, at one
        revision (`keys_only`: values empty)."""
        await self._request()
        found = []
        for start, end in ranges:
            records = self.range_now(start, end).records[::-1][: limit or None]
            found.append([KeyValue(r.key, b"" if keys_only else r.value, r.mod_revision)
                          for r in records])  # fmt: skip
        return found

    async def delete(self, key: bytes) -> None:
        await self._request()
        self.delete_now(key)

    async def grant_lease(self, ttl: int) -> int:
        await self._request()
        lease_id = next(self._lease_ids)
        ttl = max(ttl, MIN_LEASE_TTL)
        self._ttls[lease_id] = ttl
        lease = _Lease(ttl, self._loop_time() + ttl)
        self._leases[lease_id] = lease
        self._arm(lease)
        return lease_id

    async def keep_alive(self, lease_id: int) -> int:
        """Renew once; the remaining TTL, 0 when the lease is gone (as etcd answers)."""
        await self._request()
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.deadline = self._loop_time() + lease.ttl
        self._arm(lease)
        then = self._lost_keep_alives.pop(lease_id, None)
        if then is not None:
            then()
            raise EtcdUnavailable("etcd keepalive failed: DEADLINE_EXCEEDED (renewed, answer lost)")
        return lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        await self._request()
        if lease_id not in self._leases:
            raise EtcdUnavailable("etcd lease failed: NOT_FOUND: requested lease not found")
        self._revoke(lease_id)

    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int:
        await self._request()
        result = self.txn_now(
            [Compare(key, "create", "==", 0)], [LeasedPut(key, value, lease_id)], [Range(key)]
        )
        if result.succeeded:
            return result.revision
        records = result.responses[0]
        assert records is not None
        return records[0].create_revision

    async def first_created(self, prefix: str) -> Candidate | None:
        await self._request()
        start = prefix.encode()
        records = self.range_now(start, prefix_end(start), limit=1, sort_by_create=True).records
        if not records:
            return None
        return Candidate(records[0].key, records[0].value, records[0].create_revision)

    async def candidates(self, prefix: str) -> Candidates:
        await self._request()
        start = prefix.encode()
        found = self.range_now(start, prefix_end(start), sort_by_create=True)
        return Candidates(
            found.revision, [Candidate(r.key, r.value, r.create_revision) for r in found.records]
        )

    async def watch(
        self,
        starts: Mapping[str, int],
        progress_every: float,
        together: Sequence[Sequence[str]] = (),
    ) -> AsyncGenerator[WatchBatch, None]:
        """One stream for every prefix, from its start revision: history first, then live.

        `together` (prefixes etcd watches as one range) changes nothing here: each prefix's
        events come as batches of their own, which etcd may do for one range too (a response
        can end at any revision boundary); keys between them, which the adapter drops, are
        not delivered either.

        Each batch is one prefix's events of one revision. A created watch yields a batch
        without events (prefix None, revision 0). Quiet periods starting at FIRST_PROGRESS_ASK
        and doubling up to `progress_every` yield the answer to the adapter's stream-wide
        progress request (prefix None, the current revision), and so do events (the adapter
        asks at once after them: the answer's revision is the newest delivered), unless a
        prefix of the stream is lagging: etcd ignores the request while a watch is catching up,
        and the answer owed comes once none is. Ends only by raising: EtcdUnavailable (broken,
        closed, down), Compacted (a start below history).
        """
        await self._request()
        stream = _Stream(list(starts))
        self._streams[stream] = None
        try:
            ranges = {p: (p.encode(), prefix_end(p.encode())) for p in starts}
            # Per prefix, the next revision to deliver (0: from now on, as etcd reads it).
            next_rev = {p: start or self._revision + 1 for p, start in starts.items()}
            for _ in starts:
                yield WatchBatch(None, (), 0, self._header())  # etcd's "created" response
            caught_up = self._revision
            quiet = min(FIRST_PROGRESS_ASK, progress_every)
            owed = False  # a progress answer was asked for, or events no answer has followed
            while True:
                # History first, then each revision committed since: in order, whole revisions.
                for prefix, (lo, hi) in ranges.items():
                    if prefix in self._lagging:
                        continue
                    if next_rev[prefix] < self._compacted:
                        raise Compacted(self._compacted)
                    for rev in range(next_rev[prefix], caught_up + 1):
                        events = tuple(e for e in self._history.get(rev, ()) if lo <= e.key < hi)
                        next_rev[prefix] = rev + 1
                        if events:
                            owed = True
                            yield WatchBatch(prefix, events, rev, self._header())
                if owed and not stream.prefixes & self._lagging:  # every watch is caught up
                    owed = False
                    yield WatchBatch(None, (), caught_up, self._header())
                item = await self._next(stream, quiet)
                if isinstance(item, BaseException):
                    raise item
                if item is None:  # the adapter asks for progress
                    quiet = min(quiet * 2, progress_every)
                    owed = True
                else:
                    caught_up = max(caught_up, item)
        finally:
            self._streams.pop(stream, None)

    async def _next(self, stream: _Stream, quiet: float) -> int | BaseException | None:
        """The next committed revision or failure for `stream`; None after `quiet` seconds
        without one (a progress notification is due). A silent stream waits for a failure
        only."""
        while True:
            try:
                async with asyncio.timeout(None if stream.silent else quiet):
                    item = await stream.queue.get()
            except TimeoutError:
                if stream.silent:
                    continue
                return None
            if stream.silent and not isinstance(item, BaseException):
                continue
            return item
