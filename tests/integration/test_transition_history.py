"""Transition history against a real etcd: records written with the states they record, kept
across a leader failover, foreign keys reported, and `statemanager history`."""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict

import pytest
from test_ha import trio
from test_scenario_states import Stubs, scenario_change, state_key, two_daemons

from statemanager.core.history import Transition, decode, history_prefix, parse_history_key
from statemanager.core.keys import Resource, WorkKey
from statemanager.proto import statemanager_pb2 as pb

from cluster import the_leader
from conftest import Daemon, DaemonMaker, Etcd, cli, eventually, http_get
from fleet import converged
from support import documents

pytestmark = pytest.mark.integration


async def records(etcd: Etcd) -> dict[WorkKey, list[tuple[int, Transition]]]:
    """Every resource's history records in etcd, oldest first, with their generations."""
    found: dict[WorkKey, list[tuple[int, Transition]]] = defaultdict(list)
    prefix = history_prefix(etcd.layout)
    for kv in await etcd.client.get_prefix(prefix.encode()):
        key, generation = parse_history_key(etcd.layout, kv.key.decode())
        record = decode(etcd.layout, kv.key, kv.value, int(kv.mod_revision))
        assert isinstance(record, Transition)
        found[key].append((generation, record))
    return found


async def test_a_package_history_holds_its_transitions_at_its_writes(
    etcd: Etcd, daemon: Daemon
) -> None:
    """Running → Degraded → Error → Running: exactly those records, in order, each committed
    at the revision of the state write it records."""
    steps = [
        ([("a1", "pay.a", "running"), ("b1", "pay.b", "running")], "Running"),
        ([("a1", "pay.a", "dead")], "Degraded"),
        ([("b1", "pay.b", "dead")], "Error"),
        ([("a1", "pay.a", "running"), ("b1", "pay.b", "running")], "Running"),
    ]
    state_key = f"{etcd.layout.package_states}pay/state"
    written = []
    for containers, want in steps:  # each step's containers in one transaction
        puts = [
            etcd.client.transactions.put(
                f"{etcd.layout.containers}{cid}".encode(),
                documents.container(cid, {"Status": status}, model).encode(),
            )
            for cid, model, status in containers
        ]
        await etcd.client.transaction(compare=[], success=puts, failure=[])
        if not written:  # the spec after its models are Running: the package starts Running
            await models_running(etcd, "pay.a", "pay.b")
            await etcd.package("pay", ["pay.a", "pay.b"])

        async def reached(want: str = want) -> bool:
            return await etcd.package_state("pay") == want

        await eventually(reached, what=f"pay {want}")
        written.append(await etcd.mod_revision(state_key))
    history = (await records(etcd))[WorkKey(Resource.PACKAGE, "pay")]
    assert [(t.from_state, t.to_state) for _, t in history] == [
        (None, "Running"),
        ("Running", "Degraded"),
        ("Degraded", "Error"),
        ("Error", "Running"),
    ]
    assert [g for g, _ in history] == [1, 2, 3, 4]
    assert [t.revision for _, t in history] == written


async def test_history_goes_on_across_a_failover(private: Etcd, make_daemon: DaemonMaker) -> None:
    """Three daemons under churn, the leader killed: every resource's records run on with no
    gap or repeated generation, each taking up where the one before left, the last one the
    state etcd holds; some resource's history was written by two leaders."""
    daemons, churn = await trio(private, make_daemon, seed=27)
    leader = await the_leader(daemons)
    for _ in range(150):
        await churn.step()
    await converged(private)
    leader.kill()
    await the_leader(daemons)
    for _ in range(150):
        await churn.step()
    await converged(private)
    history = await records(private)
    states = await private.states()
    writers = set()
    for key, runs in history.items():
        generations = [g for g, _ in runs]
        assert generations == list(range(generations[0], generations[0] + len(runs))), key
        for (_, before), (_, after) in itertools.pairwise(runs):
            assert after.from_state == before.to_state, (key, before, after)
            assert after.revision > before.revision
        state_key = private.layout.state_key(key)
        assert runs[-1][1].to_state == states.get(state_key), key
        writers |= {(key, t.node) for _, t in runs}
    by_key = defaultdict(set)
    for key, node in writers:
        by_key[key].add(node)
    assert any(len(nodes) == 2 for nodes in by_key.values())


