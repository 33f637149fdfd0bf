"""ActionController client: the only module that imports the generated ActionController stubs.

One grpc.aio channel with keepalive, a deadline on every call, TLS when a CA file is given.
Callers get a `ReconcileOutcome`, never a grpc exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from statemanager.config import TlsFiles
from statemanager.proto import actioncontroller_pb2 as pb
from statemanager.proto import actioncontroller_pb2_grpc as pb_grpc

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5_000),
]


@dataclass(frozen=True, slots=True)
class ReconcileOutcome:
    """`acknowledged` when ActionController answered status 0. `result` is a metric label:
    ok, rejected (non-zero status), unavailable, or error (any other gRPC failure)."""

    acknowledged: bool
    result: str
    detail: str


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
            unavailable = exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
            )
            detail = f"{exc.code().name}: {exc.details()}"
            return ReconcileOutcome(False, "unavailable" if unavailable else "error", detail)
        if response.status == 0:
            return ReconcileOutcome(True, "ok", response.desc)
        return ReconcileOutcome(False, "rejected", f"status {response.status}: {response.desc}")

    async def close(self) -> None:
        await self._channel.close()
