"""How large a node's whole container list the StateManager gRPC service stores, and how fast
(a benchmark, not a test): `statemanager bench --lists 10000,100000,200000`.

Each size is one `SendChangedContainerList` of that many containers from one node, as
NodeAgent sends it (once, the whole list), alternately with every container of the fleet's
first model dead and with all running: the time until the call is answered (the list stored)
and until that model's state in etcd is what the list calls for (the states written).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from statemanager.adapters.etcd import EtcdClient
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

NODE = "bench-node"
_MODEL_ANNOTATION = "io.pullpiri.annotations.model"
CALL_DEADLINE = 300.0


@dataclass(frozen=True, slots=True)
class Stored:
    """One list: its size in containers and bytes, seconds until stored and until the model
    state was written; `refused` is the gRPC code's name when it was not stored."""

    containers: int
    bytes: int
    stored_s: float | None
    written_s: float | None
    refused: str | None = None


def node_list(size: int, models: Sequence[str], dead: bool) -> pb.ContainerList:
    """`size` containers over `models`, those of the first exited with 137 when `dead`."""
    containers = []
    for i in range(size):
        model = models[i % len(models)]
        status, code = ("exited", "137") if dead and model == models[0] else ("running", "0")
        containers.append(
            pb.ContainerInfo(
                id=f"{NODE}-{i}",
                names=[f"{model}_app-{i}"],
                image="registry.example/app:1.0",
                state={"Status": status, "ExitCode": code, "OOMKilled": "false"},
                annotation={_MODEL_ANNOTATION: model},
                stats={"cpu": "0.5", "memory": "1024"},
            )
        )
    return pb.ContainerList(node_name=NODE, containers=containers)


async def measure(
    target: str, endpoint: str, sizes: Sequence[int], models: Sequence[str], model_states: str
) -> list[Stored]:
    """Each size in turn against the service at `target`, reading states from `endpoint`."""
    etcd = EtcdClient([endpoint], timeout=10)
    options = [("grpc.max_send_message_length", -1)]
    results = []
    try:
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]
            for n, size in enumerate(sizes):
                dead = n % 2 == 0
                request = node_list(size, models, dead)
                want = b"Failed" if dead else b"Running"
                results.append(
                    await _one(stub, etcd, request, f"{model_states}{models[0]}/state", want)
                )
    finally:
        await etcd.close()
    return results


async def _one(
    stub: pb_grpc.StateManagerConnectionStub,
    etcd: EtcdClient,
    request: pb.ContainerList,
    state_key: str,
    want: bytes,
) -> Stored:
    size, started = len(request.containers), time.monotonic()
    try:
        await stub.SendChangedContainerList(request, timeout=CALL_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return Stored(size, request.ByteSize(), None, None, exc.code().name)
    stored = time.monotonic() - started
    # Polled: a benchmark's reader, not the daemon; 10 ms is below what it measures.
    while (kv := await etcd.get(state_key.encode())) is None or kv.value != want:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return Stored(size, request.ByteSize(), stored, time.monotonic() - started)
