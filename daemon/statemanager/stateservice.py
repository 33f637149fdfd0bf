"""Pullpiri's StateManager gRPC service, served so this daemon can replace Pullpiri's own
(issue 10): the only module that imports the generated StateManager stubs.

One source of truth: `SendChangedContainerList` only writes container info where the watch
reads it (and deletes the node's containers it no longer lists), so states are derived by the
normal path. `SendStateChange` never forces a state: it checks the request against what the
rules derive and answers with the cascade, or with the error code that explains the refusal.
Both are leader-only; a follower names the leader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
import structlog

from statemanager.errors import EtcdUnavailable
from statemanager.etcd import TXN_LIMITS, Delete, Fence, Put
from statemanager.index import Index
from statemanager.keys import KeyLayout, Resource, WorkKey, name_problem
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc
from statemanager.writer import TxnClient

log = structlog.get_logger("statemanager.stateservice")

_RESOURCES = {pb.ResourceType.MODEL: Resource.MODEL, pb.ResourceType.PACKAGE: Resource.PACKAGE}


class ServiceLeadership(Protocol):
    def fence(self) -> Fence | None: ...
    def leader_name(self) -> str | None: ...


class StateService(pb_grpc.StateManagerConnectionServicer):
    def __init__(
        self,
        index: Index,
        layout: KeyLayout,
        store: TxnClient,
        leadership: ServiceLeadership,
        on_confirmed: Callable[[WorkKey], None],
    ) -> None:
        self._index = index
        self._layout = layout
        self._store = store
        self._leadership = leadership
        self._on_confirmed = on_confirmed

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
                name=request.resource_name,
                target=request.target_state,
                transition_id=request.transition_id,
                source=request.source,
                answer=pb.ErrorCode.Name(code),
            )
            return pb.StateChangeResponse(
                message=message,
                transition_id=request.transition_id,
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
        problem = name_problem(node) if node else "node_name is empty"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"node_name: {problem}")
        ops: list[Put | Delete] = []
        listed: set[str] = set()
        for container in request.containers:
            bad = name_problem(container.id) if container.id else "empty id"
            if bad:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container id {container.id[:80]!r}: {bad}"
                )
            listed.add(container.id)
            ops.append(Put(self._key(container.id), _container_json(container, node)))
        gone = sorted(self._index.containers_on(node) - listed)
        ops += [Delete(self._key(cid)) for cid in gone]
        fence = self._leadership.fence()
        if fence is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._not_leader())
        try:
            await self._write(ops, fence)
        except EtcdUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"etcd unavailable: {exc}")
        except _Fenced:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self._not_leader())
        log.info("container_list", node=node, stored=len(listed), deleted=len(gone))
        return pb.SendContainerListResponse(
            resp=f"stored {len(listed)} containers of node {node}, deleted {len(gone)}"
        )

    def _key(self, cid: str) -> bytes:
        return f"{self._layout.containers}{cid}".encode()

    async def _write(self, ops: Sequence[Put | Delete], fence: Fence) -> None:
        """In transactions within etcd's limits, each fenced on leadership."""
        for chunk in TXN_LIMITS.chunks(ops, fence):
            result = await self._store.txn([], chunk, fence)
            if result.fenced:
                raise _Fenced


class _Fenced(Exception):
    """Leadership was lost between the check and the write."""


def _request_problems(request: pb.StateChange) -> list[str]:
    problems = []
    for field in ("resource_name", "transition_id", "source"):
        if not getattr(request, field):
            problems.append(f"{field} is empty")
    if request.resource_type not in pb.ResourceType.values() or request.resource_type == 0:
        problems.append(f"resource_type {request.resource_type} is not a known type")
    if request.timestamp_ns <= 0:
        problems.append("timestamp_ns must be positive")
    if request.current_state == request.target_state:
        problems.append(f"current_state and target_state are both {request.target_state!r}")
    return problems


def _container_json(container: pb.ContainerInfo, node: str) -> bytes:
    """The container info JSON the watch reads (SPEC §2), plus the reporting node."""
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


async def serve(service: StateService, address: str) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_StateManagerConnectionServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(address)
    await server.start()
    return server
