"""The etcd adapter's facades: the only modules that import aetcd are this one and the
session under it (`etcdsession.py`).

It drives aetcd's generated etcd v3 stubs (`aetcd.rpc`) on a grpc.aio channel of its own,
because the high-level client cannot read several prefixes at one revision, page a listing,
expose watch response boundaries or progress notifications. Callers see small frozen values
and the error families of `statemanager.core.errors`, never protobuf or grpc types. Three thin
facades, `EtcdKV`, `EtcdLeases` and `EtcdWatches`, turn our values into requests and answers
into our values; `EtcdClient` is the three on one session. Endpoints, TLS, the auth token and
what happens when a request fails (the retry policy) are the session's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import grpc
import structlog
from aetcd import rpc

from statemanager.adapters.etcdsession import (
    DELETE_RANGE,
    LEASE_GRANT,
    LEASE_KEEP_ALIVE,
    LEASE_REVOKE,
    MAX_RESPONSE_BYTES,
    RANGE,
    TXN,
    WATCH,
    EtcdSession,
    RefusalObserver,
)
from statemanager.adapters.tls import TlsFiles
from statemanager.core.errors import Compacted, EtcdUnavailable, TooLarge
from statemanager.core.ports import (
    TXN_LIMITS,
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

log = structlog.get_logger("statemanager.etcd")


# A listing page holds at most this many keys, and fewer when its response would be over the
# receive limit: etcd cannot cap a page by bytes, so a too-large page is asked again, halved.
# Large, because etcd (3.5) counts every key from a page's start to the prefix's end to fill in
# the response's `count`, whatever the limit: listing N keys costs etcd N²/(2 × PAGE_KEYS) key
# visits. At 1,000,000 containers one 1,000-key page from the start took etcd 0.7-1 s, and
# the 1,000 pages made the cold start take many minutes; 10,000 divides that by ten. A page of
# container values is ~6 MB, well under the receive limit.
PAGE_KEYS = 10_000
# ... and more while much of the prefix is left: a page of at least 1/PAGE_SHARE of the keys
# left. etcd's time for a page grows with the keys left (~0.7 µs each, counting), the daemon's
# with the keys in the page (~30 µs each, parsing and indexing): pages this large keep etcd's
# counting shorter than the daemon's work on the page before, so with the read-ahead the
# daemon never waits on it. At 1,000,000 containers etcd takes ~0.7 s for a first 10,000-key
# page and the daemon ~0.3 s to apply one: with fixed pages it would wait through most of the
# listing's first half.
PAGE_SHARE = 40
MAX_PAGE_KEYS = 50_000  # ~30 MB of container values: under the receive limit, halved if not

# Seconds after a watch stream opens before the first stream-wide progress request, and
# between asks while events wait for an answer: the watcher applies no event until an answer
# comes after it (runtime/watcher.py), and etcd ignores an ask while a watch is catching up.
FIRST_PROGRESS_ASK = 0.05
# Seconds at least between two asks for events: at 500 events a second an ask per event
# nearly doubled the daemon's CPU per no-op (bench's noop_cpu_ms); events within this of the
# last ask wait for the next one.
PROGRESS_ASK_SPACING = 0.005


class ConnectionSettings(Protocol):
    """ConnectionSettings is what `EtcdClient.from_settings` reads; the application's `[etcd]`
    settings section (app/config.py) is one."""

    @property
    def endpoints(self) -> tuple[str, ...]: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def tls(self) -> TlsFiles | None: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's clientv3 rule)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take an abandoned request's outcome, so an error nobody awaits is not reported as
    never retrieved."""
    if not future.cancelled():
        future.exception()


async def collect(pages: AsyncIterator[Page]) -> Snapshot:
    """A whole listing from its pages."""
    revision, listing = 0, dict[str, list[KeyValue]]()
    async for page in pages:
        revision = page.revision
        listing.setdefault(page.prefix, []).extend(page.items)
    return Snapshot(revision, listing)


class _Facade:
    """A view of the session for one of etcd's services: it builds requests from our values
    and reads our values from the answers; failures and retries are the session's."""

    def __init__(self, session: EtcdSession) -> None:
        self._session = session


