"""Upgrading: the previous release and this version on one real etcd, each leading in turn and
side by side (README.md, Upgrading; docs/contract.md, Records).

The previous release is built from a pinned commit, as there is no tag yet: OLD (035f44f) is
the last commit before record formats were numbered, the code installations run today, so it
is the version an operator upgrades from and the one this version runs beside during a
rolling upgrade. The first releases (up to 6aa985a), whose triggers were one record per
scenario, are not run here: they read today's per-package trigger key as unreadable, so no
later version can run beside them, and what is left of them is their records. Those records
are tested byte for byte as they wrote them (tests/runtime/test_record_formats.py).

The wheel is built from `git archive OLD` with this repository's own build helpers
(test_wheel.py), once per module, into a fresh virtualenv.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import grpc
import pytest
from test_ha import TTL, paused_past_its_lease, the_leader
from test_reconcile import PULLPIRI_REFUSAL, FakeActionController, controller, triggers_cli
from test_wheel import ROOT, build, install

from statemanager.core.keys import KeyLayout
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from conftest import Daemon, DaemonMaker, Etcd, cli, eventually, http_get, states_are
from fleet import Churn, converged
from test_grpc_service import container, serving

__all__ = ["controller"]  # the fixture, used by name

OLD = "035f44f323ca9a802faf378a3b439bad87971c0d"
MAX_REFUSALS = 2
PACKAGES = ("pay", "up", "web", "api")  # each: model {p}m, scenario {p}_fix


@pytest.fixture(scope="module")
def old_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The interpreter of a new virtualenv holding the previous release's wheel alone."""
    root = tmp_path_factory.mktemp("previous-release")
    source = root / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", OLD],
                             capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True, timeout=60)
    venv = install(build(source, root / "dist"), root / "venv")
    version = subprocess.run([venv / "bin" / "statemanager", "--version"], capture_output=True,
                             text=True, check=True, timeout=60).stdout  # fmt: skip
    assert version == "statemanager 0.1.0\n"
    return str(venv / "bin" / "python")


class Fleet:
    """The daemons of one test, old and new, sharing a fake ActionController, and one node's
    container list sent to whichever daemon the test names."""

    def __init__(
        self, factory: DaemonMaker, controller: FakeActionController, old_python: str
    ) -> None:
        self._factory = factory
        self._controller = controller
        self._old_python = old_python
        self.ports: dict[int, int] = {}  # gRPC port by id(daemon)

    async def start(self, node: str, old: bool) -> Daemon:
        d = self._factory()
        self.ports[id(d)] = serving(d, node)
        d.env.update(
            STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{self._controller.port}",
            STATEMANAGER_ACTIONCONTROLLER_MAX_BACKOFF_SECONDS="1",
            STATEMANAGER_ACTIONCONTROLLER_MAX_REFUSALS=str(MAX_REFUSALS),
        )
        if old:  # that installation alone: nothing of this checkout on its path
            d.python = self._old_python
            d.env.pop("PYTHONPATH", None)
        d.start()
        await d.wait_synced()
        return d

    async def node_list(self, d: Daemon, **statuses: str) -> str:
        """Send node-1's whole list to `d`: container `{cid}` of model `{cid[:-1]}m`."""
        listed = [container(cid, status, f"{cid[:-1]}m") for cid, status in statuses.items()]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.ports[id(d)]}") as channel:
            stub = pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]
            answer = await stub.SendChangedContainerList(
                pb.ContainerList(node_name="node-1", containers=listed)
            )
        return str(answer.resp)


@pytest.fixture
async def fleet(
    etcd: Etcd, daemon_factory: DaemonMaker, controller: FakeActionController, old_python: str
) -> Fleet:
    for p in PACKAGES:
        await etcd.package(p, [f"{p}m"])
        await etcd.scenario(f"{p}_fix", p)
    return Fleet(daemon_factory, controller, old_python)


async def records(etcd: Etcd) -> dict[str, tuple[Any, int]]:
    """Every trigger and dead letter in etcd: its key after `{own}`, JSON value, mod revision."""
    own = etcd.layout.own
    found = {}
    for prefix in ("triggers/", "deadletters/"):
        for kv in await etcd.client.get_prefix(f"{own}{prefix}".encode()):
            found[kv.key.decode()[len(own) :]] = (json.loads(kv.value), int(kv.mod_revision))
    return found


