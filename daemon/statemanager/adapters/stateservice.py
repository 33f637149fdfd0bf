"""Pullpiri's StateManager gRPC service, served so this daemon can replace Pullpiri's own:
with queryservice.py (the queries it registers too), the only module that imports the
generated StateManager stubs.

One source of truth: `SendChangedContainerList` only stores the node's whole list where the
watch reads it (adapters/nodereports.py), so states are derived by the normal path; any daemon
stores one, leader or follower. `SendStateChange` never forces a model or package state: it
checks the request against what the rules derive from this daemon's index (any daemon
answers, saying at which etcd revision) and answers with the cascade, or with the error code
that explains the refusal. A scenario's state is not derived but asserted: a change is judged
against the scenario lifecycle (core/scenarios.py) and the state stored in etcd, and stored
by one transaction guarded on the key's mod revision, so of two daemons answering concurrent
changes only one wins; its history record (core/history.py) goes in that transaction, its
generation read after the state it is guarded on, so the guard also keeps it right.
`TriggerOffloading` is forwarded to ActionController's OffloadModel.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError, Message

from statemanager.adapters.actioncontroller import OffloadOrder, OffloadOutcome
from statemanager.adapters.nodereports import CHUNK_BYTES, Conflict, NewerList, NodeReports, Stored
from statemanager.adapters.queryservice import QueryService
from statemanager.adapters.tls import ServerTls
from statemanager.core.errors import BadInput, EtcdError, EtcdUnavailable
from statemanager.core.history import SOURCE, Transition, encode, record_ops
from statemanager.core.index import Index
from statemanager.core.inputs import check_size, parse_container, parse_scenario
from statemanager.core.keys import KeyLayout, Kind, Resource, WorkKey, name_problem
from statemanager.core.nodelists import chunk_line
from statemanager.core.ports import Delete, Guard, KeyValue, Put, TxnClient, TxnResult
from statemanager.core.scenarios import Step, decide, is_initialisation
from statemanager.core.timestamps import timestamp
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

log = structlog.get_logger("statemanager.stateservice")

_RESOURCES = {pb.ResourceType.MODEL: Resource.MODEL, pb.ResourceType.PACKAGE: Resource.PACKAGE}
_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", bound=Message)
_SCENARIO_ATTEMPTS = 3  # a scenario change judged again when a concurrent change beat it
_MAX_TEXT = 1024  # characters in a StateChange's free-text fields (ids, states, source)
# The largest request served (gRPC's default is 4 MiB): a node's whole list, ~130,000
# containers of Pullpiri's usual ~500 bytes. Larger ones get RESOURCE_EXHAUSTED from gRPC.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServiceStore(TxnClient, Protocol):
    """ServiceStore reads keys and applies guarded transactions for the service's writes."""

    async def get(self, key: bytes) -> KeyValue | None: ...


class IndexProgress(Protocol):
    """IndexProgress tells the revision the index answers from."""

    @property
    def revision(self) -> int:
        """The newest etcd revision the index has followed etcd to (0 before any listing)."""
        ...


class ServiceMetrics(Protocol):
    """ServiceMetrics counts the scenario transitions and offloadings the service answered."""

    def scenario_transition(self, state: str) -> None: ...
    def offloading(self, result: str) -> None: ...


class Generations(Protocol):
    """Where resources' histories stand in etcd (runtime/history.py, HistoryHeads)."""

    async def newest(self, keys: Sequence[WorkKey]) -> dict[WorkKey, int]: ...


class Offloader(Protocol):
    """Offloader forwards an offloading to ActionController and says how it answered."""

    async def offload(self, order: OffloadOrder) -> OffloadOutcome: ...


_Answer = tuple[int, str, str]  # a StateChangeResponse's error code, message and details