class EtcdKV(_Facade):
    """EtcdKV reads keys, applies guarded transactions and keeps the election's keys."""

    async def revision(self) -> int:
        """The store's current revision (a cheap health check)."""
        return (await self.header()).revision

    async def header(self) -> Header:
        """Where etcd stands now, from a linearizable read (never a lagging member's view)."""
        resp = await self._session.call(RANGE, rpc.RangeRequest(key=b"\x00", limit=1))
        return _header(resp)

    async def get(self, key: bytes) -> KeyValue | None:
        """Get returns `key`'s value and revisions, or None when it does not exist."""
        resp = await self._session.call(RANGE, rpc.RangeRequest(key=key))
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def snapshot(self, prefixes: Sequence[str], page_size: int = PAGE_KEYS) -> Snapshot:
        """Every prefix at one revision (`pages`, collected)."""
        return await collect(self.pages(prefixes, page_size))

    async def pages(
        self, prefixes: Sequence[str], page_size: int = PAGE_KEYS
    ) -> AsyncGenerator[Page, None]:
        """Pages lists every prefix at one revision, a page of at most `page_size` keys at a
        time, so no response grows without bound and each page can be let go before the next.

        A page over the receive limit is asked again with half the keys, down to one (later
        pages keep that size); a page is larger while much of its prefix is left (PAGE_SHARE).
        The next page is asked for before this one is handed over, so etcd reads it while the
        caller applies this one. Raises Compacted when the revision is compacted between pages
        (list again), TooLarge only when a single key's response is over the limit.
        """
        cursors = deque((p, p.encode(), prefix_end(p.encode())) for p in prefixes)
        if not cursors:
            return
        ceiling = max(MAX_PAGE_KEYS, page_size)  # lowered to what fitted when a page is halved
        prefix, start, end = cursors.popleft()
        asked = page_size
        resp, fitted = await self._page(prefix, start, end, asked, 0)
        revision = int(resp.header.revision)  # the first page's: every other page is read at it
        following: asyncio.Future[tuple[Any, int]] | None = None
        try:
            while True:
                if fitted < asked:
                    page_size = ceiling = min(page_size, fitted)
                after = None
                if resp.more and resp.kvs:
                    after = (prefix, bytes(resp.kvs[-1].key) + b"\x00", end)
                    left = int(resp.count) - len(resp.kvs)
                    asked = min(ceiling, max(page_size, left // PAGE_SHARE))
                elif cursors:
                    after = cursors.popleft()
                    asked = page_size
                page = Page(prefix, revision, [_kv(kv) for kv in resp.kvs])
                resp = None  # the raw response goes before the next one arrives
                if after is None:
                    yield page
                    return
                following = asyncio.ensure_future(self._page(*after, asked, revision))
                yield page
                prefix, start, end = after
                resp, fitted = await following
                following = None
        finally:
            if following is not None:  # the caller stopped early
                following.add_done_callback(_retrieve)
                following.cancel()

    async def _page(
        self, prefix: str, start: bytes, end: bytes, page_size: int, revision: int
    ) -> tuple[Any, int]:
        """etcd's answer for up to `page_size` keys from `start`, and the page size it took:
        halved while the response is over the receive limit."""
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=page_size, revision=revision)
            try:
                return await self._session.call(RANGE, req), page_size
            except TooLarge as exc:
                if page_size == 1:
                    raise
                page_size = max(1, page_size // 2)
                log.info("etcd_page_halved", prefix=prefix, page_keys=page_size, error=str(exc))

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under `prefix`, at one revision."""
        return (await self.snapshot([prefix])).listing[prefix]

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult:
        """Apply `ops` atomically if every guard (and the fence) holds; otherwise read them."""
        resp = await self._session.call(TXN, txn_request(guards, ops, fence))
        revision = int(resp.header.revision)
        if resp.succeeded:
            return TxnResult(True, revision, {})
        current: dict[bytes, KeyValue | None] = {}
        for guard, op in zip(guards, resp.responses, strict=False):
            kvs = op.response_range.kvs
            current[guard.key] = _kv(kvs[0]) if kvs else None
        fenced = False
        if fence is not None:
            kvs = resp.responses[len(guards)].response_range.kvs
            fenced = not kvs or int(kvs[0].create_revision) != fence.create_revision
        return TxnResult(False, revision, current, fenced)

    async def newest(
        self, ranges: Sequence[tuple[bytes, bytes]], limit: int = 1, keys_only: bool = False
    ) -> list[list[KeyValue]]:
        """Per range [start, end), its `limit` greatest keys (0: all), greatest first: one
        transaction of reads sorted by key, descending, per `TXN_LIMITS.max_ops` ranges (only
        the first transaction's ranges are read at its revision)."""
        found: list[list[KeyValue]] = []
        for first in range(0, len(ranges), TXN_LIMITS.max_ops):
            txn = rpc.TxnRequest()
            for start, end in ranges[first : first + TXN_LIMITS.max_ops]:
                read = txn.success.add().request_range
                read.key, read.range_end, read.limit, read.keys_only = start, end, limit, keys_only
                read.sort_order, read.sort_target = rpc.RangeRequest.DESCEND, rpc.RangeRequest.KEY
            resp = await self._session.call(TXN, txn)
            found += [[_kv(kv) for kv in op.response_range.kvs] for op in resp.responses]
        return found

    async def delete(self, key: bytes) -> None:
        """Delete removes `key` unconditionally (a missing key is no error)."""
        await self._session.call(DELETE_RANGE, rpc.DeleteRangeRequest(key=key))

    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int:
        """Put `key` bound to the lease unless it exists; its create revision either way."""
        req = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=0
                )
            ],
            success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id))
            ],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key))],
        )
        resp = await self._session.call(TXN, req)
        if resp.succeeded:
            return int(resp.header.revision)
        return int(resp.responses[0].response_range.kvs[0].create_revision)

    async def candidates(self, prefix: str) -> Candidates:
        """Every key under `prefix` by ascending create revision, and the revision read at.
        Meant for an election's candidates: one per daemon, so one unpaged read."""
        start = prefix.encode()
        req = rpc.RangeRequest(
            key=start,
            range_end=prefix_end(start),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
        )
        resp = await self._session.call(RANGE, req)
        found = [
            Candidate(bytes(kv.key), bytes(kv.value), int(kv.create_revision)) for kv in resp.kvs
        ]
        return Candidates(int(resp.header.revision), found)

    async def first_created(self, prefix: str) -> Candidate | None:
        """The key under `prefix` with the lowest create revision: the election's leader."""
        found = (await self.candidates(prefix)).found
        return found[0] if found else None


