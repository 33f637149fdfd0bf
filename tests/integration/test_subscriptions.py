"""SubscribeToStateChanges against real daemons and a real etcd: a follower's stream flows on
through a leader failover; a hundred subscribers with one stalled, the others get every
transition and the stalled one is cut off with a status it resumes from without a gap."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

import grpc
import pytest

from statemanager.core.keys import Resource
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import TTL, serving, the_leader
from conftest import DaemonMaker, Etcd, eventually
from historyrecords import record

Stub = pb_grpc.StateManagerConnectionStub
Stream = grpc.aio.UnaryStreamCall[pb.StateChangeSubscriptionRequest, pb.StateChangeEvent]


async def subscribed(stub: Stub, **filters: str) -> tuple[Stream, int]:
    """A live subscription to packages (every name, or `filters`) and the revision it
    delivers after."""
    call = stub.SubscribeToStateChanges(
        pb.StateChangeSubscriptionRequest(resource_type=pb.ResourceType.PACKAGE, filter=filters)
    )
    metadata = dict(await call.initial_metadata())
    return call, int(metadata["statemanager-revision"])


async def revisions(call: Stream, count: int) -> list[int]:
    """The revisions of the stream's next `count` events."""
    got = []
    async with asyncio.timeout(30):
        while len(got) < count:
            event = await call.read()
            assert event is not grpc.aio.EOF, "the stream ended"
            got.append(int(event.metadata["revision"]))
    return got


async def test_a_followers_subscription_flows_through_a_leader_failover(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], Stub],
) -> None:
    daemons = [daemon_factory(STATEMANAGER_HA_LEASE_TTL_SECONDS=str(TTL)) for _ in range(3)]
    ports = [serving(d, f"node-{n}") for n, d in zip("abc", daemons, strict=True)]
    for d in daemons:
        d.start()
        await d.wait_synced()
    leader = await the_leader(daemons)
    follower = next(i for i, d in enumerate(daemons) if d is not leader)
    call, start = await subscribed(stub_for(ports[follower]))
    before = [await record(etcd, Resource.PACKAGE, "fo", g, "Running") for g in (1, 2)]
    assert await revisions(call, 2) == before
    assert min(before) > start

    leader.kill()
    successor = await the_leader(daemons, timeout=TTL * 5)
    assert successor is not leader
    after = [await record(etcd, Resource.PACKAGE, "fo", g, "Degraded") for g in (3, 4)]
    assert await revisions(call, 2) == after  # the same stream, nothing lost or repeated
    call.cancel()


STALLED_WINDOW = [("grpc.http2.bdp_probe", 0)]  # keep its receive window at 64 KiB
READERS = 99
CHUNK = 100  # records written between waits for every reader to have them all


@pytest.mark.timeout(300)
async def test_a_stalled_subscriber_is_cut_off_and_the_others_get_everything(
    etcd: Etcd, daemon_factory: DaemonMaker
) -> None:
    daemon = daemon_factory()
    port = serving(daemon)
    daemon.start()
    await daemon.wait_synced()
    address = f"127.0.0.1:{port}"
    async with (
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(address, options=STALLED_WINDOW) as stalled_channel,
    ):
        stalled, _ = await subscribed(Stub(stalled_channel))  # type: ignore[no-untyped-call]
        calls = [await subscribed(Stub(channel)) for _ in range(READERS)]  # type: ignore[no-untyped-call]
        received: list[list[int]] = [[] for _ in calls]

        async def read(i: int, call: Stream) -> None:
            async for event in call:
                received[i].append(int(event.metadata["revision"]))

        readers = [asyncio.create_task(read(i, c)) for i, (c, _) in enumerate(calls)]
        written: list[int] = []
        while "statemanager_subscribers_cut_off_total 1.0" not in daemon.scrape():
            assert len(written) < 20 * CHUNK, "the stalled subscriber was never cut off"
            first = len(written) + 1
            written += [
                await record(etcd, Resource.PACKAGE, "busy", g, "Running", reason_bytes=200)
                for g in range(first, first + CHUNK)
            ]
            everything = functools.partial(_all_have, received, len(written))
            await eventually(everything, what="every reader to have them all")
        assert all(r == written for r in received)

        kept: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await _drain(stalled, kept)
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        resume = int(
            dict(ended.value.trailing_metadata() or ())["statemanager-resume-after-revision"]
        )
        assert f'{{"after_revision": "{resume}"}}' in (ended.value.details() or "")
        assert kept == [r for r in written if r <= resume]  # everything up to it, in order
        assert len(kept) < len(written)

        resumed, start = await subscribed(Stub(channel), after_revision=str(resume))  # type: ignore[no-untyped-call]
        assert start == resume
        rest = [r for r in written if r > resume]
        assert await revisions(resumed, len(rest)) == rest  # replayed from etcd: no gap
        resumed.cancel()
        for call, _ in calls:
            call.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def none_left() -> bool:
        return "\nstatemanager_subscribers 0.0" in daemon.scrape()

    await eventually(none_left, what="every subscriber gone from the gauge")


async def _drain(call: Stream, kept: list[int]) -> None:
    """Read the stream to its end, keeping each event's revision."""
    async for event in call:
        kept.append(int(event.metadata["revision"]))


async def _all_have(received: list[list[int]], count: int) -> bool:
    return all(len(r) >= count for r in received)


async def test_a_subscription_resumes_after_a_revision(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Callable[[int], Stub]
) -> None:
    daemon = daemon_factory()
    port = serving(daemon)
    daemon.start()
    await daemon.wait_synced()
    live, _ = await subscribed(stub_for(port))  # the feed is watching already
    written = [await record(etcd, Resource.PACKAGE, "re", g, "Running") for g in (1, 2, 3)]
    assert await revisions(live, 3) == written
    resumed, start = await subscribed(stub_for(port), after_revision=str(written[0]))
    assert start == written[0]
    assert await revisions(resumed, 2) == written[1:]
    newer = await record(etcd, Resource.PACKAGE, "re", 4, "Running")
    assert await revisions(resumed, 1) == [newer]


async def test_a_correction_is_recorded_but_not_streamed(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Callable[[int], Stub]
) -> None:
    """A correction's history record (a state put back after someone else's write) is no
    transition: the stream skips it and goes on with the next transition."""
    daemon = daemon_factory()
    port = serving(daemon)
    daemon.start()
    await daemon.wait_synced()
    call, _ = await subscribed(stub_for(port))
    await record(etcd, Resource.PACKAGE, "fix", 1, "Error", "Running", correction=True)
    transition = await record(etcd, Resource.PACKAGE, "fix", 2, "Running", "Error")
    assert await revisions(call, 1) == [transition]
    call.cancel()