class StateService(pb_grpc.StateManagerConnectionServicer):
    """StateService answers Pullpiri's StateManager gRPC calls (docs/contract.md)."""

    def __init__(
        self,
        *,
        index: Index,
        layout: KeyLayout,
        store: ServiceStore,
        progress: IndexProgress,
        on_confirmed: Callable[[WorkKey], None],
        max_value_bytes: int,
        on_list: Callable[[str], None],
        metrics: ServiceMetrics,
        offloader: Offloader | None,
        node_identity: bool = False,
        history: Generations | None = None,
        keep: int = 0,
        node: str | None = None,
    ) -> None:
        """`offloader` None: TriggerOffloading answers `accepted = false` (no ActionController
        to forward to: in-process tests). `history` None: scenario changes record no history;
        else each keeps its last `keep`, naming this daemon `node`."""
        self._index = index
        self._layout = layout
        self._store = store
        self._reports = NodeReports(store, layout, min(CHUNK_BYTES, max_value_bytes))
        self._on_list = on_list  # told each list's result, one of LIST_RESULTS
        self._node_identity = node_identity
        self._progress = progress
        self._on_confirmed = on_confirmed
        self._max_value_bytes = max_value_bytes
        self._metrics = metrics
        self._offloader = offloader
        self._history = history
        self._keep = keep
        self._node = node

    async def SendStateChange(
        self,
        request: pb.StateChange,
        context: grpc.aio.ServicerContext[pb.StateChange, pb.StateChangeResponse],
    ) -> pb.StateChangeResponse:
        """SendStateChange confirms a model or package state the rules derive, or judges and
        stores a scenario's; a refusal's code and details say why."""

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
        if request.resource_type == pb.ResourceType.SCENARIO:
            return reply(*await self._scenario_change(request))
        return reply(*self._derived_change(request))

    def _derived_change(self, request: pb.StateChange) -> _Answer:
        """A model or package change, answered from this daemon's index (leader or follower):
        confirmed when the rules derive the target, never forced."""
        resource = _RESOURCES.get(request.resource_type)
        type_name = pb.ResourceType.Name(request.resource_type).lower()
        if resource is None:
            return (
                pb.ErrorCode.RESOURCE_NOT_FOUND,
                "",
                f"statemanager keeps model, package and scenario states only, not {type_name}",
            )
        revision = self._progress.revision
        if revision == 0:
            return (
                pb.ErrorCode.RESOURCE_UNAVAILABLE,
                "",
                "this daemon has not read etcd yet (it is starting, or etcd is unreachable)",
            )
        at = f"answered from this daemon's index at etcd revision {revision}"
        key = WorkKey(resource, request.resource_name)
        verdict = self._index.verdict(key)
        if verdict is None:
            return pb.ErrorCode.RESOURCE_NOT_FOUND, at, f"no {type_name} {key.name!r}"
        if request.target_state != verdict.state:
            return (
                pb.ErrorCode.INVALID_STATE_TRANSITION,
                at,
                f"{type_name} {key.name} is {verdict.state} by the rules "
                f"({verdict.rule}: {verdict.reason}), not {request.target_state}",
            )
        self._on_confirmed(key)
        return pb.ErrorCode.SUCCESS, "\n".join([*self._cascade(key), at]), ""

    async def _scenario_change(self, request: pb.StateChange) -> _Answer:
        """Judge a scenario change against the lifecycle and the stored state, and store it
        (docs/contract.md, Scenario states); any daemon answers. etcd's failures are answered
        as such."""
        try:
            return await self._store_scenario_change(request)
        except EtcdUnavailable as exc:
            return pb.ErrorCode.RESOURCE_UNAVAILABLE, "", f"etcd unavailable: {exc}"
        except EtcdError as exc:
            return pb.ErrorCode.INTERNAL_ERROR, "", f"etcd refused: {exc}"

    async def _store_scenario_change(self, request: pb.StateChange) -> _Answer:
        """The answer to a scenario change, stored when allowed. The write is guarded on the
        state key's mod revision and value (a restore or a wipe can give that revision to
        another value) and on the Scenario spec's mod revision, so it never overwrites a change
        it did not judge from, nor outlives a spec deleted meanwhile; a lost race is judged
        again from what etcd holds then."""
        name = request.resource_name
        state_key = self._layout.key_of(Kind.SCENARIO_STATE, name).encode()
        spec_key = self._layout.key_of(Kind.SCENARIO_SPEC, name).encode()
        spec, stored = await self._store.get(spec_key), await self._store.get(state_key)
        for _ in range(_SCENARIO_ATTEMPTS):
            missing = _missing_scenario(name, spec_key, spec)
            if missing is not None or spec is None:  # an absent spec is missing
                return pb.ErrorCode.RESOURCE_NOT_FOUND, "", missing or ""
            value = stored.value.decode("utf-8", "replace") if stored else None
            step = decide(value, request.current_state, request.target_state)
            if isinstance(step, str):
                return pb.ErrorCode.INVALID_STATE_TRANSITION, "", f"scenario {name}: {step}"
            if step.unchanged:
                return pb.ErrorCode.SUCCESS, f"scenario {name} is {step.to_state} already", ""
            guards = [
                Guard(spec_key, spec.mod_revision),
                Guard(state_key, stored.mod_revision, stored.value)
                if stored
                else Guard(state_key, 0),
            ]
            recorded = await self._history_ops(request, value, step)
            result = await self._settled(guards, state_key, step.to_state.encode(), recorded)
            if result.succeeded:
                self._scenario_transition(request, value, step, result.revision)
                return (
                    pb.ErrorCode.SUCCESS,
                    f"scenario {name}: {value or '(none)'} → {step.to_state} ({step.event}) "
                    f"at etcd revision {result.revision}",
                    "",
                )
            spec, stored = result.current.get(spec_key), result.current.get(state_key)
        return (
            pb.ErrorCode.RESOURCE_UNAVAILABLE,
            "",
            f"scenario {name}'s state changed under each of {_SCENARIO_ATTEMPTS} attempts "
            "(changes of one scenario sent concurrently?); nothing was stored",
        )

    async def _history_ops(
        self, request: pb.StateChange, stored: str | None, step: Step
    ) -> list[Put | Delete]:
        """The history record of the change (and the retirement of what `keep` no longer
        holds), at the generation after the newest in etcd now: read after `stored`, so the
        guard on it fails if another change recorded one since."""
        if self._history is None:
            return []
        key = WorkKey(Resource.SCENARIO, request.resource_name)
        generation = (await self._history.newest([key]))[key] + 1
        record = Transition(
            transition_id=_clip(request.transition_id, _MAX_TEXT),
            resource=Resource.SCENARIO,
            name=key.name,
            from_state=stored,
            to_state=step.to_state.value,
            rule=step.event,
            reason=_reason(request, stored),
            timestamp_ns=time.time_ns(),
            cause_revision=0,
            revision=0,
            caused_by=None,
            source=_clip(request.source, _MAX_TEXT) or SOURCE,
            node=self._node,
        )
        return record_ops(self._layout, key, generation, encode(record), self._keep)

    async def _settled(
        self, guards: list[Guard], key: bytes, value: bytes, recorded: list[Put | Delete]
    ) -> TxnResult:
        """The guarded put of a scenario's state (with its `recorded` history); when etcd's
        answer is lost, the key read back says whether it landed (our value, newer than its
        guard: committed), so a change that was stored is never answered as refused.
        EtcdUnavailable when that is unknowable."""
        try:
            return await self._store.txn(guards, [Put(key, value), *recorded])
        except EtcdUnavailable:
            now = await self._store.get(key)
            if now is None or now.value != value or now.mod_revision <= guards[-1].mod_revision:
                raise
            log.info("answer_lost", key=key.decode("utf-8", "replace"), revision=now.mod_revision)
            return TxnResult(True, now.mod_revision, {})

    def _scenario_transition(
        self, request: pb.StateChange, stored: str | None, step: Step, revision: int
    ) -> None:
        """Log and count a committed scenario change, as the writer does model and package
        transitions (docs/contract.md, Transitions)."""
        self._metrics.scenario_transition(step.to_state)
        log.info(
            "transition",
            transition_id=_clip(request.transition_id),
            type=Resource.SCENARIO.value,
            name=request.resource_name,
            from_state=stored,
            to_state=step.to_state.value,
            rule=step.event,
            reason=_reason(request, stored),
            cause_revision=None,
            revision=revision,
            caused_by=None,
            timestamp=timestamp(time.time_ns()),
            source=_clip(request.source),
        )

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

    async def TriggerOffloading(
        self,
        request: pb.OffloadingRequest,
        context: grpc.aio.ServicerContext[pb.OffloadingRequest, pb.OffloadingResponse],
    ) -> pb.OffloadingResponse:
        """Forward PolicyManager's offloading to ActionController's OffloadModel, once, and
        answer its result; `accepted = false` with the reason when no answer came. Any daemon
        answers. The transition id is the one Pullpiri's StateManager makes."""
        transition_id = (
            f"offload-{request.model_name}-{request.source_node}-{time.time_ns() // 1_000_000}"
        )
        # The request's fields are OffloadModelRequest's, one for one (names and numbers).
        order = OffloadOrder(*(getattr(request, f.name) for f in fields(OffloadOrder)))
        if self._offloader is None:
            outcome = OffloadOutcome(False, False, "no ActionController is configured")
        else:
            outcome = await self._offloader.offload(order)
        result = "accepted" if outcome.success else "refused" if outcome.reached else "unavailable"
        self._metrics.offloading(result)
        message = outcome.message if outcome.reached else f"Failed to offload: {outcome.message}"
        log.info(
            "offloading",
            transition_id=transition_id,
            scenario=_clip(order.scenario_name),
            package=_clip(order.package_name),
            model=_clip(order.model_name),
            source_node=_clip(order.source_node),
            target_node=_clip(order.target_node),
            policy=_clip(order.policy_name),
            reason=_clip(order.reason),
            result=result,
            message=_clip(message, _MAX_TEXT),
        )
        return pb.OffloadingResponse(
            accepted=outcome.success, message=message, transition_id=transition_id
        )

    async def SendAction(
        self, request: pb.Action, context: grpc.aio.ServicerContext[pb.Action, pb.Response]
    ) -> pb.Response:
        """Pullpiri's legacy call, answered as its own StateManager does: gRPC UNAVAILABLE with
        the action's text as the status message (its first 1,024 characters)."""
        log.info("send_action", action=_clip(request.action))
        await context.abort(grpc.StatusCode.UNAVAILABLE, _clip(request.action, _MAX_TEXT))

    async def SendChangedContainerList(
        self,
        request: pb.ContainerList,
        context: grpc.aio.ServicerContext[pb.ContainerList, pb.SendContainerListResponse],
    ) -> pb.SendContainerListResponse:
        """SendChangedContainerList stores a node's whole container list, replacing its last
        (docs/contract.md, Node lists); the answer says what was stored or why not."""
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
            return await self._reports.store(node, list(containers.values()))
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
        """The list's containers by id, each as its line of a stored chunk (id, tab, info
        JSON); _Refused unless every one is a value the watch accepts (so the service never
        stores what it would then reject)."""
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
            line = chunk_line(cid, value)
            try:
                check_size(line, self._max_value_bytes)
                parse_container(value)
            except BadInput as exc:
                raise _Refused(
                    grpc.StatusCode.INVALID_ARGUMENT, f"container {cid}: {exc.detail}"
                ) from None
            containers[cid] = line
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