class EtcdLeases(_Facade):
    """EtcdLeases grants leases, renews them one keep-alive at a time (the caller's loop) and
    revokes them."""

    async def grant_lease(self, ttl: int) -> int:
        """Creates a lease of `ttl` seconds and returns its id."""
        return int((await self._session.call(LEASE_GRANT, rpc.LeaseGrantRequest(TTL=ttl))).ID)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew a lease once; returns its remaining TTL in seconds, 0 when it is gone."""
        resp = await self._session.call(LEASE_KEEP_ALIVE, rpc.LeaseKeepAliveRequest(ID=lease_id))
        if resp is grpc.aio.EOF:
            raise EtcdUnavailable("etcd closed the lease keep-alive stream")
        return int(resp.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        """Ends the lease, deleting every key bound to it."""
        await self._session.call(LEASE_REVOKE, rpc.LeaseRevokeRequest(ID=lease_id))


class EtcdWatches(_Facade):
    """EtcdWatches watches prefixes, all on one stream."""

    async def watch(
        self,
        starts: Mapping[str, int],
        progress_every: float,
        together: Sequence[Sequence[str]] = (),
    ) -> AsyncGenerator[WatchBatch, None]:
        """Watch yields the events under each prefix from its start revision, all on one
        stream; it ends only by raising EtcdUnavailable (the stream broke, etcd cancelled a
        watch) or Compacted (a start revision is no longer in history).

        Each group of prefixes in `together` is watched as one range, from the first to the end
        of the last, so a transaction writing under several comes back as one response (a gRPC
        message costs more than its events: docs/design.md, Cost per event); its events are
        handed over per prefix, keys under none of them dropped and counted
        (`WatchBatch.foreign`). Group only prefixes with no other watched prefix between them.
        A progress notification is asked for every `progress_every` seconds, so a caller that
        hears nothing for a few such periods knows the stream is dead; and right after a
        response with events, then every FIRST_PROGRESS_ASK seconds until one is answered: the
        answer is the barrier the watcher waits for before it applies them.
        """
        grouped = {p for group in together for p in group}
        watches = [sorted(g) for g in together] + [[p] for p in starts if p not in grouped]
        # "hasleader": etcd cancels the watch if this member loses its leader, instead of
        # leaving it open and silent on the minority side of a partition.
        async with self._session.stream(WATCH, ("hasleader", "true")) as call:
            for watch_id, prefixes in enumerate(watches, start=1):
                create = rpc.WatchCreateRequest(
                    key=prefixes[0].encode(),
                    range_end=prefix_end(prefixes[-1].encode()),
                    start_revision=min(starts[p] for p in prefixes),
                    progress_notify=True,
                    watch_id=watch_id,
                )
                await call.write(rpc.WatchRequest(create_request=create))
            wanted, answered = asyncio.Event(), asyncio.Event()
            progress = asyncio.create_task(
                _ask_progress(call, progress_every, wanted, answered), name="progress"
            )
            try:
                while True:
                    for batch in _batches(await call.read(), watches, starts):
                        if batch.prefix is not None:  # no progress answer has followed yet
                            answered.clear()
                            wanted.set()
                        elif batch.revision:
                            wanted.clear()
                            answered.set()
                        yield batch
            finally:
                progress.cancel()


def _batches(
    resp: Any, watches: Sequence[Sequence[str]], starts: Mapping[str, int]
) -> Iterator[WatchBatch]:
    """The batches of one watch response (`watches[i]` are the prefixes of watch id i + 1);
    raises EtcdUnavailable or Compacted when the response ends the stream."""
    if resp is grpc.aio.EOF:
        raise EtcdUnavailable("etcd closed the watch stream")
    if resp.compact_revision:
        raise Compacted(int(resp.compact_revision))
    if resp.canceled:
        raise EtcdUnavailable(f"etcd cancelled a watch: {resp.cancel_reason}")
    header = _header(resp)
    if not resp.events:
        # Created, a watch's own progress, or the stream-wide progress answer (watch id -1):
        # only the last is a barrier.
        yield WatchBatch(None, (), header.revision if resp.watch_id == -1 else 0, header)
        return
    events = tuple(_event(ev) for ev in resp.events)
    prefixes = watches[resp.watch_id - 1]
    if len(prefixes) == 1:
        yield WatchBatch(prefixes[0], events, events[-1].revision, header)
        return
    yield from _split(events, prefixes, starts, header)


def _split(
    events: tuple[Event, ...], prefixes: Sequence[str], starts: Mapping[str, int], header: Header
) -> Iterator[WatchBatch]:
    """One response of a watch of several prefixes: a batch without a prefix counting foreign
    keys (if any), then a batch per prefix with events, each from that prefix's start."""
    revision = events[-1].revision  # the response holds whole revisions, for every prefix
    encoded = [(p, p.encode()) for p in prefixes]
    split: dict[str, list[Event]] = {}
    foreign = 0
    for event in events:
        prefix = next((p for p, b in encoded if event.key.startswith(b)), None)
        if prefix is None:
            foreign += 1
        elif event.revision >= starts[prefix]:
            split.setdefault(prefix, []).append(event)
    if foreign:
        yield WatchBatch(None, (), 0, header, foreign)
    for prefix, mine in split.items():
        yield WatchBatch(prefix, tuple(mine), revision, header)