async def has(etcd: Etcd, *keys: str) -> None:
    """Wait until the triggers and dead letters in etcd are exactly `keys`."""

    async def exactly() -> bool:
        return sorted(await records(etcd)) == sorted(keys)

    await eventually(exactly, 30, f"records {keys}")


async def leader_values(etcd: Etcd) -> list[bytes]:
    return [kv.value for kv in await etcd.client.get_prefix(f"{etcd.layout.own}leader/".encode())]


async def takes_over(successor: Daemon, predecessor: Daemon) -> None:
    """`predecessor` (leading) stops on SIGTERM, resigning; `successor` leads."""

    async def leads() -> bool:
        return bool(successor.events("leader"))

    assert successor.events("follower") and not successor.events("leader")
    assert predecessor.stop() == 0
    await eventually(leads, 20, "the successor leading")


async def containers(etcd: Etcd, **statuses: str) -> None:
    """Put container `{cid}` of model `{cid[:-1]}m` with each status, as Pullpiri's own
    components write container keys (no node list)."""
    for cid, status in statuses.items():
        await etcd.container(cid, status, f"{cid[:-1]}m")


async def test_upgrade_and_back_keeps_every_record(
    etcd: Etcd,
    etcd_endpoint: str,
    layout: KeyLayout,
    controller: FakeActionController,
    fleet: Fleet,
    old_python: str,
) -> None:
    """The old release records a dead letter (ActionController refusing) and a pending
    trigger (ActionController down); the new version joins it, takes over (a rolling upgrade:
    both run, one leads), delivers the trigger once, lists the dead letter and keeps it; it
    records its own dead letter and pending trigger; the old release joins again and takes
    over: it lists both, keeps them and delivers the pending one once. Every entry into Error
    gets exactly its Reconcile calls, whoever leads."""
    old = await old_records(etcd, controller, fleet)
    new = await upgrade(etcd, etcd_endpoint, layout, controller, fleet, old)
    at_new = await new_records(etcd, controller)
    back = await fleet.start("old", old=True)
    await takes_over(back, new)

    async def retried() -> bool:
        return any(e.get("package") == "api" for e in back.events("reconcile_retry"))

    await eventually(retried, 20, "the old release retrying the new version's trigger")
    assert await records(etcd) == at_new
    listed = await triggers_cli(etcd_endpoint, layout, "list", "--output", "json",
                                python=old_python)  # fmt: skip
    document = json.loads(listed.stdout)
    assert [d["package"] for d in document["dead_letters"]] == ["pay", "web"]
    assert [t["package"] for t in document["pending"]] == ["api"]
    assert document["problems"] == []
    controller.refusal = None
    await controller.start()
    await has(etcd, "deadletters/pay", "deadletters/web")
    assert await records(etcd) == {k: v for k, v in at_new.items() if k != "triggers/api"}
    assert Counter(controller.scenarios()) == {
        "pay_fix": MAX_REFUSALS,
        "up_fix": 1,
        "web_fix": MAX_REFUSALS,
        "api_fix": 1,
    }
    for d in (old, new, back):
        assert not d.events("reconcile_trigger_unreadable"), d.tail()
        assert not d.events("record_unknown_format"), d.tail()


async def old_records(etcd: Etcd, controller: FakeActionController, fleet: Fleet) -> Daemon:
    """The old release leads alone and records, in its formats, a dead letter (`pay`,
    ActionController refusing) and a pending trigger (`up`, ActionController down)."""
    controller.refusal = (grpc.StatusCode.INTERNAL, PULLPIRI_REFUSAL)
    await controller.start()
    old = await fleet.start("old", old=True)
    await containers(etcd, pay1="running", up1="running", web1="running", api1="running")
    await states_are(etcd, {f"pkg:{p}": "Running" for p in PACKAGES})
    await containers(etcd, pay1="dead")
    await has(etcd, "deadletters/pay")
    await controller.stop()
    await containers(etcd, up1="dead")
    await has(etcd, "deadletters/pay", "triggers/up")
    found = await records(etcd)
    # Formats from before they were numbered.
    assert found["triggers/up"][0].keys() == {"package", "transition_id"}
    assert "format" not in found["deadletters/pay"][0]
    assert await leader_values(etcd) == [b"old"]
    return old