async def test_a_foreign_key_under_the_history_prefix_is_reported(
    etcd: Etcd, daemon: Daemon
) -> None:
    """A key no daemon wrote, sorting above a package's records, is counted as bad input;
    the daemon goes on recording from the right generation and leaves the key alone."""
    foreign = f"{history_prefix(etcd.layout)}package/pay/zzz"
    await etcd.put(foreign, "not a record")
    await flip(etcd, 2)  # Running, then Error
    assert 'statemanager_invalid_inputs_total{kind="history_key"} 1.0' in daemon.scrape()
    assert await etcd.get(foreign) == "not a record"
    await etcd.delete(foreign)
    history = (await records(etcd))[WorkKey(Resource.PACKAGE, "pay")]
    assert [(g, t.to_state) for g, t in history] == [(1, "Running"), (2, "Error")]
    assert daemon.process is not None and daemon.process.poll() is None


async def test_the_history_command(etcd: Etcd, daemon: Daemon, etcd_endpoint: str) -> None:
    """`statemanager history NAME`: the records oldest first, as text and as
    statemanager.history/v1; exit 1 for a name without history, 2 for a bad --since; `status`
    shows how long each state has been held, from the newest record."""
    await flip(etcd, 2)  # Running, then Error
    text = cli(["history", "pay"], etcd_endpoint, etcd.layout)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "package pay" in lines[0]
    assert "Running → Error" in lines[-1] and "P2" in lines[-1]
    doc = cli(["history", "pay", "--output", "json"], etcd_endpoint, etcd.layout)
    assert doc.returncode == 0, doc.stderr
    body = json.loads(doc.stdout)
    assert body["schema"] == "statemanager.history/v1"
    assert [(r["from"], r["to"]) for r in body["records"]] == [
        (None, "Running"),
        ("Running", "Error"),
    ]
    assert body["records"][1]["revision"] == await etcd.mod_revision(
        f"{etcd.layout.package_states}pay/state"
    )
    model = cli(
        ["history", "pay.a", "--type", "model", "--since", "1h"], etcd_endpoint, etcd.layout
    )
    assert model.returncode == 0 and "Running → Failed" in model.stdout
    status = cli(["status", "pay"], etcd_endpoint, etcd.layout)
    assert re.search(r"package pay: Error for \d+s \(P2", status.stdout), status.stdout
    assert re.search(r"model pay\.a: Failed for \d+s \(M2", status.stdout), status.stdout
    as_json = json.loads(
        cli(["status", "pay", "--output", "json"], etcd_endpoint, etcd.layout).stdout
    )
    assert as_json["packages"][0]["changed_at"] == body["records"][1]["timestamp"]
    assert cli(["history", "nobody"], etcd_endpoint, etcd.layout).returncode == 1
    assert cli(["history", "pay", "--since", "soon"], etcd_endpoint, etcd.layout).returncode == 2


async def test_the_status_page_shows_transitions(etcd: Etcd, daemon: Daemon) -> None:
    """/status lists each package's last transitions with their times; a package's own page
    lists its whole retained history, newest first."""
    await flip(etcd, 3)
    code, all_packages = http_get(daemon.metrics_port, "/status")
    assert code == 200 and "Last transitions" in all_packages
    recent = all_packages.split("<h2>Last transitions</h2>")[1]
    line = next(li for li in recent.split("<li>") if 'package=pay"' in li)
    assert line.count(" → ") == 3 and re.search(r"\d{4}-\d\d-\d\dT[\d:.]+Z \(\d+s ago\)", line)
    assert line.index("Error → Running") < line.index("Running → Error")  # newest first
    code, one = http_get(daemon.metrics_port, "/status?package=pay")
    assert code == 200 and "History: 3 changes kept, newest first" in one
    assert "(none) → Running" in one and "P2: all 1 models Failed" in one


