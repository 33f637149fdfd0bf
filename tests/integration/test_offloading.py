"""TriggerOffloading forwarded to a real grpc.aio ActionController's OffloadModel, and the
legacy SendAction, as Pullpiri's StateManager answers them (README.md, Offloading)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from statemanager.proto import actioncontroller_pb2 as ac_pb
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import serving
from conftest import Daemon, DaemonMaker
from fakeactioncontroller import FakeActionController, fake_controller

Stubs = Callable[[int], pb_grpc.StateManagerConnectionStub]
REQUEST = pb.OffloadingRequest(
    scenario_name="hvac",
    package_name="hvac-pkg",
    model_name="hvac.fan",
    source_node="node-a",
    target_node="node-b",
    policy_name="cpu-policy",
    reason="CPU threshold exceeded: 75% > 50%",
)


@pytest.fixture
async def controller() -> AsyncIterator[FakeActionController]:
    async with fake_controller() as fake:
        yield fake


async def offloading_daemon(
    daemon_factory: DaemonMaker, controller: FakeActionController
) -> tuple[Daemon, int]:
    d = daemon_factory(
        STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{controller.port}",
        STATEMANAGER_ACTIONCONTROLLER_TIMEOUT_SECONDS="1",
    )
    port = serving(d)
    d.start()
    await d.wait_synced()
    return d, port


def counted(d: Daemon, result: str) -> bool:
    return f'statemanager_offloading_requests_total{{result="{result}"}} 1.0' in d.scrape()


async def test_offloading_reaches_actioncontroller_with_every_field(
    daemon_factory: DaemonMaker, controller: FakeActionController, stub_for: Stubs
) -> None:
    """ActionController receives OffloadModel with the request's fields; its success and
    message are the answer, with a transition id as Pullpiri's StateManager makes it."""
    await controller.start()
    d, port = await offloading_daemon(daemon_factory, controller)
    before = time.time_ns() // 1_000_000
    answer = await stub_for(port).TriggerOffloading(REQUEST)
    assert answer.accepted
    assert answer.message == "offloaded"
    match = re.fullmatch(r"offload-hvac\.fan-node-a-(\d+)", answer.transition_id)
    assert match is not None, answer.transition_id
    assert before <= int(match.group(1)) <= time.time_ns() // 1_000_000
    [received] = controller.offloads
    # Field for field the same message: TriggerOffloading's numbers are OffloadModel's.
    assert received == ac_pb.OffloadModelRequest.FromString(REQUEST.SerializeToString())
    assert received.reason == "CPU threshold exceeded: 75% > 50%"
    assert received.target_node == "node-b"
    [line] = d.events("offloading")
    assert line["transition_id"] == answer.transition_id
    assert line["result"] == "accepted"
    assert counted(d, "accepted")

    controller.offload_answer = ac_pb.OffloadModelResponse(success=False, message="no capacity")
    refused = await stub_for(port).TriggerOffloading(REQUEST)
    assert not refused.accepted
    assert refused.message == "no capacity"
    assert counted(d, "refused")


async def test_offloading_with_actioncontroller_down(
    daemon_factory: DaemonMaker, controller: FakeActionController, stub_for: Stubs
) -> None:
    """Not started: `accepted = false` and the reason once the deadline passes, answered
    (not a gRPC error); started, it is reached at once."""
    d, port = await offloading_daemon(daemon_factory, controller)
    answer = await stub_for(port).TriggerOffloading(REQUEST)
    assert not answer.accepted
    assert answer.message.startswith("Failed to offload: DEADLINE_EXCEEDED"), answer.message
    assert answer.transition_id.startswith("offload-hvac.fan-node-a-")
    assert counted(d, "unavailable")

    await controller.start()
    controller.refusal = (grpc.StatusCode.UNIMPLEMENTED, "no OffloadModel here")
    unimplemented = await stub_for(port).TriggerOffloading(REQUEST)
    assert not unimplemented.accepted
    assert unimplemented.message == "Failed to offload: UNIMPLEMENTED: no OffloadModel here"


async def test_send_action_is_unavailable_with_the_action_text(
    daemon_factory: DaemonMaker, controller: FakeActionController, stub_for: Stubs
) -> None:
    _, port = await offloading_daemon(daemon_factory, controller)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub_for(port).SendAction(pb.Action(action="launch hvac"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "launch hvac"