class EtcdClient(EtcdKV, EtcdLeases, EtcdWatches):
    """EtcdClient is a client of one etcd cluster; create and use it inside the running event
    loop (grpc.aio).

    It is the KV, lease and watch facades on one `EtcdSession`, which holds the endpoints, TLS,
    the auth token and the retry policy."""

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float,
        observe: Callable[[str, float, str | None], None] | None = None,
        tls: TlsFiles | None = None,
        credentials: tuple[str, str] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        refusals: RefusalObserver | None = None,
    ) -> None:
        super().__init__(
            EtcdSession(
                endpoints,
                timeout,
                tls=tls,
                credentials=credentials,
                max_response_bytes=max_response_bytes,
                observe=observe,
                refusals=refusals,
            )
        )

    @classmethod
    def from_settings(
        cls,
        settings: ConnectionSettings,
        observe: Callable[[str, float, str | None], None] | None = None,
        refusals: RefusalObserver | None = None,
    ) -> EtcdClient:
        """Builds a client of the endpoints, TLS and credentials `settings` name."""
        user, password = settings.username, settings.password
        return cls(
            settings.endpoints,
            settings.timeout_seconds,
            observe,
            settings.tls,
            (user, password) if user is not None and password is not None else None,
            refusals=refusals,
        )

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now."""
        return self._session.endpoint

    async def close(self) -> None:
        """Close ends the session's channel; the client is unusable after."""
        await self._session.close()


