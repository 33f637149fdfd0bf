"""Pullpiri's StateManager gRPC service served by the daemon (issue 10), driven by a grpc.aio
client exactly as NodeAgent and other Pullpiri components would call it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from statemanager.localetcd import free_port
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from conftest import Daemon, Etcd, eventually, states_are


def serving(d: Daemon, node: str = "node-a") -> int:
    port = free_port()
    d.env.update(
        STATEMANAGER_GRPC_ENABLED="true",
        STATEMANAGER_GRPC_ADDRESS=f"127.0.0.1:{port}",
        STATEMANAGER_HA_NODE_NAME=node,
    )
    return port


@pytest.fixture
async def stub_for() -> AsyncIterator[Callable[[int], pb_grpc.StateManagerConnectionStub]]:
    channels: list[grpc.aio.Channel] = []

    def make(port: int) -> pb_grpc.StateManagerConnectionStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]

    yield make
    for channel in channels:
        await channel.close()


def change(**fields: object) -> pb.StateChange:
    base: dict[str, object] = {
        "resource_type": pb.ResourceType.MODEL,
        "resource_name": "web",
        "current_state": "Running",
        "target_state": "Failed",
        "transition_id": "t-1",
        "timestamp_ns": time.time_ns(),
        "source": "nodeagent",
    }
    base.update(fields)
    return pb.StateChange(**base)  # type: ignore[arg-type]


def container(cid: str, status: str, model: str, exit_code: str = "0") -> pb.ContainerInfo:
    return pb.ContainerInfo(
        id=cid,
        names=[f"{model}_{cid}"],
        image="registry/app:1",
        state={"Status": status, "ExitCode": exit_code},
        annotation={"io.pullpiri.annotations.model": model},
        stats={"cpu": "0.5"},
    )


async def test_state_change_answers_every_error_code(
    etcd: Etcd,
    daemon_factory: Callable[[], Daemon],
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """INVALID_REQUEST, RESOURCE_NOT_FOUND, INVALID_STATE_TRANSITION, SUCCESS with the cascade,
    and RESOURCE_UNAVAILABLE from a follower naming the leader."""
    leader = daemon_factory()
    port = serving(leader, "node-a")
    leader.start()
    await leader.wait_synced()
    follower = daemon_factory()
    follower_port = serving(follower, "node-b")
    follower.start()
    await follower.wait_synced()
    await etcd.package("shop", ["web", "db"])
    await etcd.container("w1", "running", "web")
    await etcd.container("d1", "running", "db")
    await states_are(etcd, {"web": "Running", "pkg:shop": "Running"})
    stub = stub_for(port)

    invalid = [
        change(resource_name=""),
        change(transition_id=""),
        change(source=""),
        change(resource_type=0),
        change(resource_type=42),
        change(timestamp_ns=0),
        change(current_state="Failed"),
    ]
    for request in invalid:
        answer = await stub.SendStateChange(request)
        assert answer.error_code == pb.ErrorCode.INVALID_REQUEST, request
        assert answer.error_details
        assert answer.transition_id == request.transition_id

    missing = await stub.SendStateChange(change(resource_name="nope"))
    assert missing.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND
    assert "nope" in missing.error_details
    scenario = await stub.SendStateChange(change(resource_type=pb.ResourceType.SCENARIO))
    assert scenario.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND

    contradicts = await stub.SendStateChange(change(target_state="Failed"))
    assert contradicts.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "is Running by the rules (M5" in contradicts.error_details

    await etcd.container("w1", "dead", "web")
    await states_are(etcd, {"web": "Failed", "pkg:shop": "Degraded"})
    ok = await stub.SendStateChange(change(target_state="Failed"))
    assert ok.error_code == pb.ErrorCode.SUCCESS, ok.error_details
    assert ok.message.splitlines() == [
        "model web: Failed (M2, 1 of 1 containers dead)",
        "package shop: Degraded (P3, 1 of 2 models Failed)",
    ]
    assert ok.timestamp_ns > 0

    busy = await stub_for(follower_port).SendStateChange(change(target_state="Failed"))
    assert busy.error_code == pb.ErrorCode.RESOURCE_UNAVAILABLE
    assert "node-a" in busy.error_details


async def test_container_list_drives_states_and_deletes_dropped_containers(
    etcd: Etcd,
    daemon_factory: Callable[[], Daemon],
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """A node's container list is written where the watch reads it: a dead container cascades
    to the package; a container the node stops listing is deleted."""
    d = daemon_factory()
    port = serving(d)
    d.start()
    await d.wait_synced()
    await etcd.package("pay", ["backend", "auth"])
    stub = stub_for(port)
    first = pb.ContainerList(
        node_name="node-1",
        containers=[container("b1", "running", "backend"), container("a1", "running", "auth")],
    )
    answer = await stub.SendChangedContainerList(first)
    assert answer.resp == "stored 2 containers of node node-1, deleted 0"
    await states_are(etcd, {"backend": "Running", "auth": "Running", "pkg:pay": "Running"})

    failed = pb.ContainerList(
        node_name="node-1",
        containers=[
            container("b1", "running", "backend"),
            container("a1", "exited", "auth", "137"),
        ],
    )
    await stub.SendChangedContainerList(failed)
    await states_are(etcd, {"auth": "Failed", "pkg:pay": "Degraded"})

    other_node = pb.ContainerList(
        node_name="node-2", containers=[container("x1", "running", "auth")]
    )
    await stub.SendChangedContainerList(other_node)
    dropped = pb.ContainerList(
        node_name="node-1", containers=[container("b1", "running", "backend")]
    )
    answer = await stub.SendChangedContainerList(dropped)
    assert answer.resp == "stored 1 containers of node node-1, deleted 1"

    async def deleted() -> bool:
        return await etcd.get(etcd.layout.containers + "a1") is None

    await eventually(deleted, 10, "the dropped container deleted")
    assert await etcd.get(etcd.layout.containers + "x1") is not None  # another node's: kept
    await states_are(etcd, {"auth": "Running", "pkg:pay": "Running"})

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SendChangedContainerList(
            pb.ContainerList(node_name="node-1", containers=[container("a/b", "running", "m")])
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "a/b" in (bad.value.details() or "")
