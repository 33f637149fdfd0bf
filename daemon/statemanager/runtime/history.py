"""Reads where each resource's transition history stands, and keeps it within its maximum age.

A resource's history is a run of records under its own prefix (core/history.py), written in
the transaction that writes the state they record. `HistoryHeads` finds the generation of the
newest record of many resources in one round trip; `HistoryLog` is what the writer knows of
them and makes each transaction's records from; `HistoryPruner` is the leader's periodic
pass that removes records older than `history.max_age_seconds` (the count bound, the last
`history.keep`, is kept by the writes themselves). Keys under the history prefix that no
daemon wrote are bad input to both: reported once each, left alone, never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

import structlog

from statemanager.core.errors import BadInput, Compacted, EtcdError, EtcdUnavailable
from statemanager.core.history import (
    Transition,
    decode,
    encode,
    history_key,
    history_prefix,
    history_range,
    newest_generation,
    record_ops,
)
from statemanager.core.keys import MAX_NAME_LENGTH, KeyLayout, Resource, WorkKey
from statemanager.core.planner import Change
from statemanager.core.ports import (
    TXN_LIMITS,
    Delete,
    Fence,
    Guard,
    KeyValue,
    Newest,
    Page,
    Put,
    TxnClient,
    TxnLimits,
)
from statemanager.core.records import LaterFormat, LaterFormatReporter
from statemanager.runtime.election import Leadership
from statemanager.runtime.metrics import Metrics

log = structlog.get_logger("statemanager.history")

NANOS = 1_000_000_000


class Head(NamedTuple):
    """Where a resource's history stands: its newest record's generation and the revision
    that record was put at (both 0: no record)."""

    generation: int
    revision: int


class HistoryHeads:
    """The generation of resources' newest history records, read from etcd, with every key
    under the history prefix that is no record reported as bad input (once per key)."""

    def __init__(self, store: Newest, layout: KeyLayout, metrics: Metrics) -> None:
        self._store = store
        self._layout = layout
        self._metrics = metrics
        self._reported: set[bytes] = set()

    async def newest(self, keys: Sequence[WorkKey]) -> dict[WorkKey, int]:
        """Per key, its newest record's generation (0: none), as `heads` reads it."""
        return {key: head.generation for key, head in (await self.heads(keys)).items()}

    async def heads(self, keys: Sequence[WorkKey]) -> dict[WorkKey, Head]:
        """Per key, its newest record's generation and revision, in one round trip unless
        someone else's keys sort above a resource's records (each costs one more read, below
        it)."""
        ranges = {key: history_range(self._layout, key) for key in keys}
        pending = list(zip(keys, await self._last(list(ranges.values())), strict=True))
        found: dict[WorkKey, Head] = {}
        while pending:
            below: list[tuple[WorkKey, bytes]] = []
            for key, last in pending:
                try:
                    generation = newest_generation(self._layout, key, last.key if last else None)
                except BadInput as exc:
                    assert last is not None  # no key is no history, never bad input
                    self.report(last.key, exc)
                    below.append((key, last.key))
                else:
                    found[key] = Head(generation, last.mod_revision if last else 0)
            ends = [(ranges[key][0], last) for key, last in below]
            pending = (
                list(zip([k for k, _ in below], await self._last(ends), strict=True))
                if below
                else []
            )
        return found

    async def empty(self, resource: Resource) -> bool:
        """Whether no key at all is under the history prefix of `resource`'s type."""
        start = f"{history_prefix(self._layout)}{resource.value}/".encode()
        return (await self._last([(start, start[:-1] + b"0")]))[0] is None

    async def _last(self, ranges: list[tuple[bytes, bytes]]) -> list[KeyValue | None]:
        found = await self._store.newest(ranges, 1, keys_only=True)
        return [kvs[0] if kvs else None for kvs in found]

    def report(self, key: bytes, exc: BadInput) -> None:
        """Report a key under the history prefix that is no record a daemon wrote (once)."""
        if key in self._reported:
            return
        self._reported.add(key)
        self._metrics.invalid_inputs.labels(exc.kind).inc()
        log.warning(
            "invalid_input", key=key.decode("utf-8", "replace"), kind=exc.kind, error=exc.detail
        )


class Generations(Protocol):
    """Where resources' histories stand in etcd (runtime/history.py, HistoryHeads)."""

    async def heads(self, keys: Sequence[WorkKey]) -> dict[WorkKey, Head]: ...

    async def empty(self, resource: Resource) -> bool: ...


