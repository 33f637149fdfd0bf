"""How large a burst of concurrent calls the StateManager gRPC service answers in full (a
benchmark, not a test): `statemanager bench --burst 2000,4000,8000`.

Each burst is what the platform sends at once: half `SendChangedContainerList` calls, each a
distinct node reporting one running container (NodeAgents), half `SendStateChange` calls
confirming a model's derived state (the other components), all in flight together over
`CHANNELS` connections. A burst is served in full when every list is stored and every state
change answered SUCCESS, as each would be alone; anything else is counted by its gRPC code
(a `CANCELLED` is a call gRPC dropped before the service saw it).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

CHANNELS = 50  # connections the callers share: many processes, far fewer than calls
CALL_DEADLINE = 120.0  # seconds: a call slower than this counts as DEADLINE_EXCEEDED
_MODEL_ANNOTATION = "io.pullpiri.annotations.model"
_ids = itertools.count()


@dataclass(frozen=True, slots=True)
class Burst:
    """What a burst's calls got: answers by outcome (`ok`, or a gRPC code's name, or an
    ErrorCode's name for a state change answered otherwise) and how long the burst took."""

    outcomes: Counter[str]
    seconds: float

    @property
    def full(self) -> bool:
        """Whether every call of the burst was answered OK."""
        return set(self.outcomes) <= {"ok"}


def node_list(node: str, model: str) -> pb.ContainerList:
    """One node's list of one running container of `model`, with an id no other call uses."""
    cid = f"burst-{node}-{next(_ids)}"
    return pb.ContainerList(
        node_name=node,
        containers=[
            pb.ContainerInfo(
                id=cid,
                names=[f"{model}_app"],
                state={"Status": "running"},
                annotation={_MODEL_ANNOTATION: model},
            )
        ],
    )


def confirmation(model: str, state: str) -> pb.StateChange:
    """A SendStateChange asserting the state the rules derive for `model`."""
    return pb.StateChange(
        resource_type=pb.ResourceType.MODEL,
        resource_name=model,
        current_state="Pending" if state != "Pending" else "Running",
        target_state=state,
        transition_id=f"burst-{next(_ids)}",
        timestamp_ns=time.time_ns(),
        source="burst",
    )


async def burst(
    stubs: Sequence[Any],
    lists: Sequence[pb.ContainerList],
    changes: Sequence[pb.StateChange],
) -> Burst:
    """Send every list and state change at once, spread over `stubs`, and wait for all."""

    async def outcome(call: Callable[..., Any], request: Any) -> str:
        try:
            answer = await call(request, timeout=CALL_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        if isinstance(answer, pb.StateChangeResponse) and answer.error_code:
            return str(pb.ErrorCode.Name(answer.error_code))
        return "ok"

    calls = [
        outcome(stubs[i % len(stubs)].SendChangedContainerList, r) for i, r in enumerate(lists)
    ]
    calls += [outcome(stubs[i % len(stubs)].SendStateChange, r) for i, r in enumerate(changes)]
    started = time.monotonic()
    outcomes = Counter(await asyncio.gather(*calls))
    return Burst(outcomes, time.monotonic() - started)


async def measure(
    target: str, sizes: Sequence[int], model: str, state: str, nodes: str = "node"
) -> list[tuple[int, Burst]]:
    """Each burst size in turn against the service at `target`, its lists from nodes named
    `{nodes}-{i}` reporting containers of `model`, its changes confirming `state`."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    stubs = [pb_grpc.StateManagerConnectionStub(c) for c in channels]  # type: ignore[no-untyped-call]
    results = []
    try:
        for size in sizes:
            lists = [node_list(f"{nodes}-{i}", model) for i in range(size // 2)]
            changes = [confirmation(model, state) for _ in range(size - size // 2)]
            results.append((size, await burst(stubs, lists, changes)))
    finally:
        for channel in channels:
            await channel.close()
    return results
