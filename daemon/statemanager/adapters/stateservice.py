"""Pullpiri's StateManager gRPC service, served so this daemon can replace Pullpiri's own:
the only module that imports the generated StateManager stubs.

One source of truth: `SendChangedContainerList` only writes container info where the watch
reads it (and deletes the node's containers it no longer lists), so states are derived by the
normal path. `SendStateChange` never forces a state: it checks the request against what the
rules derive and answers with the cascade, or with the error code that explains the refusal.
Both are leader-only; a follower names the leader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError, Message

from statemanager.adapters.etcd import TXN_LIMITS, Delete, Fence, Guard, KeyValue, Put, TxnClient
from statemanager.adapters.tls import ServerTls
from statemanager.core.errors import BadInput, EtcdError, EtcdUnavailable, TooLarge
from statemanager.core.index import Index
from statemanager.core.inputs import check_size, parse_container
from statemanager.core.keys import KeyLayout, Resource, WorkKey, name_problem
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

log = structlog.get_logger("statemanager.stateservice")

_RESOURCES = {pb.ResourceType.MODEL: Resource.MODEL, pb.ResourceType.PACKAGE: Resource.PACKAGE}
_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)
_LIST_ATTEMPTS = 3  # a node's list read and written again when a concurrent change beat it
_MAX_TEXT = 1024  # characters in a StateChange's free-text fields (ids, states, source)


class ServiceStore(TxnClient, Protocol):
    async def get(self, key: bytes) -> KeyValue | None: ...


class ServiceLeadership(Protocol):
    def fence(self) -> Fence | None: ...
    def leader_name(self) -> str | None: ...


class StateService(pb_grpc.StateManagerConnectionServicer):
    def __init__(
        self,
        *,
        index: Index,
        layout: KeyLayout,
        store: ServiceStore,
        leadership: ServiceLeadership,
        on_confirmed: Callable[[WorkKey], None],
        max_value_bytes: int,
    ) -> None:
        self._index = index
        self._layout = layout
        self._store = store
        self._leadership = leadership
        self._on_confirmed = on_confirmed
        self._max_value_bytes = max_value_bytes

    def _not_leader(self) -> str:
        leader = self._leadership.leader_name() or "unknown (election in progress)"
        return f"this daemon is not the leader; the leader is {leader}"

    async def SendStateChange(
        self,
        request: pb.StateChange,
        context: grpc.aio.ServicerContext[pb.StateChange, pb.StateChangeResponse],
    ) -> pb.StateChangeResponse:
        def reply(code: int, message: str = "", details: str = "") -> pb.StateChangeResponse:
            log.info(
                "state_change_request",
                resource_type=pb.ResourceType.Name(request.resource_type)
                if request.resource_type in pb.ResourceType.values()
                else request.resource_type,
                name=_clip(request.resource_name),
                target=_clip(request.target_state),
                transition_id=_clip(request.transition_id),
                source=_clip(request.source),
                answer=pb.ErrorCode.Name(code),
            )
            return pb.StateChangeResponse(
                message=message,
                transition_id=_clip(request.transition_id, _MAX_TEXT),
                timestamp_ns=time.time_ns(),
                error_code=code,  # type: ignore[arg-type]
                error_details=details,
            )

        problems = _request_problems(request)
        if problems:
            return reply(pb.ErrorCode.INVALID_REQUEST, details="; ".join(problems))
        resource = _RESOURCES.get(request.resource_type)
        type_name = pb.ResourceType.Name(request.resource_type).lower()
        if resource is None:
            return reply(
                pb.ErrorCode.RESOURCE_NOT_FOUND,
                details=f"statemanager derives model and package states only, not {type_name}",
            )
        if self._leadership.fence() is None:
            return reply(pb.ErrorCode.RESOURCE_UNAVAILABLE, details=self._not_leader())
        key = WorkKey(resource, request.resource_name)
        verdict = self._index.verdict(key)
        if verdict is None:
            return reply(pb.ErrorCode.RESOURCE_NOT_FOUND, details=f"no {type_name} {key.name!r}")
        if request.target_state != verdict.state:
            return reply(
                pb.ErrorCode.INVALID_STATE_TRANSITION,
                details=f"{type_name} {key.name} is {verdict.state} by the rules "
                f"({verdict.rule}: {verdict.reason}), not {request.target_state}",
            )
        self._on_confirmed(key)
        return reply(pb.ErrorCode.SUCCESS, message="\n".join(self._cascade(key)))

    def _cascade(self, key: WorkKey) -> list[str]:
        """The confirmed state and, for a model, the state of every package it moves."""
        keys = [key]
        if key.resource is Resource.MODEL:
            keys += [
                WorkKey(Resource.PACKAGE, p) for p in sorted(self._index.packages_of(key.name))
            ]
        lines = []
        for k in keys:
            verdict = self._index.verdict(k)
            if verdict is not None:
                lines.append(
                    f"{k.resource} {k.name}: {verdict.state} ({verdict.rule}, {verdict.reason})"
                )
        return lines

    async def SendChangedContainerList(
        self,
        request: pb.ContainerList,
        context: grpc.aio.ServicerContext[pb.ContainerList, pb.SendContainerListResponse],
    ) -> pb.SendContainerListResponse:
        node = request.node_name
        try:
            puts = self._puts(request)
            fence = self._leadership.fence()
            if fence is None:
                raise _Refused(grpc.StatusCode.UNAVAILABLE, self._not_leader())
            deleted = await self._store_list(node, puts, fence)
        except _Refused as exc:
            log.info("container_list_refused", node=_clip(node), code=exc.code.name, error=exc.text)
            await context.abort(exc.code, exc.text)
        log.info("container_list", node=node, stored=len(puts), deleted=deleted)
        return pb.SendContainerListResponse(
            resp=f"stored {len(puts)} containers of node {node}, deleted {deleted}"
        )

    def _puts(self, request: pb.ContainerList) -> dict[str, Put]:
        """The container keys a list writes, by id; _Refused unless every one of them is a
        value the watch accepts (so the service never stores what it would then reject)."""
        node = request.node_name
        problem = name_problem(node)
        if problem:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"node_name: {problem}")
        most = TXN_LIMITS.max_ops - 1  # the node's record takes one operation
        if len(request.containers) > most:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{len(request.containers)} containers in one list; at most {most}: a list is "
                "stored in one etcd transaction, whole or not at all",
            )
        puts: dict[str, Put] = {}
        for container in request.containers:
            cid = container.id
            bad = name_problem(cid) or ("listed twice" if cid in puts else None)
            if bad:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container id {_clip(cid)!r}: {bad}"
                )
            value = _container_json(container, node)
            try:
                check_size(value, self._max_value_bytes)
                parse_container(value)
            except BadInput as exc:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container {cid}: {exc.detail}"
                ) from None
            puts[cid] = Put(self._key(cid), value)
        return puts

    async def _store_list(self, node: str, puts: dict[str, Put], fence: Fence) -> int:
        """Store a node's list in one fenced transaction: its containers, the deletion of those
        it reported before and lists no more, and its record of what it listed. Returns how
        many were deleted.

        What to delete is read from etcd, never from the watch-fed index (which lags behind the
        previous list when lists come back to back): the node's record of its last list, plus
        the index's idea as a hint, each candidate read and deleted only if it still says this
        node, guarded on its mod revision like the record; a guard that fails means a
        concurrent change, so everything is read again.
        """
        record_key = self._record_key(node)
        record_value = "\n".join(sorted(puts)).encode()
        for _ in range(_LIST_ATTEMPTS):
            try:
                record = await self._store.get(record_key)
                dropped = await self._dropped(node, puts, record)
                guards = [*dropped, Guard(record_key, record.mod_revision if record else 0)]
                ops: list[Put | Delete] = [
                    *puts.values(),
                    *(Delete(g.key) for g in dropped),
                    Put(record_key, record_value),
                ]
                self._check_fits(guards, ops, fence)
                result = await self._store.txn(guards, ops, fence)
            except EtcdUnavailable as exc:
                raise _Refused(grpc.StatusCode.UNAVAILABLE, f"etcd unavailable: {exc}") from None
            except TooLarge as exc:
                raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
            except EtcdError as exc:
                raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
            if result.fenced:
                raise _Refused(grpc.StatusCode.UNAVAILABLE, self._not_leader())
            if result.succeeded:
                return len(dropped)
        raise _Refused(
            grpc.StatusCode.ABORTED,
            f"node {node}'s containers changed under each of {_LIST_ATTEMPTS} attempts "
            "(lists of one node sent concurrently?); nothing was stored",
        )

    async def _dropped(
        self, node: str, puts: dict[str, Put], record: KeyValue | None
    ) -> list[Guard]:
        """Guards on the container keys this node reported before and no longer lists."""
        before = set(record.value.decode("utf-8", "replace").split()) if record else set()
        candidates = (before | self._index.containers_on(node)) - puts.keys()
        guards = []
        for cid in sorted(candidates):
            if name_problem(cid):
                continue  # not an id this service could have written
            kv = await self._store.get(self._key(cid))
            if kv is not None and _reported_by(kv.value) == node:
                guards.append(Guard(kv.key, kv.mod_revision))
        return guards

    def _check_fits(self, guards: list[Guard], ops: list[Put | Delete], fence: Fence) -> None:
        """_Refused unless the transaction is within etcd's limits: it is sent whole or not."""
        limits = TXN_LIMITS
        compares = len(guards) + 1  # and the fence
        size = limits.guarded_write_bytes(fence.key, None)
        size += sum(limits.put_bytes(op.key, op.value) if isinstance(op, Put) else 0 for op in ops)
        size += sum(limits.guarded_write_bytes(g.key, None) for g in guards)
        if max(compares, len(ops)) > limits.max_ops or size > limits.byte_budget:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this list needs {len(ops)} operations, {compares} compares and about {size} "
                f"bytes in one etcd transaction; etcd takes {limits.max_ops} and "
                f"{limits.byte_budget} bytes: send fewer or smaller containers",
            )

    def _key(self, cid: str) -> bytes:
        return f"{self._layout.containers}{cid}".encode()

    def _record_key(self, node: str) -> bytes:
        return f"{self._layout.own}nodes/{node}/containers".encode()