class HistoryLog:
    """HistoryLog makes the history records of the leader's transactions: it knows the
    generation of each model's and package's newest record while this daemon leads under one
    fence, and reads what it does not know.

    Only the fenced leader writes model and package history, so what it learnt stays right
    while the fence does; a scenario's generation is read for each write (any daemon's gRPC
    service writes them, guarded on the state key). The writer asks it for each transaction's
    record puts and retention deletes, their guards, their cost, and tells it each
    transaction's outcome.

    A transaction planned on one etcd history may land on another (etcd restored or wiped
    while it is on its way): its state guards can pass there (a key absent in both, or at the
    same revision after one that went back), and its records would then be named from
    generations the restore took back, leaving a gap in what etcd holds. So each transaction
    is also guarded on the newest record its generations were counted from (the one put at
    the greatest revision, `anchor`): a restore that took back any of them took back that one
    too (etcd goes back to a revision below it), and a wipe takes every one.
    """

    def __init__(
        self, heads: Generations, layout: KeyLayout, keep: int, limits: TxnLimits = TXN_LIMITS
    ) -> None:
        self._heads = heads
        self._layout = layout
        self._keep = keep
        self._limits = limits
        # Per model and package, its newest record, and the types whose history was empty
        # (every generation 0 but those written since), under `_fence`.
        self._generations: dict[WorkKey, Head] = {}
        self._complete: set[Resource] = set()
        self._fence: Fence | None = None
        # A history key's bytes but for the resource's name.
        self._key_bytes = {
            r: len(history_key(layout, WorkKey(r, ""), 0).encode()) for r in Resource
        }
        self._longest_key = max(self._key_bytes.values()) + MAX_NAME_LENGTH
        # A record's bytes but for its texts: ids of 40 characters, the longest node name,
        # 20-digit numbers.
        self._record_bytes = len(
            encode(
                Transition(
                    "x" * 40, Resource.PACKAGE, "", None, None, None, None, 10**19, 10**19, 0,
                    "x" * 40, node="x" * MAX_NAME_LENGTH,
                )
            )
        )  # fmt: skip

    def leading(self, fence: Fence) -> None:
        """Leading goes on under `fence`: generations learnt under another one are forgotten
        (another leader may have written since)."""
        if fence != self._fence:
            self.forget()

    def forget(self) -> None:
        """Forget every generation learnt (etcd's history was replaced, or leadership moved)."""
        self._generations.clear()
        self._complete.clear()
        self._fence = None

    def cost(self, change: Change) -> tuple[int, int]:
        """Operations and bytes `change`'s history record adds to a transaction (the retention
        delete counted unless the generation is known to need none)."""
        verdict = change.verdict
        texts = (change.old.value, change.new, *((verdict.rule, verdict.reason) if verdict else ()))
        value = self._record_bytes + sum(len(t.encode()) for t in texts if t)
        key_bytes = self._key_bytes[change.key.resource] + len(change.key.name.encode())
        put = self._limits.put_bytes(b"", b"") + key_bytes  # a put's overhead and its key
        # The record's put, its guard (`guards`) and the failure branch's read of its key.
        ops, size = 1, self._limits.guarded_write_bytes(bytes(key_bytes), None) + value
        if self._next(change.key, unknown=self._keep + 1) > self._keep:
            ops, size = ops + 1, size + 2 * put  # a range delete: two keys
        return ops, size

    async def learn(self, changes: Sequence[Change], fence: Fence) -> None:
        """Learn the newest generation of every key `changes` record a transition of that is
        not known under `fence`."""
        if fence != self._fence:
            self.forget()
            self._complete = {
                r for r in (Resource.MODEL, Resource.PACKAGE) if await self._heads.empty(r)
            }
            self._fence = fence
        unknown = [
            c.key for c in changes if c.key.resource is Resource.SCENARIO or not self._next(c.key)
        ]
        if unknown:
            self._generations.update(await self._heads.heads(unknown))

    def ops(self, planned: Mapping[WorkKey, Transition]) -> list[Put | Delete]:
        """Each planned transition's history record, and the deletion of what it retires."""
        ops: list[Put | Delete] = []
        for key, t in planned.items():
            ops += record_ops(self._layout, key, self._next(key), encode(t), self._keep)
        return ops

    def guards(self, planned: Mapping[WorkKey, Transition]) -> list[Guard]:
        """A guard per planned record: its key is absent (each generation's key is new). A
        retry of a transaction that landed, its answer lost, then fails even when someone else
        has put the state keys back as they were (deleted again: the state guard passes). And
        the `anchor`'s: that record is still where it was learnt (the class docstring)."""
        guards = [Guard(self.record_key(key), 0) for key in planned]
        heads = [(head, key) for key in planned if (head := self._generations.get(key))]
        if any(head.generation for head, _ in heads):
            (generation, revision), key = max(heads, key=lambda h: h[0].revision)
            guards.append(Guard(history_key(self._layout, key, generation).encode(), revision))
        return guards

    def anchor_cost(self) -> tuple[int, int]:
        """Operations and bytes the anchor's guard adds to a transaction at most (its compare
        and the failure branch's read)."""
        return 1, self._limits.guarded_write_bytes(bytes(self._longest_key), None)

    def record_key(self, key: WorkKey) -> bytes:
        """The key `key`'s next record is written at (learnt first)."""
        return history_key(self._layout, key, self._next(key)).encode()

    def recorded(self, planned: Mapping[WorkKey, Transition], landed: int | None) -> None:
        """After a transaction: its records are the newest when it `landed` (at that
        revision); when whether it did is unknown (None), every generation is read again
        before the next write."""
        if landed is None:
            self.forget()
            return
        for key in planned:
            self._generations[key] = Head(self._next(key), landed)
        for key in [k for k in planned if k.resource is Resource.SCENARIO]:
            del self._generations[key]  # read again for its next write

    def _next(self, key: WorkKey, unknown: int = 0) -> int:
        """The generation `key`'s next record takes; `unknown` when that is not known yet."""
        if key in self._generations:
            return self._generations[key].generation + 1
        known = key.resource in self._complete and self._fence is not None
        return 1 if known else unknown


