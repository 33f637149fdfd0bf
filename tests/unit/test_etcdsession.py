"""The etcd session's retry policy (docs/design.md, The etcd adapter), on fake members: one
scripted connection per endpoint that answers each request with its next outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from aetcd import rpc

from statemanager.adapters.etcd import EtcdWatches
from statemanager.adapters.etcderrors import Recovery, classify
from statemanager.adapters.etcdsession import LEASE_KEEP_ALIVE, RANGE, TXN, EtcdSession, Metadata
from statemanager.core.errors import Compacted, EtcdBusy, EtcdError, EtcdUnavailable, TooLarge

CODE = grpc.StatusCode
OK = SimpleNamespace(answer="ok")
CREDENTIALS = ("root", "secret")


def _error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class FakeMember:
    """A connection to one endpoint. Each request (and each Authenticate) takes the next
    scripted outcome: an error is raised, anything else answered; with the script used up it
    answers OK. Tokens name the member that issued them."""

    def __init__(self, endpoint: str, outcomes: list[Any], auth: list[Any]) -> None:
        self.endpoint = endpoint
        self._outcomes = outcomes
        self._auth = auth
        self.received: list[tuple[str, Metadata]] = []  # (method, metadata)
        self.tokens = 0
        self.closed = False
        self.gate: asyncio.Event | None = None  # when set, requests wait for it
        self.write_failure: BaseException | None = None  # raised by the next stream write
        self.kv = SimpleNamespace(Range=self._method("Range"), Txn=self._method("Txn"))
        self.lease = SimpleNamespace(LeaseKeepAlive=self._open_keep_alive)
        self.watch = SimpleNamespace(Watch=self._open_watch)
        self.auth = SimpleNamespace(Authenticate=self._authenticate)

    def _method(self, name: str) -> Callable[..., Any]:
        async def send(request: Any, *, timeout: float, metadata: Metadata) -> Any:
            self.received.append((name, metadata))
            if self.gate is not None:
                await self.gate.wait()
            return self._next(self._outcomes, OK)

        return send

    def _open_keep_alive(self, *, timeout: float, metadata: Metadata) -> Any:
        """A keep-alive stream whose one answer is the next scripted outcome."""
        renew = self._method("LeaseKeepAlive")

        class Call:
            async def write(self, request: Any) -> None:
                self.request = request

            async def read(self) -> Any:
                return await renew(self.request, timeout=timeout, metadata=metadata)

            def cancel(self) -> None:
                pass

        return Call()

    async def _authenticate(self, request: Any, *, timeout: float) -> Any:
        self.tokens += 1
        return self._next(self._auth, SimpleNamespace(token=f"{self.endpoint}#{self.tokens}"))

    def _open_watch(self, *, metadata: Metadata) -> Any:
        self.received.append(("Watch", metadata))
        member = self

        class Call:
            async def write(self, request: Any) -> None:
                failure, member.write_failure = member.write_failure, None
                if failure is not None:
                    raise failure

            async def read(self) -> Any:
                return member._next(member._outcomes, grpc.aio.EOF)

            def cancel(self) -> None:
                pass

        return Call()

    @staticmethod
    def _next(script: list[Any], default: Any) -> Any:
        outcome = script.pop(0) if script else default
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def close(self) -> None:
        self.closed = True


class Cluster:
    """Fake members by endpoint, and a session on them."""

    def __init__(self, scripts: dict[str, list[Any]], auth: dict[str, list[Any]] | None = None):
        self.members = {
            e: FakeMember(e, list(s), list((auth or {}).get(e, []))) for e, s in scripts.items()
        }
        self.observed: list[tuple[str, str | None]] = []
        self.refused: list[str] = []
        self.accepted = 0

    def session(self, credentials: tuple[str, str] | None = None) -> EtcdSession:
        cluster = self

        class Refusals:
            def refused(self, reason: str, message: str) -> None:
                cluster.refused.append(reason)

            def accepted(self) -> None:
                cluster.accepted += 1

        return EtcdSession(
            list(self.members),
            timeout=1.0,
            credentials=credentials,
            observe=lambda op, _seconds, code: self.observed.append((op, code)),
            refusals=Refusals(),
            connect=self.members.__getitem__,
        )

    def requests(self, endpoint: str) -> list[str]:
        return [method for method, _ in self.members[endpoint].received]

    def tokens_sent(self, endpoint: str) -> list[str]:
        return [dict(md).get("token", "") for _, md in self.members[endpoint].received]


RANGE_REQUEST = rpc.RangeRequest(key=b"/k")


# -- classification: a pure function of the code, etcd's words and the operation -------------


@pytest.mark.parametrize(
    ("code", "detail", "what", "authenticating", "family", "recovery"),
    [
        (CODE.UNAVAILABLE, "connection refused", "range", False, EtcdUnavailable, "FAIL_OVER"),
        (CODE.DEADLINE_EXCEEDED, "", "txn", True, EtcdUnavailable, "FAIL_OVER"),
        (CODE.UNAUTHENTICATED, "invalid auth token", "txn", True, EtcdUnavailable,
         "REAUTHENTICATE"),
        (CODE.UNAUTHENTICATED, "user name is empty", "txn", False, EtcdError, "SURFACE"),
        (CODE.INVALID_ARGUMENT, "etcdserver: key not found", "range", True, EtcdError, "SURFACE"),
        (CODE.PERMISSION_DENIED, "permission denied", "txn", True, EtcdError, "SURFACE"),
        (CODE.OUT_OF_RANGE, "mvcc: required revision has been compacted", "range", False,
         Compacted, "SURFACE"),
        (CODE.UNAVAILABLE, "etcdserver: too many requests", "txn", False, EtcdBusy, "SURFACE"),
        (CODE.RESOURCE_EXHAUSTED, "mvcc: database space exceeded", "txn", False, EtcdBusy,
         "SURFACE"),
        (CODE.RESOURCE_EXHAUSTED, "received message larger than max (9 vs. 8)", "range", False,
         TooLarge, "SURFACE"),
        (CODE.NOT_FOUND, "requested lease not found", "lease", False, EtcdUnavailable, "SURFACE"),
        (CODE.INTERNAL, "", "range", False, EtcdUnavailable, "SURFACE"),
    ],
)  # fmt: skip
def test_classification(
    code: grpc.StatusCode,
    detail: str,
    what: str,
    authenticating: bool,
    family: type[Exception],
    recovery: str,
) -> None:
    """Each failure maps to one error family and one recovery, the same on every call."""
    first = classify(code, detail, what, authenticating=authenticating)
    assert type(first.error) is family
    assert first.recovery is Recovery[recovery]
    again = classify(code, detail, what, authenticating=authenticating)
    assert (type(again.error), str(again.error), again.recovery) == (
        type(first.error),
        str(first.error),
        first.recovery,
    )


def test_classification_names_the_operation_and_etcds_words() -> None:
    failure = classify(CODE.RESOURCE_EXHAUSTED, "received message larger than max", "txn")
    assert isinstance(failure.error, TooLarge)
    assert failure.error.reason == "request_too_large"  # ours to send, not to receive
    assert str(failure.error) == (
        "etcd refused txn: RESOURCE_EXHAUSTED: received message larger than max"
    )


# -- the retry policy ----------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [None, CREDENTIALS], ids=["no-auth", "auth"])
@pytest.mark.parametrize("code", [CODE.UNAVAILABLE, CODE.DEADLINE_EXCEEDED])
async def test_unreachable_member_fails_over_and_the_call_goes_to_the_next(
    code: grpc.StatusCode, credentials: tuple[str, str] | None
) -> None:
    """The first member does not answer: the same call is answered by the second, with or
    without auth; the first connection is closed."""
    cluster = Cluster({"http://a:1": [_error(code)], "http://b:2": [], "http://c:3": []})
    session = cluster.session(credentials)
    assert await session.call(RANGE, RANGE_REQUEST) is OK
    assert session.endpoint == "http://b:2"
    assert cluster.requests("http://a:1") == ["Range"]
    assert cluster.requests("http://b:2") == ["Range"]
    assert cluster.observed == [("range", code.name), ("range", None)]
    await asyncio.sleep(0)  # the old channel is closed in the background
    assert cluster.members["http://a:1"].closed
    if credentials is not None:  # a token is only good on the member that issued it
        assert cluster.tokens_sent("http://b:2") == ["http://b:2#1"]


async def test_a_call_is_retried_once_then_surfaces() -> None:
    """Two members down in a row: the call fails after one retry; the next call goes on."""
    down = _error(CODE.UNAVAILABLE, "connection refused")
    cluster = Cluster({"http://a:1": [down], "http://b:2": [down], "http://c:3": []})
    session = cluster.session()
    with pytest.raises(EtcdUnavailable, match="UNAVAILABLE"):
        await session.call(RANGE, RANGE_REQUEST)
    assert cluster.requests("http://c:3") == []
    assert session.endpoint == "http://c:3"
    assert await session.call(RANGE, RANGE_REQUEST) is OK


async def test_a_call_on_a_channel_closed_under_it_is_retried_on_the_next_member() -> None:
    """grpc.aio cancels a call whose channel is closed (another call's failover): not the
    caller's cancellation, so the call goes to the next member."""
    cluster = Cluster({"http://a:1": [asyncio.CancelledError()], "http://b:2": []})
    session = cluster.session()
    assert await session.call(RANGE, RANGE_REQUEST) is OK
    assert cluster.requests("http://b:2") == ["Range"]
    assert cluster.observed == [("range", "CANCELLED"), ("range", None)]


async def test_the_callers_own_cancellation_stays_a_cancellation() -> None:
    cluster = Cluster({"http://a:1": [], "http://b:2": []})
    cluster.members["http://a:1"].gate = asyncio.Event()  # never set: the call hangs
    session = cluster.session()
    call = asyncio.create_task(session.call(RANGE, RANGE_REQUEST))
    await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert cluster.requests("http://b:2") == []
    assert session.endpoint == "http://a:1"


async def test_one_endpoint_unreachable_surfaces_without_retry() -> None:
    """With nowhere to fail over to, the call is not repeated on the same member."""
    cluster = Cluster({"http://a:1": [_error(CODE.UNAVAILABLE)]})
    session = cluster.session(CREDENTIALS)
    with pytest.raises(EtcdUnavailable):
        await session.call(RANGE, RANGE_REQUEST)
    assert cluster.requests("http://a:1") == ["Range"]


async def test_expired_token_is_refreshed_once_then_the_call_is_retried() -> None:
    """UNAUTHENTICATED with a token: authenticate again on the same member, retry with the
    new token; no failover."""
    expired = _error(CODE.UNAUTHENTICATED, "etcdserver: invalid auth token")
    cluster = Cluster({"http://a:1": [expired], "http://b:2": []})
    session = cluster.session(CREDENTIALS)
    assert await session.call(RANGE, RANGE_REQUEST) is OK
    assert cluster.tokens_sent("http://a:1") == ["http://a:1#1", "http://a:1#2"]
    assert session.endpoint == "http://a:1"
    assert cluster.requests("http://b:2") == []


async def test_token_refused_twice_surfaces() -> None:
    expired = _error(CODE.UNAUTHENTICATED, "etcdserver: invalid auth token")
    cluster = Cluster({"http://a:1": [expired, expired]})
    session = cluster.session(CREDENTIALS)
    with pytest.raises(EtcdUnavailable, match="auth token expired"):
        await session.call(RANGE, RANGE_REQUEST)
    assert cluster.members["http://a:1"].tokens == 2


async def test_wrong_password_surfaces_at_once() -> None:
    """Authenticate refused: an EtcdError naming the user, no request sent, no retry."""
    refused = _error(CODE.INVALID_ARGUMENT, "etcdserver: authentication failed")
    cluster = Cluster({"http://a:1": [], "http://b:2": []}, auth={"http://a:1": [refused]})
    session = cluster.session(CREDENTIALS)
    with pytest.raises(EtcdError, match="authentication as 'root'"):
        await session.call(RANGE, RANGE_REQUEST)
    assert cluster.requests("http://a:1") == []
    assert session.endpoint == "http://a:1"


@pytest.mark.parametrize("credentials", [None, CREDENTIALS], ids=["no-auth", "auth"])
@pytest.mark.parametrize(
    ("error", "family"),
    [
        (_error(CODE.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"),
         TooLarge),
        (_error(CODE.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"),
         EtcdError),
        (_error(CODE.PERMISSION_DENIED, "etcdserver: permission denied"), EtcdError),
        (_error(CODE.UNAVAILABLE, "etcdserver: too many requests"), EtcdBusy),
        (_error(CODE.INTERNAL, "stream terminated"), EtcdUnavailable),
    ],
)  # fmt: skip
async def test_other_failures_surface_at_once(
    error: grpc.aio.AioRpcError, family: type[Exception], credentials: tuple[str, str] | None
) -> None:
    """A refusal or an unknown failure: raised on the first attempt, no failover."""
    cluster = Cluster({"http://a:1": [error], "http://b:2": []})
    session = cluster.session(credentials)
    with pytest.raises(family):
        await session.call(TXN, rpc.TxnRequest())
    assert cluster.requests("http://a:1") == ["Txn"]
    assert session.endpoint == "http://a:1"
    assert cluster.requests("http://b:2") == []


async def test_refusals_are_told_and_accepted_writes_end_them() -> None:
    """The refusal observer hears each refusal, then each accepted write (a txn with a put),
    not reads."""
    nospace = _error(CODE.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
    cluster = Cluster({"http://a:1": [nospace]})
    session = cluster.session()
    put = rpc.TxnRequest(success=[rpc.RequestOp(request_put=rpc.PutRequest(key=b"k"))])
    with pytest.raises(EtcdBusy):
        await session.call(TXN, put)
    assert cluster.refused == ["nospace"]
    await session.call(RANGE, RANGE_REQUEST)
    assert cluster.accepted == 0
    await session.call(TXN, put)
    assert cluster.accepted == 1


async def test_concurrent_failures_of_one_member_fail_over_once() -> None:
    """Two calls in flight when the member fails: one hop, both retried on the next member."""
    down = _error(CODE.UNAVAILABLE)
    cluster = Cluster({"http://a:1": [down, down], "http://b:2": [], "http://c:3": []})
    cluster.members["http://a:1"].gate = gate = asyncio.Event()
    session = cluster.session()
    calls = [asyncio.create_task(session.call(RANGE, RANGE_REQUEST)) for _ in range(2)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*calls) == [OK, OK]
    assert session.endpoint == "http://b:2"
    assert cluster.requests("http://b:2") == ["Range", "Range"]


async def test_lease_keep_alive_takes_the_same_path() -> None:
    """A keep-alive on an unreachable member is renewed on the next one, observed as "lease"."""
    cluster = Cluster({"http://a:1": [_error(CODE.UNAVAILABLE)], "http://b:2": []})
    session = cluster.session()
    assert await session.call(LEASE_KEEP_ALIVE, rpc.LeaseKeepAliveRequest(ID=7)) is OK
    assert cluster.requests("http://b:2") == ["LeaseKeepAlive"]
    assert cluster.observed == [("lease", "UNAVAILABLE"), ("lease", None)]


async def test_a_broken_watch_fails_over_and_surfaces() -> None:
    """A watch stream is not retried by the session: it fails over and raises, and the next
    watch opens on the next member."""
    cluster = Cluster(
        {"http://a:1": [_error(CODE.UNAVAILABLE, "Stream removed")], "http://b:2": []}
    )
    session = cluster.session(CREDENTIALS)
    with pytest.raises(EtcdUnavailable, match="etcd watch failed: UNAVAILABLE"):
        async for _ in EtcdWatches(session).watch({"/p/": 1}, progress_every=60):
            pass
    assert cluster.requests("http://a:1") == ["Watch"]
    assert cluster.requests("http://b:2") == []
    assert session.endpoint == "http://b:2"
    assert dict(cluster.members["http://a:1"].received[0][1])["hasleader"] == "true"


async def test_a_watch_stream_ended_while_it_is_created_fails_over_and_surfaces() -> None:
    """grpc.aio refuses a write to a stream that has ended (InvalidStateError, "RPC already
    finished"), as when etcd dies between two watch creations: an outage like any other, never
    an exception that ends the watcher."""
    cluster = Cluster({"http://a:1": [], "http://b:2": []})
    finished = asyncio.InvalidStateError("RPC already finished.")
    cluster.members["http://a:1"].write_failure = finished
    session = cluster.session(CREDENTIALS)
    with pytest.raises(EtcdUnavailable, match="the stream ended"):
        async for _ in EtcdWatches(session).watch({"/p/": 1, "/q/": 1}, progress_every=60):
            pass
    assert session.endpoint == "http://b:2"
