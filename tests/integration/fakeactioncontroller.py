"""A real grpc.aio ActionController in the test process: what the daemon's Reconcile
delivery and TriggerOffloading forwarding call (docs/contract.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from statemanager.devtools.localetcd import free_port
from statemanager.proto import actioncontroller_pb2 as pb
from statemanager.proto import actioncontroller_pb2_grpc as pb_grpc

from conftest import Certs


class FakeActionController(pb_grpc.ActionControllerConnectionServicer):
    """Records every Reconcile and OffloadModel request; fails them with `refusal` (a gRPC code
    and message) while that is set, else answers Reconcile the queued statuses, then 0, and
    OffloadModel `offload_answer`."""

    def __init__(self, port: int, tls: Certs | None = None) -> None:
        self.port = port
        self.tls = tls
        self.requests: list[pb.ReconcileRequest] = []
        self.statuses: list[int] = []
        self.offloads: list[pb.OffloadModelRequest] = []
        self.offload_answer = pb.OffloadModelResponse(success=True, message="offloaded")
        self.refusal: tuple[grpc.StatusCode, str] | None = None
        self._server: grpc.aio.Server | None = None

    async def Reconcile(
        self, request: pb.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconcileResponse:
        self.requests.append(request)
        if self.refusal is not None:
            await context.abort(*self.refusal)
        status = self.statuses.pop(0) if self.statuses else 0
        return pb.ReconcileResponse(status=status, desc="ok" if status == 0 else "busy")

    async def OffloadModel(
        self, request: pb.OffloadModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.OffloadModelResponse:
        self.offloads.append(request)
        if self.refusal is not None:
            await context.abort(*self.refusal)
        return self.offload_answer

    async def start(self) -> None:
        self._server = grpc.aio.server()
        pb_grpc.add_ActionControllerConnectionServicer_to_server(self, self._server)
        address = f"127.0.0.1:{self.port}"
        if self.tls is None:
            self._server.add_insecure_port(address)
        else:  # mutual TLS: the client must present a certificate signed by the CA
            credentials = grpc.ssl_server_credentials(
                [(self.tls.server_key.read_bytes(), self.tls.server_cert.read_bytes())],
                root_certificates=self.tls.ca.read_bytes(),
                require_client_auth=True,
            )
            self._server.add_secure_port(address, credentials)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
            self._server = None

    def scenarios(self) -> list[str]:
        return [r.scenario_name for r in self.requests]


@contextlib.asynccontextmanager
async def fake_controller() -> AsyncIterator[FakeActionController]:
    """An ActionController on a free port, not started yet; stopped on the way out."""
    fake = FakeActionController(free_port())
    try:
        yield fake
    finally:
        await fake.stop()