def _reason(request: pb.StateChange, stored: str | None) -> str:
    """Why a scenario's state changed, in its transition's log line and history record."""
    none = "" if stored is not None else ", judged from its current_state: none stored"
    return f"requested by {_clip(request.source)}{none}"


def _clip(text: str, most: int = 80) -> str:
    """A request's text as logs and answers may quote it: a megabyte name is not echoed."""
    return text if len(text) <= most else f"{text[:most]}… ({len(text)} characters)"


def _request_problems(request: pb.StateChange) -> list[str]:
    """What makes a request invalid whatever etcd holds (INVALID_REQUEST)."""
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
    elif request.resource_type == pb.ResourceType.SCENARIO:
        problems += _scenario_problems(request)
    return problems


def _scenario_problems(request: pb.StateChange) -> list[str]:
    """Pullpiri's StateManager refuses empty states (its receiver's validate_state_change);
    the ApiServer's initialisation (empty current state, target idle) is let through."""
    if not request.target_state.strip():
        return ["target_state is empty"]
    if not request.current_state.strip() and not is_initialisation(
        request.current_state, request.target_state
    ):
        return [
            "current_state is empty (only the ApiServer's initialisation, empty → idle, "
            "may leave it empty)"
        ]
    return []


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


def add_to_server(
    service: StateService, server: grpc.aio.Server, queries: QueryService | None = None
) -> None:
    """Register the service, and the query RPCs with `queries`, with total request parsing:
    bytes that are no valid message get INVALID_ARGUMENT saying so, not the UNKNOWN gRPC
    answers when a deserializer raises."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "SendStateChange": _handler(
            service.SendStateChange, pb.StateChange, pb.StateChangeResponse
        ),
        "SendChangedContainerList": _handler(
            service.SendChangedContainerList, pb.ContainerList, pb.SendContainerListResponse
        ),
        "TriggerOffloading": _handler(
            service.TriggerOffloading, pb.OffloadingRequest, pb.OffloadingResponse
        ),
        "SendAction": _handler(service.SendAction, pb.Action, pb.Response),
    }
    if queries is not None:
        handlers |= {
            "GetResourceState": _handler(
                queries.GetResourceState, pb.ResourceStateRequest, pb.ResourceStateResponse
            ),
            "GetResourceStateHistory": _handler(
                queries.GetResourceStateHistory,
                pb.ResourceStateHistoryRequest,
                pb.ResourceStateHistoryResponse,
            ),
            "ListResourcesByState": _handler(
                queries.ListResourcesByState,
                pb.ListResourcesByStateRequest,
                pb.ListResourcesByStateResponse,
            ),
            "ForceSynchronization": _handler(
                queries.ForceSynchronization, pb.ForceSynchronizationRequest, pb.StateChangeResponse
            ),
            "GetRecoveryStatus": _handler(
                queries.GetRecoveryStatus, pb.RecoveryStatusRequest, pb.RecoveryStatusResponse
            ),
            "SubscribeToStateChanges": _stream_handler(
                queries.SubscribeToStateChanges, pb.StateChangeSubscriptionRequest
            ),
        }
    generic = grpc.method_handlers_generic_handler("statemanager.StateManagerConnection", handlers)
    server.add_generic_rpc_handlers((generic,))


@dataclass(frozen=True, slots=True)
class _Malformed:
    """What the deserializer hands the handler for bytes that are no valid request."""

    error: str


def _parser(request_type: type[_Req]) -> Callable[[bytes], _Req | _Malformed]:
    def parse(raw: bytes) -> _Req | _Malformed:
        try:
            return request_type.FromString(raw)
        except DecodeError as exc:
            return _Malformed(str(exc))

    return parse


async def _refuse_malformed(
    request: object, request_type: type[Message], context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    if isinstance(request, _Malformed):
        name = request_type.DESCRIPTOR.full_name
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"not a valid {name}: {request.error}"
        )


def _handler(
    behaviour: Callable[[_Req, grpc.aio.ServicerContext[_Req, _Resp]], Awaitable[_Resp]],
    request_type: type[_Req],
    response_type: type[_Resp],
) -> grpc.RpcMethodHandler[_Req, _Resp]:
    async def handle(
        request: _Req | _Malformed, context: grpc.aio.ServicerContext[_Req, _Resp]
    ) -> _Resp:
        await _refuse_malformed(request, request_type, context)
        return await behaviour(request, context)  # type: ignore[arg-type]  # not _Malformed

    return grpc.unary_unary_rpc_method_handler(
        handle,
        request_deserializer=_parser(request_type),  # type: ignore[arg-type]  # see handle
        response_serializer=response_type.SerializeToString,
    )


def _stream_handler(
    behaviour: Callable[[_Req, grpc.aio.ServicerContext[_Req, Any]], AsyncIterator[bytes]],
    request_type: type[_Req],
) -> grpc.RpcMethodHandler[_Req, bytes]:
    """`_handler` for a call answered by a stream of messages `behaviour` serializes itself
    (one serialization of a transition serves every subscriber)."""

    async def handle(
        request: _Req | _Malformed, context: grpc.aio.ServicerContext[_Req, Any]
    ) -> AsyncIterator[bytes]:
        await _refuse_malformed(request, request_type, context)
        async for response in behaviour(request, context):  # type: ignore[arg-type]
            yield response

    return grpc.unary_stream_rpc_method_handler(
        handle,
        request_deserializer=_parser(request_type),  # type: ignore[arg-type]  # see handle
        response_serializer=bytes,
    )


PENDING_PER_CALL = 10  # calls gRPC may queue, per call the service may handle at once
MAX_WAIT_SECONDS = 120  # how long a call may wait in that queue (gRPC's default: 30 s)


def server_options(max_calls: int) -> list[tuple[str, int]]:
    """gRPC core's queue of calls received and not yet taken by the service: at its default
    size (1,000) a burst of 2,000 callers sees ~10 % of its calls CANCELLED before they reach
    the service, and at its default wait (30 s) so does every call of a burst the service has
    not reached by then. The service takes calls off it at a few thousand a second whatever
    they ask, so a burst waits there, not in handlers; the handlers' limit (`max_calls`,
    RESOURCE_EXHAUSTED beyond) is what fills when etcd is slow or unreachable
    (docs/contract.md, Bursts)."""
    pending = PENDING_PER_CALL * max_calls
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", pending),
        ("grpc.server_max_unrequested_time_in_server", MAX_WAIT_SECONDS),
    ]


async def serve(
    service: StateService,
    address: str,
    tls: ServerTls | None,
    max_calls: int,
    queries: QueryService | None = None,
) -> grpc.aio.Server:
    """Start serving on `address`: plaintext, or only TLS with `tls` (and only clients whose
    certificate `tls.client_ca` signed, when it is set). At most `max_calls` calls are
    handled at once (more are answered RESOURCE_EXHAUSTED), and PENDING_PER_CALL times as many
    may wait in gRPC's queue."""
    options = [*server_options(max_calls), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    server = grpc.aio.server(options=options, maximum_concurrent_rpcs=max_calls)
    add_to_server(service, server, queries)
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


def _missing_scenario(name: str, spec_key: bytes, spec: KeyValue | None) -> str | None:
    """Why scenario `name` cannot take a state (its spec is absent or invalid), or None."""
    if spec is None:
        return f"no scenario {name!r}: {spec_key.decode()} is not in etcd"
    try:
        parse_scenario(spec.value, name)
    except BadInput as exc:
        return f"{spec_key.decode()} is no valid Scenario ({exc.kind}: {exc.detail})"
    return None
