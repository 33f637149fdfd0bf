"""Pullpiri's StateManager gRPC service, served so this daemon can replace Pullpiri's own:
the only module that imports the generated StateManager stubs.

One source of truth: `SendChangedContainerList` only stores the node's whole list where the
watch reads it (adapters/nodereports.py), so states are derived by the normal path; any daemon
stores one, leader or follower. `SendStateChange` never forces a state: it checks the request
against what the rules derive and answers with the cascade, or with the error code that
explains the refusal (leader only; a follower names the leader).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError, Message

from statemanager.adapters.etcd import Fence, KeyValue, TxnClient
from statemanager.adapters.nodereports import (
    CHUNK_BYTES,
    Conflict,
    NewerList,
    NodeReports,
    Stored,
)
from statemanager.adapters.tls import ServerTls
from statemanager.core.errors import BadInput, EtcdError, EtcdUnavailable
from statemanager.core.index import Index
from statemanager.core.inputs import check_size, parse_container
from statemanager.core.keys import KeyLayout, Resource, WorkKey, name_problem
from statemanager.core.nodelists import chunk_line
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

log = structlog.get_logger("statemanager.stateservice")

_RESOURCES = {pb.ResourceType.MODEL: Resource.MODEL, pb.ResourceType.PACKAGE: Resource.PACKAGE}
_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)
_MAX_TEXT = 1024  # characters in a StateChange's free-text fields (ids, states, source)
# The largest request served (gRPC's default is 4 MiB): a node's whole list, ~130,000
# containers of Pullpiri's usual ~500 bytes. Larger ones get RESOURCE_EXHAUSTED from gRPC.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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
        on_list: Callable[[str], None],
        node_identity: bool = False,
    ) -> None:
        self._index = index
        self._layout = layout
        self._store = store
        self._reports = NodeReports(store, layout, min(CHUNK_BYTES, max_value_bytes))
        self._on_list = on_list  # told each list's result, one of LIST_RESULTS
        self._node_identity = node_identity
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
            containers = self._containers(request)
            if self._node_identity:
                _check_identity(node, context.auth_context())
            stored = await self._store_list(node, containers)
        except _Refused as exc:
            self._on_list(exc.result)
            log.info("container_list_refused", node=_clip(node), code=exc.code.name, error=exc.text)
            await context.abort(exc.code, exc.text)
        self._on_list("stored")
        log.info(
            "container_list",
            node=node,
            containers=len(containers),
            previous=stored.previous,
            generation=stored.generation,
            chunks=stored.chunks,
            revision=stored.revision,
        )
        return pb.SendContainerListResponse(
            resp=f"stored {len(containers)} containers of node {node} at revision "
            f"{stored.revision}, replacing its list of {stored.previous or 0}"
        )

    async def _store_list(self, node: str, containers: dict[str, bytes]) -> Stored:
        """The list stored as node's current one; _Refused with why when it was not."""
        kept = "the node's previous list stays current"
        try:
            return await self._reports.store(node, containers)
        except Conflict as exc:
            raise _Refused(grpc.StatusCode.ABORTED, str(exc), "conflict") from None
        except NewerList as exc:
            raise _Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc), "later_format") from None
        except EtcdUnavailable as exc:
            text = f"etcd unavailable: {exc}; {kept}"
            raise _Refused(grpc.StatusCode.UNAVAILABLE, text, "unavailable") from None
        except EtcdError as exc:
            text = f"etcd refused the list: {exc}; {kept}"
            raise _Refused(grpc.StatusCode.UNAVAILABLE, text, "unavailable") from None

    def _containers(self, request: pb.ContainerList) -> dict[str, bytes]:
        """The list's container info values by id; _Refused unless every one is a value the
        watch accepts (so the service never stores what it would then reject)."""
        node = request.node_name
        problem = name_problem(node)
        if problem:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, f"node_name: {problem}")
        containers: dict[str, bytes] = {}
        for container in request.containers:
            cid = container.id
            bad = name_problem(cid) or ("listed twice" if cid in containers else None)
            if bad:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container id {_clip(cid)!r}: {bad}"
                )
            value = _container_json(container, node)
            try:
                check_size(chunk_line(cid, value), self._max_value_bytes)
                parse_container(value)
            except BadInput as exc:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container {cid}: {exc.detail}"
                ) from None
            containers[cid] = value
        return containers


class _Refused(Exception):
    """The answer to a request that was not (or not wholly) stored: nothing was written;
    `result` is one of nodereports.LIST_RESULTS."""

    def __init__(self, code: grpc.StatusCode, text: str, result: str = "invalid") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.result = result


# Where gRPC's auth context puts a verified client certificate's names.
_CERT_NAMES = ("x509_common_name", "x509_subject_alternative_name")


def _check_identity(node: str, auth: Mapping[str, Iterable[bytes]]) -> None:
    """_Refused unless `node` is the client certificate's CN or one of its SANs (a node
    reports only for itself, as Kubernetes' NodeRestriction limits kubelets)."""
    names = {n.decode("utf-8", "replace") for field in _CERT_NAMES for n in auth.get(field, ())}
    if node not in names:
        shown = ", ".join(sorted(names)) or "no certificate"
        raise _Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            f"node_name {_clip(node)!r} is not this client's certificate identity ({shown}): "
            "a node reports only its own containers",
            "not_this_node",
        )


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
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
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