class _Refused(Exception):
    """The answer to a request that was not (or not wholly) stored: nothing was written."""

    def __init__(self, code: grpc.StatusCode, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def _reported_by(value: bytes) -> str | None:
    """The node that reported a stored container value through this service, if any."""
    try:
        return parse_container(value).node
    except BadInput:
        return None


def _clip(text: str, most: int = 80) -> str:
    """A request's text as logs and answers may quote it: a megabyte name is not echoed."""
    return text if len(text) <= most else f"{text[:most]}… ({len(text)} characters)"


def _request_problems(request: pb.StateChange) -> list[str]:
    problems = []
    for field in ("resource_name", "transition_id", "source"):
        if not getattr(request, field):
            problems.append(f"{field} is empty")
    bad_name = request.resource_name and name_problem(request.resource_name)
    if bad_name:
        problems.append(f"resource_name: {bad_name}")
    for field in ("transition_id", "source", "current_state", "target_state"):
        if len(getattr(request, field)) > _MAX_TEXT:
            problems.append(f"{field} is longer than {_MAX_TEXT} characters")
    if request.resource_type not in pb.ResourceType.values() or request.resource_type == 0:
        problems.append(f"resource_type {request.resource_type} is not a known type")
    if request.timestamp_ns <= 0:
        problems.append("timestamp_ns must be positive")
    if request.current_state == request.target_state:
        problems.append(f"current_state and target_state are both {_clip(request.target_state)!r}")
    return problems


def _container_json(container: pb.ContainerInfo, node: str) -> bytes:
    """The container info JSON the watch reads (docs/contract.md, Reads), plus the reporting
    node."""
    doc = {
        "id": container.id,
        "names": list(container.names),
        "image": container.image,
        "state": dict(container.state),
        "config": dict(container.config),
        "annotation": dict(container.annotation),
        "stats": dict(container.stats),
        "node": node,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def add_to_server(service: StateService, server: grpc.aio.Server) -> None:
    """Register the service with total request parsing: bytes that are no valid message get
    INVALID_ARGUMENT saying so, not the UNKNOWN gRPC answers when a deserializer raises."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "SendStateChange": _handler(
            service.SendStateChange, pb.StateChange, pb.StateChangeResponse
        ),
        "SendChangedContainerList": _handler(
            service.SendChangedContainerList, pb.ContainerList, pb.SendContainerListResponse
        ),
    }
    generic = grpc.method_handlers_generic_handler("statemanager.StateManagerConnection", handlers)
    server.add_generic_rpc_handlers((generic,))


@dataclass(frozen=True, slots=True)
class _Malformed:
    """What the deserializer hands the handler for bytes that are no valid request."""

    error: str


def _handler(
    behaviour: Callable[[_Req, grpc.aio.ServicerContext[_Req, _Resp]], Awaitable[_Resp]],
    request_type: type[_Req],
    response_type: type[_Resp],
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    def parse(raw: bytes) -> _Req | _Malformed:
        try:
            return request_type.FromString(raw)
        except DecodeError as exc:
            return _Malformed(str(exc))

    async def handle(
        request: _Req | _Malformed, context: grpc.aio.ServicerContext[_Req, _Resp]
    ) -> _Resp:
        if isinstance(request, _Malformed):
            name = request_type.DESCRIPTOR.full_name
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {name}: {request.error}"
            )
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=parse,  # type: ignore[arg-type]  # also _Malformed: see handle
        response_serializer=response_type.SerializeToString,
    )


async def serve(service: StateService, address: str, tls: ServerTls | None) -> grpc.aio.Server:
    """Start serving on `address`: plaintext, or only TLS with `tls` (and only clients whose
    certificate `tls.client_ca` signed, when it is set)."""
    server = grpc.aio.server()
    add_to_server(service, server)
    if tls is None:
        server.add_insecure_port(address)
    else:
        key, chain, client_ca = tls.pem()
        credentials = grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )
        server.add_secure_port(address, credentials)
    await server.start()
    return server
