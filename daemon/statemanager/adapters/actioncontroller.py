"""ActionController client: the only module that imports the generated ActionController stubs.

One grpc.aio channel with keepalive, a deadline on every call, TLS when a CA file is given.
Callers get a `ReconcileOutcome` or an `OffloadOutcome`, never a grpc exception.

Delivery policy, per answer (README, "Reconcile delivery"):

- status 0: acknowledged (`ok`).
- gRPC UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, CANCELLED: ActionController
  is down, unreachable (TLS handshake failures included), overloaded or slow; the same request
  may well succeed later. Retried with backoff for as long as it takes (`unavailable`).
- any other gRPC code (INTERNAL, INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND,
  UNIMPLEMENTED, PERMISSION_DENIED, UNAUTHENTICATED, UNKNOWN, ...): ActionController answered
  and said no (`error`); a non-zero status in the response likewise (`rejected`). Both are
  *refusals*: retried with backoff, but counted, and a trigger refused too often or for too
  long moves to the dead letters. Pullpiri's ActionController answers INTERNAL "Invalid current
  status: Failed" to every request for a package in Error, so without this limit such a trigger
  would be retried forever.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import grpc

from statemanager.adapters.tls import TlsFiles
from statemanager.core.ports import ReconcileOutcome
from statemanager.proto import actioncontroller_pb2 as pb
from statemanager.proto import actioncontroller_pb2_grpc as pb_grpc

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]

# The policy above, one entry per gRPC code (tests check that every code is in exactly one).
RETRIED_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)
REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNKNOWN,
    }
)


@dataclass(frozen=True, slots=True)
class OffloadOrder:
    """What a TriggerOffloading asks: move `model_name` of `package_name` (in
    `scenario_name`) from `source_node` to `target_node`, as `policy_name` decided, for
    `reason`. The fields of ActionController's OffloadModelRequest, one for one."""

    scenario_name: str
    package_name: str
    model_name: str
    source_node: str
    target_node: str
    policy_name: str
    reason: str


@dataclass(frozen=True, slots=True)
class OffloadOutcome:
    """ActionController's answer to OffloadModel: `success` and `message` as it answered;
    `reached` is False when no answer came (down, unreachable, timed out, or a gRPC error:
    `message` then says which)."""

    reached: bool
    success: bool
    message: str


class ActionControllerClient:
    """Create inside the running event loop (grpc.aio)."""

    def __init__(self, address: str, timeout: float, tls: TlsFiles | None = None) -> None:
        self._timeout = timeout
        if tls is None:
            self._channel = grpc.aio.insecure_channel(address, _CHANNEL_OPTIONS)
        else:
            credentials = grpc.ssl_channel_credentials(*tls.pem())
            self._channel = grpc.aio.secure_channel(address, credentials, _CHANNEL_OPTIONS)
        # The generated stub is untyped; `reconcile` below is the typed surface.
        self._stub: Any = pb_grpc.ActionControllerConnectionStub(self._channel)  # type: ignore[no-untyped-call]

    async def reconcile(self, scenario: str) -> ReconcileOutcome:
        """Ask ActionController to take `scenario`'s package from FAILED back to RUNNING."""
        request = pb.ReconcileRequest(
            scenario_name=scenario, current=pb.PodStatus.FAILED, desired=pb.PodStatus.RUNNING
        )
        try:
            response = await self._stub.Reconcile(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}"
            if exc.code() in RETRIED_CODES:
                return ReconcileOutcome(False, False, "unavailable", detail)
            return ReconcileOutcome(False, True, "error", detail)
        if response.status == 0:
            return ReconcileOutcome(True, False, "ok", response.desc)
        detail = f"status {response.status}: {response.desc}"
        return ReconcileOutcome(False, True, "rejected", detail)

    async def offload(self, order: OffloadOrder) -> OffloadOutcome:
        """Ask ActionController to move a model between nodes (OffloadModel), once: the call
        waits up to the deadline for the channel to connect (PolicyManager never sends it
        again, so a channel between reconnection attempts must not lose it)."""
        try:
            response = await self._stub.OffloadModel(
                pb.OffloadModelRequest(**asdict(order)),
                timeout=self._timeout,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            return OffloadOutcome(False, False, f"{exc.code().name}: {exc.details()}")
        return OffloadOutcome(True, response.success, response.message)

    async def close(self) -> None:
        await self._channel.close()
