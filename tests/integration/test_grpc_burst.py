"""Bursts of concurrent calls to the StateManager gRPC service (docs/contract.md, Bursts): the
platform's callers all at once are answered in full, and the service's deliberate limit is
answered RESOURCE_EXHAUSTED, never a silent CANCELLED."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from statemanager.devtools import burst
from statemanager.devtools.localetcd import LocalEtcd
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import serving
from conftest import DaemonMaker, Etcd, eventually, states_are


@pytest.fixture
async def stubs() -> AsyncIterator[Callable[[int], list[Any]]]:
    """`stubs(port)`: stubs over many channels, as many callers' processes would hold."""
    channels: list[grpc.aio.Channel] = []

    def make(port: int) -> list[Any]:
        made = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(burst.CHANNELS)]
        channels.extend(made)
        return [pb_grpc.StateManagerConnectionStub(c) for c in made]  # type: ignore[no-untyped-call]

    yield make
    for channel in channels:
        await channel.close()


async def test_a_burst_of_2000_calls_is_answered_in_full(
    etcd: Etcd, daemon_factory: DaemonMaker, stubs: Callable[[int], list[Any]]
) -> None:
    """1,000 one-container lists from distinct nodes and 1,000 SendStateChange at once, to the
    leader: none is CANCELLED, each is answered as it would be alone (stored; SUCCESS)."""
    d = daemon_factory()
    port = serving(d)
    d.start()
    await d.wait_synced()
    await etcd.package("shop", ["web"])
    await etcd.container("seed", "running", "web")
    await states_are(etcd, {"web": "Running"})

    lists = [burst.node_list(f"node-{i}", "web") for i in range(1000)]
    changes = [burst.confirmation("web", "Running") for _ in range(1000)]
    result = await burst.burst(stubs(port), lists, changes)

    assert result.outcomes == {"ok": 2000}, result.outcomes

    async def all_running() -> bool:  # every list stored, and seen through the watch
        return 'statemanager_containers{status="running"} 1001.0' in d.scrape()

    await eventually(all_running, what="1,001 running containers in the daemon's index")


async def test_the_limit_is_answered_resource_exhausted(
    server: LocalEtcd,
    private: Etcd,
    make_daemon: DaemonMaker,
    stubs: Callable[[int], list[Any]],
) -> None:
    """With etcd paused, calls that need it wait in the service: past grpc.max_concurrent_rpcs
    the rest are answered RESOURCE_EXHAUSTED at once, none CANCELLED; those waiting are
    answered when etcd's deadline passes."""
    d = make_daemon(
        STATEMANAGER_GRPC_MAX_CONCURRENT_RPCS="20", STATEMANAGER_ETCD_TIMEOUT_SECONDS="2"
    )
    port = serving(d)
    d.start()
    await d.wait_synced()
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        lists = [burst.node_list(f"node-{i}", "web") for i in range(200)]
        result = await burst.burst(stubs(port), lists, [])
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert "CANCELLED" not in result.outcomes, result.outcomes
    assert result.outcomes["RESOURCE_EXHAUSTED"] >= 150, result.outcomes
    assert set(result.outcomes) <= {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "ok"}, result.outcomes
    assert d.process is not None
    assert d.process.poll() is None