async def _ask_progress(
    call: Any, every: float, wanted: asyncio.Event, answered: asyncio.Event
) -> None:
    """Request a stream-wide progress notification soon after the stream opens, then at
    doubling intervals up to every `every` seconds, until cancelled; and while `wanted` is set
    (events wait for an answer), at once, then again after each answer (`answered`) or
    FIRST_PROGRESS_ASK seconds without one, never within PROGRESS_ASK_SPACING of the last.
    The early asks end the watcher's catch-up quickly; etcd ignores an ask while a watch is
    still catching up (a slow one included), so an unanswered one is asked again."""
    request = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
    delay = min(FIRST_PROGRESS_ASK, every)
    loop = asyncio.get_running_loop()
    asked = -PROGRESS_ASK_SPACING
    try:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wanted.wait()
            if (spacing := asked + PROGRESS_ASK_SPACING - loop.time()) > 0:
                await asyncio.sleep(spacing)
            await call.write(request)
            asked = loop.time()
            if not wanted.is_set():
                delay = min(delay * 2, every)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_PROGRESS_ASK):
                    await answered.wait()
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        return  # the stream is gone; the reader reports why


def txn_request(guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None) -> Any:
    """The TxnRequest for `EtcdClient.txn`: a compare per guard (two with its value) and the
    fence's, `ops` on success, a read of every guarded key (and the fence) on failure. Each
    part is built in place (`add`): a message built apart and then put in a repeated field is
    built twice."""
    txn = rpc.TxnRequest()
    compare, success, failure = txn.compare, txn.success, txn.failure
    for g in guards:
        compare.add(
            result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, key=g.key, mod_revision=g.mod_revision
        )
        if g.value is not None:
            compare.add(
                result=rpc.Compare.EQUAL, target=rpc.Compare.VALUE, key=g.key, value=g.value
            )
        failure.add().request_range.key = g.key
    if fence is not None:
        compare.add(
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.CREATE,
            key=fence.key,
            create_revision=fence.create_revision,
        )
        failure.add().request_range.key = fence.key
    for op in ops:
        if isinstance(op, Put):
            put = success.add().request_put
            put.key, put.value = op.key, op.value
        else:
            delete = success.add().request_delete_range
            delete.key = op.key
            if op.range_end is not None:
                delete.range_end = op.range_end
    return txn


def _header(resp: Any) -> Header:
    return Header(int(resp.header.revision), int(resp.header.raft_term))


def _kv(kv: Any) -> KeyValue:
    return KeyValue(bytes(kv.key), bytes(kv.value), int(kv.mod_revision))


def _event(ev: Any) -> Event:
    deleted = ev.type == rpc.Event.DELETE
    return Event(bytes(ev.kv.key), None if deleted else bytes(ev.kv.value), int(ev.kv.mod_revision))