async def upgrade(
    etcd: Etcd,
    etcd_endpoint: str,
    layout: KeyLayout,
    controller: FakeActionController,
    fleet: Fleet,
    old: Daemon,
) -> Daemon:
    """Rolling upgrade: the new version joins as a follower, the old release leaves; the new
    one lists the pending trigger and the dead letter, delivers the trigger once and keeps the
    dead letter."""
    letter = (await records(etcd))["deadletters/pay"]
    new = await fleet.start("new", old=False)
    await takes_over(new, old)
    assert await leader_values(etcd) == [b'{"format": 2, "node": "new"}']
    listed = await triggers_cli(etcd_endpoint, layout, "list", "--output", "json")
    document = json.loads(listed.stdout)
    assert [(t["package"], t["scenario"]) for t in document["pending"]] == [("up", None)]
    assert [d["package"] for d in document["dead_letters"]] == ["pay"]
    assert document["problems"] == []
    controller.refusal = None
    await controller.start()
    await has(etcd, "deadletters/pay")
    assert (await records(etcd))["deadletters/pay"] == letter
    assert Counter(controller.scenarios()) == {"pay_fix": MAX_REFUSALS, "up_fix": 1}
    return new


async def new_records(etcd: Etcd, controller: FakeActionController) -> dict[str, tuple[Any, int]]:
    """The new version (leading) records its own dead letter (`web`) and pending trigger
    (`api`), in its formats; returns the records in etcd then."""
    controller.refusal = (grpc.StatusCode.INTERNAL, PULLPIRI_REFUSAL)
    await containers(etcd, web1="dead")
    await has(etcd, "deadletters/pay", "deadletters/web")
    await controller.stop()
    await containers(etcd, api1="dead")
    await has(etcd, "deadletters/pay", "deadletters/web", "triggers/api")
    found = await records(etcd)
    assert found["triggers/api"][0]["format"] == 2
    assert found["deadletters/web"][0]["format"] == 1
    return found


async def test_the_old_release_s_node_list_is_taken_over_whole(
    etcd: Etcd, layout: KeyLayout, fleet: Fleet, etcd_endpoint: str
) -> None:
    """A node's list stored by the old release (format 1: a container key per container and
    the node's ids record) is read whole by the new version when it takes over (it changes no
    state), and the node's next list, stored by the new version in format 2, replaces it: the
    format-1 keys go, the states follow the new list alone. (One way only: the old release
    does not read format-2 lists; README.md, Upgrading.)"""
    old = await fleet.start("old", old=True)
    first = {"pay1": "running", "pay2": "running", "up1": "running"}
    assert await fleet.node_list(old, **first) == "stored 3 containers of node node-1, deleted 0"
    await states_are(etcd, {"pkg:pay": "Running", "pkg:up": "Running"})
    format_1 = [f"{layout.containers}{cid}" for cid in first]
    format_1.append(f"{layout.own}nodes/node-1/containers")
    assert all([await etcd.get(key) is not None for key in format_1])

    new = await fleet.start("new", old=False)
    await takes_over(new, old)
    await new.wait_synced()
    answer = await fleet.node_list(new, pay1="running", up1="dead")
    assert answer.startswith("stored 2 containers of node node-1"), answer
    await states_are(etcd, {"pkg:pay": "Running", "pkg:up": "Error"})
    assert [await etcd.get(key) for key in format_1] == [None] * 4
    evaluate = cli(["evaluate"], etcd_endpoint, layout)
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    transitions = [(e["name"], e["to_state"]) for e in new.events("transition")]
    assert transitions == [("upm", "Failed"), ("up", "Error")]  # none at the takeover


