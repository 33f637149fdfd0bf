"""What subscribers to the stream of transitions cost the daemon's changes (a benchmark, not a
test): `statemanager bench --subscribers 100`.

The change latency (a container update's commit to its model state's commit, benchload's
`latency` phase) is measured twice on one daemon: alone, then with `count` streams of
SubscribeToStateChanges open and read by this process, every transition of every type to
each of them. The figures are the two latencies, what the subscribers received (each should
have every transition committed meanwhile) and how many were cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

CHANNELS = 10  # connections the subscribers share
FLEET = (10_000, 2_000, 500)  # containers, models, packages: 2,000 changes per latency run


@dataclass(frozen=True, slots=True)
class WithSubscribers:
    """The latency run's result with the subscribers open, and what they got."""

    latency: dict[str, Any]
    received_min: int  # the fewest transitions any subscriber received
    received_max: int
    ended: int  # streams the daemon ended before the run was over (cut off)


async def measure(target: str, count: int, run: Callable[[], dict[str, Any]]) -> WithSubscribers:
    """Run `run` (a blocking latency run) while `count` subscribers read every transition from
    the service at `target`."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    received = [0] * count
    ended = 0
    try:
        calls = [
            pb_grpc.StateManagerConnectionStub(channels[i % CHANNELS]).SubscribeToStateChanges(  # type: ignore[no-untyped-call]
                pb.StateChangeSubscriptionRequest()
            )
            for i in range(count)
        ]
        for call in calls:
            await call.initial_metadata()  # live: every later transition reaches it

        async def read(i: int, call: Any) -> None:
            nonlocal ended
            try:
                async for _ in call:
                    received[i] += 1
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.CANCELLED:
                    ended += 1

        readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(calls)]
        latency = await asyncio.to_thread(run)
        await _settled(received)
        for call in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)  # cancelled: CancelledError
    finally:
        for channel in channels:
            await channel.close()
    return WithSubscribers(latency, min(received), max(received), ended)


async def _settled(received: list[int], seconds: float = 30.0) -> None:
    """Wait until every subscriber has as many transitions as the others and none arrived for
    half a second (the last ones of the run are still on their way), or `seconds` passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    before: tuple[int, int] | None = None
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        now = (min(received), max(received))
        if now == before and now[0] == now[1]:
            return
        before = now