async def flip(etcd: Etcd, times: int) -> None:
    """Package pay (model pay.a, container a1) Running, then Error, Running, … `times` times
    (its spec put once its model is Running, so it starts Running)."""
    for i in range(times):
        status, want = ("running", "Running") if i % 2 == 0 else ("dead", "Error")
        await etcd.container("a1", status, "pay.a")
        if i == 0:
            await models_running(etcd, "pay.a")
            await etcd.package("pay", ["pay.a"])

        async def reached(want: str = want) -> bool:
            return await etcd.package_state("pay") == want

        await eventually(reached, what=f"pay {want}")


async def test_history_keeps_the_last_keep(etcd: Etcd, daemon_factory: DaemonMaker) -> None:
    """With history.keep 3, seven changes of a package leave its last three records."""
    d = daemon_factory(STATEMANAGER_HISTORY_KEEP="3")
    d.start()
    await d.wait_synced()
    await flip(etcd, 7)
    history = (await records(etcd))[WorkKey(Resource.PACKAGE, "pay")]
    assert [(g, t.to_state) for g, t in history] == [(5, "Running"), (6, "Error"), (7, "Running")]


async def test_the_leader_prunes_history_by_age(etcd: Etcd, daemon_factory: DaemonMaker) -> None:
    """With history.max_age_seconds 1, the leader soon removes every record but each
    resource's newest."""
    d = daemon_factory(STATEMANAGER_HISTORY_MAX_AGE_SECONDS="1")
    d.start()
    await d.wait_synced()
    await flip(etcd, 3)

    async def pruned() -> bool:
        history = await records(etcd)
        return {len(runs) for runs in history.values()} == {1} and len(history) == 2

    await eventually(pruned, what="all but the newest records pruned")
    newest = (await records(etcd))[WorkKey(Resource.PACKAGE, "pay")]
    assert [(g, t.to_state) for g, t in newest] == [(3, "Running")]


async def test_scenario_changes_through_any_daemon_are_one_history(
    etcd: Etcd, daemon_factory: DaemonMaker, stub_for: Stubs
) -> None:
    """A scenario's lifecycle sent alternately to the leader and a follower, then its spec
    deleted: one run of records, each at its state write, naming the daemon that stored it
    and the requester, the deletion (by the leader) last."""
    _, leader_port, _, follower_port = await two_daemons(daemon_factory)
    await etcd.scenario("s", "shop")
    steps = [("", "idle"), ("idle", "waiting"), ("waiting", "satisfied"), ("satisfied", "denied")]
    written = []
    for i, (current, target) in enumerate(steps):
        port = leader_port if i % 2 else follower_port
        answer = await stub_for(port).SendStateChange(scenario_change("s", current, target, "fg"))
        assert answer.error_code == pb.ErrorCode.SUCCESS, answer.error_details
        written.append(await etcd.mod_revision(state_key(etcd, "s")))
    await etcd.delete(etcd.layout.scenarios + "s")

    async def deleted() -> bool:
        return await etcd.get(state_key(etcd, "s")) is None

    await eventually(deleted, what="the scenario's state deleted with its spec")
    history = (await records(etcd))[WorkKey(Resource.SCENARIO, "s")]
    assert [(g, t.from_state, t.to_state) for g, t in history] == [
        (1, None, "Idle"),
        (2, "Idle", "Waiting"),
        (3, "Waiting", "Satisfied"),
        (4, "Satisfied", "Denied"),
        (5, "Denied", None),
    ]
    assert [t.revision for _, t in history[:4]] == written
    assert [t.node for _, t in history] == ["node-b", "node-a", "node-b", "node-a", "node-a"]
    assert [t.source for _, t in history[:4]] == ["fg"] * 4
    assert history[1][1].rule == "scenario_activation"


async def models_running(etcd: Etcd, *models: str) -> None:
    """Wait until each model's state is Running: a package listing them then starts Running
    (its spec seen before its models' containers would make it Paused first)."""

    async def running() -> bool:
        return all([await etcd.model_state(m) == "Running" for m in models])

    await eventually(running, what=f"{models} Running")
