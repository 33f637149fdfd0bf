"""Pullpiri's StateManager service in process, on the in-memory etcd and virtual time: a node's
container list flows through the watch into states; a follower refuses and names the leader."""

from __future__ import annotations

import grpc
import pytest

from statemanager.proto import statemanager_pb2 as pb

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, package, state, until
from support.servicer import Aborted, container_list, send_list

pytestmark = pytest.mark.looptime


def web_list(node: str, **statuses: str) -> pb.ContainerList:
    """`node`'s list of payment.web containers: id=status each."""
    return container_list(
        node,
        [
            (cid, "payment.web", status, "1" if status == "exited" else "0")
            for cid, status in statuses.items()
        ],
    )


async def test_container_lists_drive_states_through_the_watch() -> None:
    """A node's list is stored where the watch reads it: the model fails with a dead container;
    the next list without that container deletes it, and the model runs again."""
    mem = MemEtcd()
    package(mem, "payment", ["payment.web"])
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        svc = rt.parts.service
        await send_list(svc, web_list("node-a", web="running", db="exited"))
        await until(lambda: state(mem, "package", "payment") == "Error")
        assert state(mem, "model", "payment.web") == "Failed"
        await send_list(svc, web_list("node-a", web="running"))
        await until(lambda: state(mem, "package", "payment") == "Running")
        assert mem.range_now(f"{LAYOUT.containers}db".encode()).count == 0


async def test_follower_refuses_container_lists_and_names_the_leader() -> None:
    """Only the leader writes: a follower answers UNAVAILABLE with the leader's node name and
    stores nothing."""
    mem = MemEtcd()
    async with Runtime(mem, "node-a") as a, Runtime(mem, "node-b") as b:
        await until(lambda: a.parts.election.fence() is not None and b.parts.election.decided)
        with pytest.raises(Aborted) as refused:
            await send_list(b.parts.service, web_list("node-b", web="running"))
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert "node-a" in refused.value.details
        assert mem.range_now(LAYOUT.containers.encode() + b"web").count == 0