async def test_first_release_records_are_delivered_listed_or_left(
    daemon_factory: DaemonMaker,
    controller: FakeActionController,
    etcd: Etcd,
    etcd_endpoint: str,
    layout: KeyLayout,
) -> None:
    """What 6aa985a left when stopped while `up` waited in Error for its Reconcile: one
    format-1 trigger per scenario, `{own}triggers/up/{scenario}`. This version lists it with
    its scenario and sends each one Reconcile, then removes it. Beside it, a newer daemon's
    trigger and dead letter (format 9): listed as problems naming the format, never sent,
    dropped or changed, reported once and counted. ActionController is down when the daemon
    starts, as it was when that release stopped, and comes up later."""
    own = layout.own
    for package in ("up", "q"):  # in Error, as the daemon left them
        await etcd.package(package, [f"{package}m"])
        await etcd.container(f"{package}1", "dead", f"{package}m")
        await etcd.put(f"{layout.model_states}{package}m/state", "Failed")
        await etcd.put(f"{layout.package_states}{package}/state", "Error")
    for name in ("up_recovery", "up_restart"):
        await etcd.scenario(name, "up")
        body = {"package": "up", "scenario": name, "transition_id": "6aa985a-1"}  # its order
        await etcd.put(f"{own}triggers/up/{name}", json.dumps(body))
    await etcd.scenario("q_fix", "q")
    later = {f"{own}triggers/q": '{"format": 9, "package": "q"}',
             f"{own}deadletters/q": '{"format": 9, "package": "q"}'}  # fmt: skip
    for key, value in later.items():
        await etcd.put(key, value)

    listed = await triggers_cli(etcd_endpoint, layout, "list", "--output", "json")
    document = json.loads(listed.stdout)
    assert [(t["package"], t["scenario"]) for t in document["pending"]] == [
        ("up", "up_recovery"),
        ("up", "up_restart"),
    ]
    assert document["problems"] == [
        {"key": key, "detail": "format 9, newer than this statemanager reads; left as it is"}
        for key in (f"{own}triggers/q", f"{own}deadletters/q")
    ]
    dropped = await triggers_cli(etcd_endpoint, layout, "drop", "q")
    assert dropped.returncode == 1
    text = await triggers_cli(etcd_endpoint, layout, "list")
    assert "pending      up  revision" in text.stdout and "for scenario up_restart" in text.stdout

    d = daemon_factory()  # ActionController down, as when the first release stopped
    d.env["STATEMANAGER_ACTIONCONTROLLER_ADDRESS"] = f"127.0.0.1:{controller.port}"
    d.start()
    await d.wait_synced()

    async def retried() -> bool:
        return len(d.events("reconcile_retry")) >= 2

    await eventually(retried, 20, "both triggers attempted")
    page = http_get(d.metrics_port, "/status")[1]
    for name in ("up_recovery", "up_restart"):  # each goes to its one scenario
        assert f"package <b>up</b> → {name} <span" in page
    await controller.start()
    await has(etcd, "triggers/q", "deadletters/q")
    assert sorted(controller.scenarios()) == ["up_recovery", "up_restart"]
    assert not d.events("reconcile_trigger_unreadable")
    scrape = d.scrape()
    for record in ("trigger", "dead_letter"):
        assert f'statemanager_records_unknown_format_total{{record="{record}"}} 1.0' in scrape
    for key, value in later.items():
        assert await etcd.get(key) == value


@pytest.mark.parametrize("paused", ["old", "new"])
async def test_a_paused_leader_of_either_version_is_fenced_out(
    etcd: Etcd, daemon_factory: DaemonMaker, old_python: str, paused: str
) -> None:
    """A rolling upgrade's worst moment: the leader, of either version, pauses (SIGSTOP) past
    its lease while the fleet churns; the other version takes over, and when the paused one
    resumes it writes nothing more (its writes are fenced on a leader key the other version
    wrote in its own format) and follows; the states end equal to the rules' (the oracle)."""
    churn = Churn(etcd, seed=29)
    await churn.setup()
    daemons = []
    for version in (paused, "new" if paused == "old" else "old"):  # the first one leads
        d = daemon_factory(
            STATEMANAGER_HA_NODE_NAME=version, STATEMANAGER_HA_LEASE_TTL_SECONDS=str(TTL)
        )
        if version == "old":
            d.python = old_python
            d.env.pop("PYTHONPATH", None)
        d.start()
        await d.wait_synced()
        daemons.append(d)
    leader, other = daemons
    assert await the_leader(daemons) is leader
    await converged(etcd)
    await paused_past_its_lease(etcd, leader, [other], churn)
    assert other.events("transition")