class PrunerStore(TxnClient, Protocol):
    """The pruner's etcd: a paged listing at one revision, and fenced transactions."""

    def pages(self, prefixes: Sequence[str], page_size: int = ...) -> AsyncIterator[Page]: ...


class HistoryPruner:
    """While this daemon leads, every `interval` seconds removes each resource's records older
    than `max_age` seconds: all but its newest, and the newest too once it records the state's
    deletion (else a name's history would outlive it for ever). Deletes are fenced on the
    leadership; a resource written meanwhile keeps its new records (only the keys read are
    deleted)."""

    def __init__(
        self,
        *,
        store: PrunerStore,
        layout: KeyLayout,
        heads: HistoryHeads,
        later_formats: LaterFormatReporter,
        max_age: float,
        interval: float,
        wall_clock: Callable[[], int],
    ) -> None:
        self._store = store
        self._layout = layout
        self._heads = heads
        self._later_formats = later_formats
        self._max_age_ns = int(max_age * NANOS)
        self._interval = interval
        self._wall_clock = wall_clock

    async def run(self, leadership: Leadership) -> None:
        """Prune every `interval` while leading (the first pass one interval after the start);
        an unreachable etcd waits for the next pass."""
        while True:
            await asyncio.sleep(self._interval)
            fence = await leadership.wait_leader()
            try:
                removed = await self.prune(fence)
            except (EtcdUnavailable, EtcdError, Compacted) as exc:
                log.warning("history_prune_deferred", error=str(exc))
            else:
                if removed:
                    log.info("history_pruned", records=removed)

    async def prune(self, fence: Fence) -> int:
        """One pass over the whole history, a page at a time: each page's expired records are
        deleted before the next page is read, so a pass holds one page and one resource's
        records. How many it removed; it stops when it finds itself deposed."""
        cutoff = self._wall_clock() - self._max_age_ns
        removed = 0
        run: list[tuple[bytes, Transition]] = []  # one resource's records, oldest first
        async for page in self._store.pages([history_prefix(self._layout)]):
            doomed: list[bytes] = []
            for kv in page.items:
                record = self._read(kv)
                if record is None:
                    continue
                if run and (run[0][1].resource, run[0][1].name) != (record.resource, record.name):
                    doomed += _expired(run, cutoff)
                    run = []
                run.append((kv.key, record))
            if not await self._delete(doomed, fence):
                return removed
            removed += len(doomed)
        last = _expired(run, cutoff)
        return removed + len(last) if await self._delete(last, fence) else removed

    async def _delete(self, keys: Sequence[bytes], fence: Fence) -> bool:
        """Delete `keys` in fenced transactions within etcd's limits; False when deposed."""
        for chunk in TXN_LIMITS.chunks([Delete(k) for k in keys], fence.key):
            if (await self._store.txn([], chunk, fence)).fenced:
                return False
        return True

    def _read(self, kv: KeyValue) -> Transition | None:
        try:
            found = decode(self._layout, kv.key, kv.value, kv.mod_revision)
        except BadInput as exc:
            self._heads.report(kv.key, exc)
            return None
        if isinstance(found, LaterFormat):
            self._later_formats.report(kv.key, found)
            return None
        return found


def _expired(run: Sequence[tuple[bytes, Transition]], cutoff: int) -> list[bytes]:
    """The keys of a resource's records older than `cutoff`: never its newest unless that one
    records a deletion."""
    if not run:
        return []
    *older, (newest_key, newest) = run
    doomed = [key for key, record in older if record.timestamp_ns < cutoff]
    if newest.to_state is None and newest.timestamp_ns < cutoff:
        doomed.append(newest_key)
    return doomed
