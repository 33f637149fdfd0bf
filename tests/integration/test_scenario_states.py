"""Scenario states through SendStateChange, as the platform's components send them
(docs/contract.md, Scenario states): judged against the lifecycle and the stored state by any
daemon, stored once under a guard, logged and counted, deleted with the Scenario spec."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from statemanager.devtools.localetcd import LocalEtcd
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import serving
from conftest import Daemon, DaemonMaker, Etcd, eventually
from test_grpc_service import change

Stubs = Callable[[int], pb_grpc.StateManagerConnectionStub]
SCENARIO = pb.ResourceType.SCENARIO


def scenario_change(name: str, current: str, target: str, source: str) -> pb.StateChange:
    return change(
        resource_type=SCENARIO,
        resource_name=name,
        current_state=current,
        target_state=target,
        transition_id=f"{source}-{name}-{target}",
        source=source,
    )


async def two_daemons(daemon_factory: DaemonMaker) -> tuple[Daemon, int, Daemon, int]:
    """A leader (node-a) and a follower (node-b), both synced and serving."""
    made = []
    for node in ("node-a", "node-b"):
        d = daemon_factory()
        port = serving(d, node)
        d.start()
        await d.wait_synced()
        made += [d, port]
    return made[0], made[1], made[2], made[3]  # type: ignore[return-value]


def state_key(etcd: Etcd, name: str) -> str:
    return f"{etcd.layout.scenario_states}{name}/state"


async def test_the_lifecycle_through_any_daemon(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Stubs
) -> None:
    """The ApiServer's initialisation and the five changes, alternately sent to the leader and
    a follower, each stored as the capitalised word, logged as a transition by the daemon that
    answered and counted there."""
    leader, leader_port, follower, follower_port = await two_daemons(daemon_factory)
    await etcd.scenario("s", "shop")
    steps = [
        ("", "idle", "apiserver", "Idle"),
        ("idle", "waiting", "filtergateway", "Waiting"),
        ("waiting", "satisfied", "filtergateway", "Satisfied"),
        ("satisfied", "allowed", "policymanager", "Allowed"),
        ("allowed", "completed", "actioncontroller", "Completed"),
    ]
    for i, (current, target, source, stored) in enumerate(steps):
        d, port = (leader, leader_port) if i % 2 else (follower, follower_port)
        answer = await stub_for(port).SendStateChange(scenario_change("s", current, target, source))
        assert answer.error_code == pb.ErrorCode.SUCCESS, answer.error_details
        assert answer.transition_id == f"{source}-s-{target}"
        assert await etcd.get(state_key(etcd, "s")) == stored
        revision = await etcd.mod_revision(state_key(etcd, "s"))
        [line] = [e for e in d.events("transition") if e["transition_id"] == answer.transition_id]
        assert line["type"] == "scenario"
        assert line["name"] == "s"
        assert line["from_state"] == (steps[i - 1][3] if i else None)
        assert line["to_state"] == stored
        assert line["source"] == source
        assert line["revision"] == revision
        assert f'statemanager_transitions_total{{resource="scenario",state="{stored}"}} 1.0' in (
            d.scrape()
        )

    again = await stub_for(leader_port).SendStateChange(
        scenario_change("s", "allowed", "completed", "actioncontroller")
    )
    assert again.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "the scenario is Completed (stored)" in again.error_details

    # Applied again: the ApiServer's initialisation restarts the lifecycle.
    reapplied = await stub_for(follower_port).SendStateChange(
        scenario_change("s", "", "idle", "apiserver")
    )
    assert reapplied.error_code == pb.ErrorCode.SUCCESS, reapplied.error_details
    assert await etcd.get(state_key(etcd, "s")) == "Idle"


async def test_refusals_name_what_they_were_judged_from(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Stubs
) -> None:
    leader, port, _, _ = await two_daemons(daemon_factory)
    stub = stub_for(port)
    await etcd.scenario("s", "shop")

    missing = await stub.SendStateChange(scenario_change("nope", "idle", "waiting", "fg"))
    assert missing.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND
    assert "no scenario 'nope'" in missing.error_details

    empty = await stub.SendStateChange(scenario_change("s", "", "waiting", "fg"))
    assert empty.error_code == pb.ErrorCode.INVALID_REQUEST
    assert "current_state is empty" in empty.error_details

    # Never stored: judged from the request's current state.
    backwards = await stub.SendStateChange(scenario_change("s", "waiting", "idle", "fg"))
    assert backwards.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "as the request says; none stored" in backwards.error_details
    unknown = await stub.SendStateChange(scenario_change("s", "idle", "running", "fg"))
    assert unknown.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert await etcd.get(state_key(etcd, "s")) is None

    # What Pullpiri's own StateManager stored is read: its enum spelling.
    await etcd.put(state_key(etcd, "s"), "SCENARIO_STATE_WAITING")
    skipped = await stub.SendStateChange(scenario_change("s", "satisfied", "allowed", "pm"))
    assert skipped.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "the scenario is Waiting (stored)" in skipped.error_details
    met = await stub.SendStateChange(scenario_change("s", "waiting", "satisfied", "fg"))
    assert met.error_code == pb.ErrorCode.SUCCESS, met.error_details
    assert await etcd.get(state_key(etcd, "s")) == "Satisfied"
    assert not leader.events("correction")  # asserted, never put back


async def test_concurrent_changes_of_one_scenario_are_stored_once(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Stubs
) -> None:
    """The same change sent to both daemons at once, for 20 scenarios: one answer SUCCESS per
    scenario, the other refused naming the state the winner stored."""
    _, leader_port, _, follower_port = await two_daemons(daemon_factory)
    names = [f"s{i}" for i in range(20)]
    for name in names:
        await etcd.scenario(name, "shop")
    stubs = (stub_for(leader_port), stub_for(follower_port))
    answers = await asyncio.gather(
        *(
            stub.SendStateChange(scenario_change(name, "idle", "waiting", f"fg{j}"))
            for name in names
            for j, stub in enumerate(stubs)
        )
    )
    for name, pair in zip(names, zip(answers[::2], answers[1::2], strict=True), strict=True):
        codes = sorted(a.error_code for a in pair)
        assert codes == [pb.ErrorCode.SUCCESS, pb.ErrorCode.INVALID_STATE_TRANSITION], pair
        [refused] = [a for a in pair if a.error_code]
        assert "the scenario is Waiting (stored)" in refused.error_details
        assert await etcd.get(state_key(etcd, name)) == "Waiting"


async def test_the_state_is_deleted_with_the_scenario(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Stubs
) -> None:
    """Deleting Scenario/{name} has the leader delete its state key (a transition to
    `deleted`); a state left without its spec is found by a new leader too."""
    leader, port, _, _ = await two_daemons(daemon_factory)
    await etcd.scenario("s", "shop")
    ok = await stub_for(port).SendStateChange(scenario_change("s", "", "idle", "apiserver"))
    assert ok.error_code == pb.ErrorCode.SUCCESS
    await etcd.delete(f"{etcd.layout.scenarios}s")

    def deletions() -> list[dict[str, Any]]:
        lines = leader.events("transition")
        return [e for e in lines if e["name"] == "s" and e["to_state"] == "deleted"]

    async def deleted() -> bool:  # the line follows the commit the test may see first
        return await etcd.get(state_key(etcd, "s")) is None and bool(deletions())

    await eventually(deleted, what="the scenario's state key deleted, and logged")
    [line] = deletions()
    assert line["type"] == "scenario"
    assert line["reason"] == "its Scenario spec is gone"
    assert 'statemanager_transitions_total{resource="scenario",state="deleted"} 1.0' in (
        leader.scrape()
    )

    await etcd.put(state_key(etcd, "orphan"), "Waiting")  # e.g. left by another StateManager

    async def orphan_gone() -> bool:
        return await etcd.get(state_key(etcd, "orphan")) is None

    await eventually(orphan_gone, what="the orphaned state key deleted")


async def test_etcd_unreachable_is_resource_unavailable(
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker, stub_for: Stubs
) -> None:
    d = make_daemon(STATEMANAGER_ETCD_TIMEOUT_SECONDS="1")
    port = serving(d)
    d.start()
    await d.wait_synced()
    await private.scenario("s", "shop")
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        answer = await stub_for(port).SendStateChange(scenario_change("s", "idle", "waiting", "fg"))
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert answer.error_code == pb.ErrorCode.RESOURCE_UNAVAILABLE
    assert "etcd unavailable" in answer.error_details
