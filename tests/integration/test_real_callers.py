"""The platform's real callers against real daemons: NodeAgents (send a whole list once, to
one address, never again) pointed at a daemon that is not the leader, through a failover,
one of them with 10,000 containers."""

from __future__ import annotations

import time

import grpc

from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import TTL, container, listed, serving, the_leader
from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are
from support.nodeagent import NodeAgent

MODELS = [f"fleet.m{i}" for i in range(10)]
# The scenario lifecycle as its callers drive it: the ApiServer's reset, FilterGateway's
# steps, the policy decision, ActionController's completion.
LIFECYCLE = [
    ("", "idle"),
    ("idle", "waiting"),
    ("waiting", "satisfied"),
    ("satisfied", "allowed"),
    ("allowed", "completed"),
]


def scenario_change(current: str, target: str) -> pb.StateChange:
    return pb.StateChange(
        resource_type=pb.ResourceType.SCENARIO,
        resource_name="fleet_recovery",
        current_state=current,
        target_state=target,
        transition_id=f"fg-{time.time_ns()}",
        timestamp_ns=time.time_ns(),
        source="filtergateway",
    )


def fleet(prefix: str, count: int, dead_model: str | None = None) -> list[pb.ContainerInfo]:
    """`count` containers spread over MODELS, those of `dead_model` exited with 137."""
    containers = []
    for i in range(count):
        model = MODELS[i % len(MODELS)]
        status, code = ("exited", "137") if model == dead_model else ("running", "0")
        containers.append(container(f"{prefix}-{i}", status, model, code))
    return containers


async def three_serving(make_daemon: DaemonMaker) -> tuple[list[Daemon], list[int]]:
    """Three synced daemons serving the gRPC service, and their ports."""
    daemons, ports = [], []
    for n in "abc":
        d = make_daemon(STATEMANAGER_HA_LEASE_TTL_SECONDS=str(TTL))
        ports.append(serving(d, f"node-{n}"))
        daemons.append(d)
    for d in daemons:
        d.start()
    for d in daemons:
        await d.wait_synced()
    return daemons, ports


async def test_nodeagents_on_a_follower_through_a_failover(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """Every list NodeAgents send to a follower is stored, before, during and after the
    leader's death; the 10,000-container node's list too; afterwards every state agrees with
    what the nodes last reported. Meanwhile a scenario goes through its lifecycle, each
    change sent once to one of the surviving daemons in turn: each is accepted and stored
    once, in order."""
    daemons, ports = await three_serving(make_daemon)
    await private.package("fleet", MODELS)
    await private.scenario("fleet_recovery", "fleet")
    leader = await the_leader(daemons)
    follower = next(i for i, d in enumerate(daemons) if d is not leader and d is not daemons[0])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[follower]}") as channel:
        stub = pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]
        agents = [NodeAgent(f"edge-{n}", stub.SendChangedContainerList) for n in range(4)]
        big = NodeAgent("big", stub.SendChangedContainerList)

        request = pb.ContainerList(node_name="big", containers=fleet("big", 10_000))
        sent = time.perf_counter()
        await big.poll(request.containers)
        stored = time.perf_counter() - sent
        await states_are(private, {"pkg:fleet": "Running", **dict.fromkeys(MODELS, "Running")})
        written = time.perf_counter() - sent
        print(
            f"\n10,000 containers, {request.ByteSize():,} bytes: stored in {stored:.2f} s, "
            f"states written {written:.2f} s after the send"
        )

        survivors = [i for i, d in enumerate(daemons) if d is not leader]
        scenario_stubs = [
            pb_grpc.StateManagerConnectionStub(  # type: ignore[no-untyped-call]
                grpc.aio.insecure_channel(f"127.0.0.1:{ports[i]}")
            )
            for i in survivors
        ]
        answers: list[int] = []

        async def next_scenario_step() -> None:
            current, target = LIFECYCLE[len(answers) % len(LIFECYCLE)]
            stub = scenario_stubs[len(answers) % len(scenario_stubs)]
            answer = await stub.SendStateChange(scenario_change(current, target))
            answers.append(answer.error_code)

        leader.kill()
        rounds = 0

        async def reported_through_the_failover() -> bool:
            nonlocal rounds
            rounds += 1
            await next_scenario_step()
            for i, agent in enumerate(agents):  # a changed list each round: sent each time
                await agent.poll(fleet(f"{agent.hostname}-r{rounds}", 1 + (rounds + i) % 3))
            running = [d for d in daemons if d is not leader]
            return any(d.events("leader") and "\nstatemanager_leader 1.0" in d.scrape()
                       for d in running)  # fmt: skip

        await eventually(reported_through_the_failover, 4 * TTL, "a new leader")
        await the_leader([d for d in daemons if d is not leader])
        for agent in agents:
            await agent.poll(fleet(f"{agent.hostname}-last", 3, dead_model="fleet.m1"))
        await big.poll(fleet("big", 10_000, dead_model="fleet.m0"))

    assert [a.lost for a in (*agents, big)] == [[]] * 5, "a list was refused: lost"
    assert answers == [pb.ErrorCode.SUCCESS] * len(answers)
    last = LIFECYCLE[(len(answers) - 1) % len(LIFECYCLE)][1]
    assert await private.get(f"{private.layout.scenario_states}fleet_recovery/state") == (
        last.capitalize()
    )
    logged = [e for d in daemons for e in d.events("transition") if e["type"] == "scenario"]
    assert len(logged) == len(answers)  # each accepted change stored (and logged) once
    assert all(a.sent >= rounds for a in agents)
    expected = {"fleet.m0": "Failed", "fleet.m1": "Failed", "pkg:fleet": "Degraded"}
    await states_are(private, {**dict.fromkeys(MODELS, "Running"), **expected})
    assert await listed(private, "edge-0") == {f"edge-0-last-{i}" for i in range(3)}
    assert len(await listed(private, "big")) == 10_000
