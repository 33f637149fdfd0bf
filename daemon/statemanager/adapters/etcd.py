"""The etcd adapter: the only module that imports aetcd.

It drives aetcd's generated etcd v3 stubs (`aetcd.rpc`) on a grpc.aio channel of its own,
because the high-level client cannot read several prefixes at one revision, page a listing,
expose watch response boundaries or progress notifications. Callers see small frozen values
and the error families of `statemanager.core.errors`, never protobuf or grpc types.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import grpc
import structlog
from aetcd import rpc

from statemanager.adapters.tls import TlsFiles
from statemanager.core.errors import Compacted, EtcdBusy, EtcdError, EtcdUnavailable, TooLarge

log = structlog.get_logger("statemanager.etcd")


@dataclass(frozen=True, slots=True)
class TxnLimits:
    """What etcd accepts in one transaction; whoever packs transactions must stay within it.

    `max_ops` is etcd's --max-txn-ops (default 128): it caps the compares and each branch's
    operations separately. `max_bytes` is --max-request-bytes (default 1.5 MiB) on the encoded
    request. Byte costs are upper bounds: a key or value plus `OP_OVERHEAD_BYTES` per operation,
    and `HEADROOM_BYTES` kept for the request's framing and etcd's own header.
    """

    max_ops: int = 128
    max_bytes: int = 1536 * 1024

    # Tags, lengths and a revision of one operation: 11-13 bytes measured for keys up to 300
    # bytes (tests/unit/test_txn_limits.py checks the bound on encoded requests).
    OP_OVERHEAD_BYTES = 24
    HEADROOM_BYTES = 1024

    @property
    def byte_budget(self) -> int:
        return self.max_bytes - self.HEADROOM_BYTES

    def guarded_write_bytes(self, key: bytes, value: bytes | None) -> int:
        """A guarded put or delete: the compare, the operation and the failure branch's read."""
        return 3 * (len(key) + self.OP_OVERHEAD_BYTES) + len(value or b"")

    def put_bytes(self, key: bytes, value: bytes) -> int:
        """An unguarded put."""
        return len(key) + len(value) + self.OP_OVERHEAD_BYTES

    def chunks(
        self, ops: Sequence[Put | Delete], fence: Fence | None
    ) -> Iterator[list[Put | Delete]]:
        """Unguarded `ops` in order, cut into transactions within the limits (with `fence`)."""
        fence_ops, fence_bytes = (1, self.guarded_write_bytes(fence.key, None)) if fence else (0, 0)
        chunk: list[Put | Delete] = []
        size = 0
        for op in ops:
            cost = self.put_bytes(op.key, op.value if isinstance(op, Put) else b"")
            if chunk and (
                len(chunk) + 1 + fence_ops > self.max_ops
                or size + cost + fence_bytes > self.byte_budget
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(op)
            size += cost
        if chunk:
            yield chunk


TXN_LIMITS = TxnLimits()

# A listing page holds at most this many keys, and fewer when its response would be over the
# receive limit: etcd cannot cap a page by bytes, so a too-large page is asked again, halved.
# Large, because etcd (3.5) counts every key from a page's start to the prefix's end to fill in
# the response's `count`, whatever the limit: listing N keys costs etcd N²/(2 × PAGE_KEYS) key
# visits. At 1,000,000 containers one 1,000-key page from the start took etcd 0.7-1 s, and
# the 1,000 pages made the cold start take many minutes; 10,000 divides that by ten. A page of
# container values is ~6 MB, well under the receive limit.
PAGE_KEYS = 10_000
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# Codes that mean "etcd could not answer now"; anything else is a refusal that retrying will
# not fix (bad request, permission) and is raised as EtcdError. Refusals that depend on the
# request's size or on etcd's load are told apart by etcd's words (`_refusal`).
_PERMANENT = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# etcd's refusals by what they mean, matched on its error text (etcd answers RESOURCE_EXHAUSTED
# for a full database, for too many requests and, through gRPC, for an over-large response).
# "never": this request cannot succeed as sent (split it or skip it); "not now": etcd cannot
# take writes at the moment (back off and try again).
REFUSALS: dict[str, tuple[str, str]] = {
    "database space exceeded": ("nospace", "not now"),
    "too many requests": ("too_many_requests", "not now"),
    "too many operations in txn request": ("too_many_ops", "never"),
    "request is too large": ("request_too_large", "never"),
    # gRPC's own limit, ours on a response or etcd's on a request (--max-request-bytes plus
    # gRPC overhead): which one is known from the operation (`_translate`).
    "received message larger than max": ("response_too_large", "never"),
}
REFUSAL_REASONS = tuple(dict.fromkeys(reason for reason, _ in REFUSALS.values()))

_CHANNEL_OPTIONS = [
    # Keepalive notices a half-open TCP connection; etcd refuses pings more often than 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Only while a call is open: etcd's default enforcement (PermitWithoutStream=false) answers
    # pings on an idle connection with GOAWAY too_many_pings. The daemon's watch is always open.
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own reconnect backoff grows to 120 s by default: far too slow to notice etcd back.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


class ConnectionSettings(Protocol):
    """What `EtcdClient.from_settings` reads; the application's `[etcd]` settings section
    (app/config.py) is one."""

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


class RefusalObserver(Protocol):
    """Told of every refusal (EtcdBusy and TooLarge: reason and the message with etcd's words)
    and of every transaction etcd accepted, so "etcd refuses writes" can end."""

    def refused(self, reason: str, message: str) -> None: ...
    def accepted(self) -> None: ...


class Candidate(NamedTuple):
    """A key of an election (`statemanager.runtime.election`): who campaigns, and its
    place in line."""

    key: bytes
    value: bytes
    create_revision: int


class KeyValue(NamedTuple):
    """A listed key; a plain tuple so the pure core can take it without importing this module."""

    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    """One key change; `value` is None for a deletion. `revision` is the change's revision."""

    key: bytes
    value: bytes | None
    revision: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """The events one watch response carried for one prefix.

    etcd never splits one revision's events for a watcher across responses (we do not ask for
    fragments), so after a batch is handled every revision up to `revision` is fully delivered
    for that prefix. A batch without events (prefix None) is a progress notification: a
    liveness signal only, never a resume point, because etcd before 3.4.26/3.5.8 could send one
    ahead of undelivered events.

    `header` is where etcd stood when it sent the response (every response has one, a watch's
    "created" answer included): a revision below one already delivered, or a raft term below
    one already seen, says etcd's history was replaced (a wiped member, a restore from an
    older snapshot).
    """

    prefix: str | None  # None for a progress notification
    events: tuple[Event, ...]
    revision: int
    header: Header


class Header(NamedTuple):
    """Where etcd stood when it answered: its store revision and its raft term. Both only grow
    while the cluster keeps its data; a wipe or a restore starts them again from low values."""

    revision: int
    raft_term: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes


@dataclass(frozen=True, slots=True)
class Guard:
    """The transaction applies only while `key`'s mod revision is `mod_revision` (0: absent)."""

    key: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Fence:
    """The transaction applies only while `key` exists with this create revision: the leader
    key of an election, so a deposed leader's write fails atomically (etcd concurrency's rule)."""

    key: bytes
    create_revision: int


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded` with the commit revision; otherwise `current` holds every guarded key as
    etcd has it now (value None when absent), read in the same transaction, and `fenced` says
    whether the fence (if any) no longer held."""

    succeeded: bool
    revision: int
    current: Mapping[bytes, KeyValue | None]
    fenced: bool = False


class TxnClient(Protocol):
    """One guarded transaction: what the state writer and the gRPC service write through."""

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult: ...


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with `prefix` (etcd's clientv3 rule)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def _target(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.hostname}:{parts.port}"


@contextlib.contextmanager
def _closed_channel_is_unavailable(what: str) -> Iterator[None]:
    """grpc.aio cancels calls on a channel that is closed under them (a failover closes the old
    one): that CancelledError is not ours to propagate. Only a cancellation of the calling task
    itself (it is `cancelling()`) stays a cancellation."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise EtcdUnavailable(f"etcd {what}: connection closed by a failover") from None


def _refusal(detail: str) -> tuple[str, str] | None:
    lowered = detail.lower()
    return next((v for words, v in REFUSALS.items() if words in lowered), None)


def _translate(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    code = exc.code()
    detail = exc.details() or code.name
    if code is grpc.StatusCode.OUT_OF_RANGE and "compacted" in detail:
        return Compacted(0)
    refusal = _refusal(detail)
    if refusal is not None:
        reason, when = refusal
        if reason == "response_too_large" and what != "range":
            reason = "request_too_large"
        message = f"etcd refused {what}: {code.name}: {detail}"
        return TooLarge(reason, message) if when == "never" else EtcdBusy(reason, message)
    if code in _PERMANENT:
        return EtcdError(f"etcd refused {what}: {code.name}: {detail}")
    return EtcdUnavailable(f"etcd {what} failed: {code.name}: {detail}")


class _Connection:
    """One channel to one endpoint and the stubs on it."""

    def __init__(self, endpoint: str, tls: TlsFiles | None, max_response_bytes: int) -> None:
        self.endpoint = endpoint
        target = _target(endpoint)
        options = [*_CHANNEL_OPTIONS, ("grpc.max_receive_message_length", max_response_bytes)]
        if tls is None:
            self.channel = grpc.aio.insecure_channel(target, options)
        else:
            credentials = grpc.ssl_channel_credentials(*tls.pem())
            self.channel = grpc.aio.secure_channel(target, credentials, options)
        self.kv = rpc.KVStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)


class EtcdClient:
    """A client of one etcd cluster. Create and use it inside the running event loop (grpc.aio).

    It talks to one endpoint at a time and moves to the next when a request finds it
    unreachable; callers see EtcdUnavailable for that request and retry, and the watch resumes
    from its last revision on the next member, so no event is missed. With a username it
    authenticates, sends the token with every request and authenticates again when etcd says
    the token expired (simple tokens live `--auth-token-ttl` and only on the member that issued
    them). The password is sent to etcd's Authenticate and nowhere else.
    """

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
        self._endpoints = list(endpoints)
        self._max_response_bytes = max_response_bytes
        self._refusals = refusals
        self._timeout = timeout
        # (operation, seconds, gRPC code name or None on success) for every unary request.
        self._observe = observe or (lambda _op, _seconds, _code: None)
        self._tls = tls
        self._credentials = credentials
        self._token: str | None = None
        self._current = 0
        self._conn = _Connection(self._endpoints[0], tls, max_response_bytes)
        self._closing: set[asyncio.Task[None]] = set()
        # False from a failover until a request succeeds: further hops in between (every member
        # down) are an outage, which the outage lines report, not news for each hop.
        self._answered = True

    @classmethod
    def from_settings(
        cls,
        settings: ConnectionSettings,
        observe: Callable[[str, float, str | None], None] | None = None,
        refusals: RefusalObserver | None = None,
    ) -> EtcdClient:
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
        return self._conn.endpoint

    async def close(self) -> None:
        await self._conn.channel.close()

    async def _metadata(
        self, conn: _Connection, *extra: tuple[str, str]
    ) -> tuple[tuple[str, str], ...]:
        """Request metadata: the auth token (fetched on first use) and `extra`."""
        if self._credentials is None:
            return extra
        if self._token is None:
            user, password = self._credentials
            request = rpc.AuthenticateRequest(name=user, password=password)
            try:
                with _closed_channel_is_unavailable("authentication"):
                    resp = await conn.auth.Authenticate(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise self._classify(conn, exc, f"authentication as {user!r}") from None
            self._token = str(resp.token)
            log.info("etcd_authenticated", user=user, endpoint=conn.endpoint)
        return (("token", self._token), *extra)

    def _fail_over(self, failed: _Connection) -> None:
        """Move to the next endpoint, once per failed connection (concurrent failures of the
        same connection move only once)."""
        if len(self._endpoints) < 2 or self._conn is not failed:
            return
        self._current = (self._current + 1) % len(self._endpoints)
        self._conn = _Connection(
            self._endpoints[self._current], self._tls, self._max_response_bytes
        )
        self._token = None
        (log.warning if self._answered else log.debug)(
            "etcd_failover", unreachable=failed.endpoint, trying=self._conn.endpoint
        )
        self._answered = False
        task = asyncio.create_task(failed.channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _classify(self, conn: _Connection, exc: grpc.aio.AioRpcError, what: str) -> Exception:
        """The error to raise for a failed request or stream, after reacting to it: an expired
        token is forgotten (transient: the next request authenticates again); an unreachable
        member makes the client move to the next endpoint."""
        code = exc.code()
        if code is grpc.StatusCode.UNAUTHENTICATED and self._credentials is not None:
            self._token = None
            return EtcdUnavailable(f"etcd {what}: auth token expired")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._fail_over(conn)
        error = _translate(exc, what)
        if isinstance(error, EtcdBusy | TooLarge) and self._refusals is not None:
            self._refusals.refused(error.reason, str(error))
        return error

    async def _call(self, service: str, method: str, request: Any, what: str) -> Any:
        """One unary request on the current connection, retried once after a token refresh."""
        for attempt in (1, 2):
            conn = self._conn
            metadata = await self._metadata(conn)
            started = time.perf_counter()
            try:
                stub_method = getattr(getattr(conn, service), method)
                with _closed_channel_is_unavailable(what):
                    response = await stub_method(request, timeout=self._timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                self._observe(what, time.perf_counter() - started, exc.code().name)
                error = self._classify(conn, exc, what)
                if self._token is None and self._credentials is not None and attempt == 1:
                    continue  # the token expired: authenticate again and retry once
                raise error from None
            self._observe(what, time.perf_counter() - started, None)
            self._answered = True
            if self._refusals is not None and _writes(request):
                self._refusals.accepted()
            return response
        raise AssertionError("unreachable")

    async def revision(self) -> int:
        """The store's current revision (a cheap health check)."""
        return (await self.header()).revision

    async def header(self) -> Header:
        """Where etcd stands now, from a linearizable read (never a lagging member's view)."""
        resp = await self._call("kv", "Range", rpc.RangeRequest(key=b"\x00", limit=1), "range")
        return _header(resp)

    async def get(self, key: bytes) -> KeyValue | None:
        resp = await self._call("kv", "Range", rpc.RangeRequest(key=key), "range")
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def snapshot(
        self, prefixes: Sequence[str], page_size: int = PAGE_KEYS
    ) -> tuple[int, dict[str, list[KeyValue]]]:
        """List every prefix at one revision, paging so no response grows without bound.

        A page is at most `page_size` keys; one whose response would exceed the receive limit
        (large values) is asked again with half as many keys, down to one, and later pages keep
        the smaller size. Raises Compacted when the revision is compacted between pages (list
        again), TooLarge only when a single key's response is over the limit.
        """
        revision = 0
        listing: dict[str, list[KeyValue]] = {}
        for prefix in prefixes:
            start = prefix.encode()
            end = prefix_end(start)
            items: list[KeyValue] = []
            while True:
                req = rpc.RangeRequest(key=start, range_end=end, limit=page_size, revision=revision)
                try:
                    resp = await self._call("kv", "Range", req, "range")
                except TooLarge as exc:
                    if page_size == 1:
                        raise
                    page_size = max(1, page_size // 2)
                    log.info("etcd_page_halved", prefix=prefix, page_keys=page_size, error=str(exc))
                    continue
                revision = revision or int(resp.header.revision)
                items.extend(_kv(kv) for kv in resp.kvs)
                if not resp.more or not resp.kvs:
                    break
                start = bytes(resp.kvs[-1].key) + b"\x00"
            listing[prefix] = items
        return revision, listing

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult:
        """Apply `ops` atomically if every guard (and the fence) holds; otherwise read them."""
        req = txn_request(guards, ops, fence)
        resp = await self._call("kv", "Txn", req, "txn")
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

    # -- leases and election keys (statemanager.runtime.election) ----------------------------------

    async def grant_lease(self, ttl: int) -> int:
        resp = await self._call("lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl), "lease")
        return int(resp.ID)

    async def keep_alive(self, lease_id: int) -> int:
        """Renew a lease once; returns its remaining TTL in seconds, 0 when it is gone."""
        conn = self._conn
        metadata = await self._metadata(conn)
        started = time.perf_counter()
        call = conn.lease.LeaseKeepAlive(timeout=self._timeout, metadata=metadata)
        try:
            with _closed_channel_is_unavailable("lease keep-alive"):
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
                resp = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._observe("lease", time.perf_counter() - started, exc.code().name)
            raise self._classify(conn, exc, "lease keep-alive") from None
        finally:
            call.cancel()
        self._observe("lease", time.perf_counter() - started, None)
        self._answered = True
        if resp is grpc.aio.EOF:
            raise EtcdUnavailable("etcd closed the lease keep-alive stream")
        return int(resp.TTL)

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id), "lease")

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
        resp = await self._call("kv", "Txn", req, "txn")
        if resp.succeeded:
            return int(resp.header.revision)
        return int(resp.responses[0].response_range.kvs[0].create_revision)

    async def candidates(self, prefix: str) -> tuple[int, list[Candidate]]:
        """Every key under `prefix` by ascending create revision, and the revision read at.
        Meant for an election's candidates: one per daemon, so one unpaged read."""
        start = prefix.encode()
        req = rpc.RangeRequest(
            key=start,
            range_end=prefix_end(start),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.CREATE,
        )
        resp = await self._call("kv", "Range", req, "range")
        found = [
            Candidate(bytes(kv.key), bytes(kv.value), int(kv.create_revision)) for kv in resp.kvs
        ]
        return int(resp.header.revision), found

    async def first_created(self, prefix: str) -> Candidate | None:
        """The key under `prefix` with the lowest create revision: the election's leader."""
        _, found = await self.candidates(prefix)
        return found[0] if found else None

    async def list_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under `prefix`, at one revision."""
        _, listing = await self.snapshot([prefix])
        return listing[prefix]

    async def delete(self, key: bytes) -> None:
        await self._call("kv", "DeleteRange", rpc.DeleteRangeRequest(key=key), "delete")

    async def watch(
        self, starts: Mapping[str, int], progress_every: float
    ) -> AsyncGenerator[WatchBatch, None]:
        """Watch each prefix from its start revision on one stream.

        Every `progress_every` seconds it asks etcd for a progress notification, so a live
        stream is never silent for long: a caller that hears nothing for a few such periods
        knows the stream is dead even if TCP says otherwise. Ends only by raising:
        EtcdUnavailable when the stream breaks or etcd cancels a watch, Compacted when a start
        revision is no longer in history.
        """
        prefixes = list(starts)
        conn = self._conn
        # "hasleader": etcd cancels the watch if this member loses its leader, instead of
        # leaving it open and silent on the minority side of a partition.
        metadata = await self._metadata(conn, ("hasleader", "true"))
        call = conn.watch.Watch(metadata=metadata)
        progress: asyncio.Task[None] | None = None
        try:
            for watch_id, prefix in enumerate(prefixes, start=1):
                key = prefix.encode()
                create = rpc.WatchCreateRequest(
                    key=key,
                    range_end=prefix_end(key),
                    start_revision=starts[prefix],
                    progress_notify=True,
                    watch_id=watch_id,
                )
                with _closed_channel_is_unavailable("watch"):
                    await call.write(rpc.WatchRequest(create_request=create))
            progress = asyncio.create_task(_ask_progress(call, progress_every), name="progress")
            while True:
                with _closed_channel_is_unavailable("watch"):
                    resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise EtcdUnavailable("etcd closed the watch stream")
                if resp.compact_revision:
                    raise Compacted(int(resp.compact_revision))
                if resp.canceled:
                    raise EtcdUnavailable(f"etcd cancelled a watch: {resp.cancel_reason}")
                header = _header(resp)
                if not resp.events:
                    yield WatchBatch(None, (), 0, header)  # created or progress: liveness only
                    continue
                events = tuple(_event(ev) for ev in resp.events)
                yield WatchBatch(prefixes[resp.watch_id - 1], events, events[-1].revision, header)
        except grpc.aio.AioRpcError as exc:
            raise self._classify(conn, exc, "watch") from None
        finally:
            if progress is not None:
                progress.cancel()
            call.cancel()


async def _ask_progress(call: Any, every: float) -> None:
    """Request a stream-wide progress notification every `every` seconds until cancelled."""
    request = rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
    try:
        while True:
            await asyncio.sleep(every)
            await call.write(request)
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
        return  # the stream is gone; the reader reports why


def txn_request(guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None) -> Any:
    """The TxnRequest for `EtcdClient.txn`: a compare per guard (and the fence), `ops` on
    success, a read of every guarded key (and the fence) on failure."""
    compare = [
        rpc.Compare(
            result=rpc.Compare.EQUAL,
            target=rpc.Compare.MOD,
            key=g.key,
            mod_revision=g.mod_revision,
        )
        for g in guards
    ]
    failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=g.key)) for g in guards]
    if fence is not None:
        compare.append(
            rpc.Compare(
                result=rpc.Compare.EQUAL,
                target=rpc.Compare.CREATE,
                key=fence.key,
                create_revision=fence.create_revision,
            )
        )
        failure.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=fence.key)))
    success = [
        rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value))
        if isinstance(op, Put)
        else rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key))
        for op in ops
    ]
    return rpc.TxnRequest(compare=compare, success=success, failure=failure)


def _writes(request: Any) -> bool:
    """Whether etcd's space quota applies to `request`: a lease grant or a transaction with a
    put (under the NOSPACE alarm etcd still serves reads and deletes)."""
    if isinstance(request, rpc.LeaseGrantRequest):
        return True
    if not isinstance(request, rpc.TxnRequest):
        return False
    return any(op.HasField("request_put") for op in [*request.success, *request.failure])


def _header(resp: Any) -> Header:
    return Header(int(resp.header.revision), int(resp.header.raft_term))


def _kv(kv: Any) -> KeyValue:
    return KeyValue(bytes(kv.key), bytes(kv.value), int(kv.mod_revision))


def _event(ev: Any) -> Event:
    deleted = ev.type == rpc.Event.DELETE
    return Event(bytes(ev.kv.key), None if deleted else bytes(ev.kv.value), int(ev.kv.mod_revision))
