"""The etcd session: endpoints, failover, TLS, the auth token, and the one path every request
takes. The KV, lease and watch facades (`etcd.py`) build requests and read answers; what
happens when a request fails is decided here, and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
import structlog
from aetcd import rpc

from statemanager.adapters.etcderrors import Failure, Recovery, classify
from statemanager.adapters.tls import TlsFiles
from statemanager.core.errors import EtcdBusy, EtcdUnavailable, TooLarge

log = structlog.get_logger("statemanager.etcd")

MAX_RESPONSE_BYTES = 64 * 1024 * 1024

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

Metadata = tuple[tuple[str, str], ...]


class RefusalObserver(Protocol):
    """Told of every refusal (EtcdBusy and TooLarge: reason and the message with etcd's words)
    and of every write etcd accepted, so "etcd refuses writes" can end."""

    def refused(self, reason: str, message: str) -> None: ...
    def accepted(self) -> None: ...


class UnaryMethod(Protocol):
    """A request/response method on a connection (a generated stub's, or a one-shot stream)."""

    def __call__(self, request: Any, *, timeout: float, metadata: Metadata) -> Awaitable[Any]: ...


class StreamMethod(Protocol):
    """A bidirectional streaming method: the open call, to write requests to and read from."""

    def __call__(self, *, metadata: Metadata) -> Any: ...


class Connection(Protocol):
    """One channel to one endpoint and etcd's services on it (aetcd's generated stubs)."""

    @property
    def endpoint(self) -> str: ...
    @property
    def kv(self) -> Any: ...
    @property
    def lease(self) -> Any: ...
    @property
    def watch(self) -> Any: ...
    @property
    def auth(self) -> Any: ...

    async def close(self) -> None: ...


class GrpcConnection:
    """A grpc.aio channel to one endpoint (TLS when `tls` is set) and the stubs on it."""

    def __init__(self, endpoint: str, tls: TlsFiles | None, max_response_bytes: int) -> None:
        self.endpoint = endpoint
        parts = urlsplit(endpoint)
        target = f"{parts.hostname}:{parts.port}"
        options = [*_CHANNEL_OPTIONS, ("grpc.max_receive_message_length", max_response_bytes)]
        if tls is None:
            self._channel = grpc.aio.insecure_channel(target, options)
        else:
            credentials = grpc.ssl_channel_credentials(*tls.pem())
            self._channel = grpc.aio.secure_channel(target, credentials, options)
        self.kv = rpc.KVStub(self._channel)
        self.watch = rpc.WatchStub(self._channel)
        self.lease = rpc.LeaseStub(self._channel)
        self.auth = rpc.AuthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()


def _one_renewal(lease: Any) -> UnaryMethod:
    """LeaseKeepAlive is a stream: one renewal is a request and its answer (or grpc.aio.EOF)
    on a call of its own, so it takes the request/response path."""

    async def renew(
        request: Any,
        *,
        timeout: float,  # noqa: ASYNC109 - the gRPC deadline, as the stubs' methods take it
        metadata: Metadata,
    ) -> Any:
        call = lease.LeaseKeepAlive(timeout=timeout, metadata=metadata)
        try:
            await call.write(request)
            return await call.read()
        finally:
            call.cancel()

    return renew


def _reads(_request: Any) -> bool:
    return False


def _txn_puts(request: Any) -> bool:
    """Under the NOSPACE alarm etcd still serves reads and deletes: a txn writes if it puts."""
    return any(op.HasField("request_put") for op in [*request.success, *request.failure])


@dataclass(frozen=True, slots=True)
class Rpc:
    """One request/response RPC: `what` names it in errors, `operation` in the latency metric;
    `writes` says whether etcd's space quota applies to a request (its acceptance ends a
    NOSPACE report)."""

    what: str
    operation: str
    method: Callable[[Connection], UnaryMethod]
    writes: Callable[[Any], bool] = _reads


@dataclass(frozen=True, slots=True)
class StreamRpc:
    """A bidirectional streaming RPC (the watch): `what` names it in errors."""

    what: str
    method: Callable[[Connection], StreamMethod]


RANGE = Rpc("range", "range", lambda c: c.kv.Range)
TXN = Rpc("txn", "txn", lambda c: c.kv.Txn, writes=_txn_puts)
DELETE_RANGE = Rpc("delete", "delete", lambda c: c.kv.DeleteRange)
LEASE_GRANT = Rpc("lease", "lease", lambda c: c.lease.LeaseGrant, writes=lambda _r: True)
LEASE_REVOKE = Rpc("lease", "lease", lambda c: c.lease.LeaseRevoke)
LEASE_KEEP_ALIVE = Rpc("lease keep-alive", "lease", lambda c: _one_renewal(c.lease))
WATCH = StreamRpc("watch", lambda c: c.watch.Watch)


class _Failed(Exception):
    """A classified failure on its way from an attempt to the session's reaction."""

    def __init__(self, failure: Failure, code: str) -> None:
        super().__init__(str(failure.error))
        self.failure = failure
        self.code = code


@contextlib.contextmanager
def _classified(what: str, authenticating: bool) -> Iterator[None]:
    """Turn a failed gRPC call into `_Failed` (a write to a stream that has ended too). grpc.aio
    cancels calls on a channel that is
    closed under them (a failover closes the old one): that CancelledError means "the endpoint
    was left", not ours to propagate. Only a cancellation of the calling task itself (it is
    `cancelling()`) stays a cancellation."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        failure = classify(code, exc.details() or "", what, authenticating=authenticating)
        raise _Failed(failure, code.name) from None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        closed = EtcdUnavailable(f"etcd {what}: connection closed by a failover")
        raise _Failed(Failure(closed, Recovery.FAIL_OVER), "CANCELLED") from None
    except asyncio.InvalidStateError as exc:
        # grpc.aio refuses a write to a stream that has already ended ("RPC already
        # finished"): etcd went away between two writes, e.g. while a watch is created.
        # Worded as the other unavailable failures are (the code the metric counts it under).
        ended = EtcdUnavailable(f"etcd {what} failed: UNAVAILABLE: the stream ended ({exc})")
        raise _Failed(Failure(ended, Recovery.FAIL_OVER), "UNAVAILABLE") from None


class EtcdSession:
    """The connection to one etcd cluster. Create and use it inside the running event loop
    (grpc.aio). It talks to one endpoint at a time; the password is sent to etcd's
    Authenticate and nowhere else.

    Retry policy, the same for every request (`call`) whether auth is configured or not:

    - **Unreachable** (UNAVAILABLE, DEADLINE_EXCEEDED, or the channel closed under the request
      by another request's failover): the session moves to the next endpoint (once per failed
      connection, however many requests saw it fail) and, when there is more than one
      endpoint, retries the request there once. A request that timed out may have been
      applied: every write the daemon sends is safe to repeat (guarded or fenced
      transactions, whole-value puts, deletes, create-if-absent), as callers already repeat
      them after EtcdUnavailable.
    - **Token expired** (UNAUTHENTICATED while a token is sent; simple tokens live
      `--auth-token-ttl`, and only on the member that issued them): the token is forgotten,
      a new one fetched and the request retried once. A token is kept with the connection
      it was issued on, so a failover fetches a new one from the next member.
    - **Everything else surfaces at once**, never retried here: etcd's refusals (EtcdBusy
      "not now", TooLarge "never", told to the RefusalObserver), a compacted revision,
      permanent refusals such as INVALID_ARGUMENT or PERMISSION_DENIED (EtcdError), and
      other codes (EtcdUnavailable).
    - At most one retry per request, for whichever reason; if it fails too, its error
      surfaces. Callers back off and retry EtcdUnavailable themselves.
    - A stream (`stream`, the watch) is never retried here: its failure gets the same reaction
      (failover, forgotten token) and surfaces; its owner resumes on the next endpoint.

    Every attempt is reported to `observe` as (operation, seconds, gRPC code name or None).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout: float,
        *,
        tls: TlsFiles | None = None,
        credentials: tuple[str, str] | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        observe: Callable[[str, float, str | None], None] | None = None,
        refusals: RefusalObserver | None = None,
        connect: Callable[[str], Connection] | None = None,
    ) -> None:
        self._endpoints = list(endpoints)
        self._timeout = timeout
        self._credentials = credentials
        self._observe = observe or (lambda _op, _seconds, _code: None)
        self._refusals = refusals
        self._connect: Callable[[str], Connection] = connect or functools.partial(
            GrpcConnection, tls=tls, max_response_bytes=max_response_bytes
        )
        self._current = 0
        self._conn = self._connect(self._endpoints[0])
        # A token is valid on the member that issued it only: kept with its connection.
        self._token: tuple[Connection, str] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        # False from a failover until a request succeeds: further hops in between (every member
        # down) are an outage, which the outage lines report, not news for each hop.
        self._answered = True

    @property
    def endpoint(self) -> str:
        return self._conn.endpoint

    async def close(self) -> None:
        await self._conn.close()

    async def call(self, method: Rpc, request: Any) -> Any:
        """Send `request` and return etcd's response, under the retry policy above."""
        retried = False
        while True:
            conn = self._conn
            try:
                response = await self._attempt(conn, method, request)
            except _Failed as failed:
                if not self._react(conn, failed.failure) or retried:
                    raise failed.failure.error from None
                retried = True
                continue
            self._answered = True
            if self._refusals is not None and method.writes(request):
                self._refusals.accepted()
            return response

    @contextlib.asynccontextmanager
    async def stream(self, method: StreamRpc, *extra: tuple[str, str]) -> AsyncIterator[Any]:
        """An open stream on the current endpoint, with the token and `extra` metadata. A
        failure of the stream gets the reaction a request's gets, then surfaces."""
        conn = self._conn
        try:
            metadata = await self._metadata(conn, extra)
            call = method.method(conn)(metadata=metadata)
            try:
                with _classified(method.what, self._credentials is not None):
                    yield call
            finally:
                call.cancel()
        except _Failed as failed:
            self._react(conn, failed.failure)
            raise failed.failure.error from None

    async def _attempt(self, conn: Connection, method: Rpc, request: Any) -> Any:
        metadata = await self._metadata(conn, ())
        send = method.method(conn)
        started = time.perf_counter()
        try:
            with _classified(method.what, self._credentials is not None):
                response = await send(request, timeout=self._timeout, metadata=metadata)
        except _Failed as failed:
            self._observe(method.operation, time.perf_counter() - started, failed.code)
            raise
        self._observe(method.operation, time.perf_counter() - started, None)
        return response

    async def _metadata(self, conn: Connection, extra: Metadata) -> Metadata:
        """Request metadata: the auth token for `conn` (fetched on first use) and `extra`."""
        if self._credentials is None:
            return extra
        if self._token is None or self._token[0] is not conn:
            user, password = self._credentials
            request = rpc.AuthenticateRequest(name=user, password=password)
            # No token is sent here: UNAUTHENTICATED is a refusal, not an expiry.
            with _classified(f"authentication as {user!r}", authenticating=False):
                resp = await conn.auth.Authenticate(request, timeout=self._timeout)
            self._token = (conn, str(resp.token))
            log.info("etcd_authenticated", user=user, endpoint=conn.endpoint)
        return (("token", self._token[1]), *extra)

    def _react(self, conn: Connection, failure: Failure) -> bool:
        """Act on a failure of a request sent on `conn`; whether one retry may succeed."""
        match failure.recovery:
            case Recovery.FAIL_OVER:
                self._fail_over(conn)
                return len(self._endpoints) > 1
            case Recovery.REAUTHENTICATE:
                if self._token is not None and self._token[0] is conn:
                    self._token = None
                return True
            case Recovery.SURFACE:
                error = failure.error
                if isinstance(error, EtcdBusy | TooLarge) and self._refusals is not None:
                    self._refusals.refused(error.reason, str(error))
                return False

    def _fail_over(self, failed: Connection) -> None:
        """Move to the next endpoint, once per failed connection (concurrent failures of the
        same connection move only once)."""
        if len(self._endpoints) < 2 or self._conn is not failed:
            return
        self._current = (self._current + 1) % len(self._endpoints)
        self._conn = self._connect(self._endpoints[self._current])
        (log.warning if self._answered else log.debug)(
            "etcd_failover", unreachable=failed.endpoint, trying=self._conn.endpoint
        )
        self._answered = False
        task = asyncio.create_task(failed.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
