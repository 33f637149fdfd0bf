"""A model of Pullpiri's NodeAgent as a caller of the StateManager service, built from its
source (`src/agent/nodeagent/src/manager.rs`, the container-list loop; `grpc/sender.rs`): each
poll it compares the node's container list with the previous one, ignoring stats; when it
changed, it records the new list as the previous one *first*, then sends
`SendChangedContainerList` once, to one configured address, the whole list under its
hostname. An error is printed and nothing is resent until the list changes again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import grpc

from statemanager.proto import statemanager_pb2 as pb

Send = Callable[[pb.ContainerList], Awaitable[object]]


class NodeAgent:
    """One node's agent: `poll` with the node's current containers, as its loop does."""

    def __init__(self, hostname: str, send: Send) -> None:
        self.hostname = hostname
        self._send = send
        self._previous: list[pb.ContainerInfo] = []
        self.sent = 0
        self.lost: list[str] = []  # the status of every send that failed: never resent

    async def poll(self, containers: Sequence[pb.ContainerInfo]) -> None:
        """One turn of the loop: send the list once if it changed (stats aside)."""
        if _without_stats(containers) == _without_stats(self._previous):
            return
        self._previous = list(containers)  # recorded before the send, as NodeAgent does
        self.sent += 1
        try:
            await self._send(pb.ContainerList(node_name=self.hostname, containers=containers))
        except grpc.aio.AioRpcError as exc:
            self.lost.append(f"{exc.code().name}: {exc.details()}")


def _without_stats(containers: Sequence[pb.ContainerInfo]) -> list[bytes]:
    stripped = []
    for c in containers:
        copy = pb.ContainerInfo()
        copy.CopyFrom(c)
        copy.ClearField("stats")
        stripped.append(copy.SerializeToString(deterministic=True))
    return stripped
