"""The daemon against a real etcd: states written, cascades, deletions, restarts."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from typing import Any

from statemanager.core.rules import model_verdict
from statemanager.core.states import ContainerClass, classify, parse_status

from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are
from fleet import converged
from support import documents

BACKEND = "payment_service.backend_model"
AUTH = "payment_service.auth_model"
FRONTEND = "payment_service.frontend_model"


async def test_payment_service_seed_example(etcd: Etcd, daemon: Daemon) -> None:
    """The seed note's example: mixed containers → Running; one model Failed → Degraded; all → Error."""
    await etcd.package("payment_service", [BACKEND, FRONTEND, AUTH])
    await etcd.container("web", "running", BACKEND)
    await etcd.container("db", "running", BACKEND)
    await etcd.container("cache", "paused", BACKEND)
    await etcd.container("ui", "running", FRONTEND)
    await etcd.container("auth", "running", AUTH)
    await states_are(etcd, {BACKEND: "Running", FRONTEND: "Running", AUTH: "Running",
                            "pkg:payment_service": "Running"})  # fmt: skip

    await etcd.container("auth", "exited", AUTH, ExitCode=137)
    await states_are(etcd, {AUTH: "Failed", "pkg:payment_service": "Degraded"})

    await etcd.container("web", "dead", BACKEND)
    await etcd.container("ui", "running", FRONTEND, OOMKilled="true")
    await states_are(etcd, {BACKEND: "Failed", FRONTEND: "Failed", "pkg:payment_service": "Error"})

    # The cascaded package transition names the model transition that caused it.
    transitions = daemon.events("transition")
    by_id = {t["transition_id"]: t for t in transitions}
    degraded = [t for t in transitions if t["to_state"] == "Degraded"]
    assert len(degraded) == 1
    cause = by_id[degraded[0]["caused_by"]]
    assert (cause["type"], cause["name"], cause["to_state"]) == ("model", AUTH, "Failed")
    assert degraded[0]["revision"] == cause["revision"]  # written in one transaction
    assert degraded[0]["cause_revision"] > 0
    for t in transitions:
        assert t["source"] == "statemanager"
        assert {"from_state", "to_state", "type", "name", "logger"} <= t.keys()
        # One timestamp per line, the transition's own, in nanoseconds.
        assert [k for k in t if "time" in k] == ["timestamp"], t
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", t["timestamp"]), t


async def test_model_change_and_packages_share_one_transaction(etcd: Etcd, daemon: Daemon) -> None:
    """A model listed by two packages: its change and both package changes commit together."""
    await etcd.package("alpha", ["shared", "a_only"])
    await etcd.package("beta", ["shared"])
    await etcd.container("s1", "running", "shared")
    await etcd.container("a1", "running", "a_only")
    await states_are(etcd, {"shared": "Running", "pkg:alpha": "Running", "pkg:beta": "Running"})

    await etcd.container("s1", "dead", "shared")
    await states_are(etcd, {"shared": "Failed", "pkg:alpha": "Degraded", "pkg:beta": "Error"})
    model_rev = await etcd.mod_revision(f"{etcd.layout.model_states}shared/state")
    assert await etcd.mod_revision(f"{etcd.layout.package_states}alpha/state") == model_rev
    assert await etcd.mod_revision(f"{etcd.layout.package_states}beta/state") == model_rev


async def test_container_deleted(etcd: Etcd, daemon: Daemon) -> None:
    """Deleting a model's last container: listed model → Pending; unlisted model → key deleted."""
    await etcd.package("p", ["listed"])
    await etcd.container("c1", "running", "listed")
    await etcd.container("c2", "running", "loose")
    await states_are(etcd, {"listed": "Running", "loose": "Running", "pkg:p": "Running"})
    await etcd.delete(etcd.layout.containers + "c1")
    await etcd.delete(etcd.layout.containers + "c2")
    await states_are(etcd, {"listed": "Pending", "loose": None, "pkg:p": "Paused"})


async def test_model_removed_from_package_spec(etcd: Etcd, daemon: Daemon) -> None:
    """A model dropped from the spec stops counting for the package; without containers its key goes."""
    await etcd.package("p", ["good", "broken"])
    await etcd.container("g", "running", "good")
    await states_are(etcd, {"good": "Running", "broken": "Pending", "pkg:p": "Running"})
    await etcd.container("b", "dead", "broken")
    await states_are(etcd, {"broken": "Failed", "pkg:p": "Degraded"})
    await etcd.delete(etcd.layout.containers + "b")
    await etcd.package("p", ["good"])
    await states_are(etcd, {"broken": None, "good": "Running", "pkg:p": "Running"})


async def test_package_spec_deleted(etcd: Etcd, daemon: Daemon) -> None:
    """Deleting a package spec deletes its state key, and states of models only it listed."""
    await etcd.package("gone", ["m_empty", "m_busy"])
    await etcd.container("c", "running", "m_busy")
    await states_are(etcd, {"pkg:gone": "Running", "m_empty": "Pending", "m_busy": "Running"})
    await etcd.delete(etcd.layout.packages + "gone")
    await states_are(etcd, {"pkg:gone": None, "m_empty": None, "m_busy": "Running"})

    def deletions() -> dict[str, dict[str, Any]]:
        return {t["name"]: t for t in daemon.events("transition") if t["to_state"] == "deleted"}

    async def both_logged() -> bool:  # the line follows the commit etcd already shows
        return {"gone", "m_empty"} <= deletions().keys()

    await eventually(both_logged, what="both deletions logged")
    assert deletions()["gone"]["reason"] == "its Package spec is gone"
    assert deletions()["m_empty"]["reason"] == "no package lists it and it has no containers"
    assert deletions().keys() == {"gone", "m_empty"}


async def test_package_without_models_is_initializing(etcd: Etcd, daemon: Daemon) -> None:
    """P1: a package spec listing no models is Initializing."""
    await etcd.package("empty", [])
    await states_are(etcd, {"pkg:empty": "Initializing"})


async def test_containers_matched_by_name_through_model_spec(etcd: Etcd, daemon: Daemon) -> None:
    """Unannotated containers named {model}_{container} belong to the model whose spec lists them."""
    model = "shop.web_model"
    await etcd.package("shop", [model])
    await etcd.put(
        etcd.layout.containers + "n1",
        '{"names": ["shop.web_model_nginx"], "state": {"Status": "exited", "ExitCode": "0"}}',
    )
    await states_are(etcd, {model: "Pending", "pkg:shop": "Paused"})  # no spec yet: unassigned
    await etcd.model_spec(model, ["nginx"])
    await states_are(etcd, {model: "Succeeded", "pkg:shop": "Running"})
    await etcd.model_spec(model, ["other"])
    await states_are(etcd, {model: "Pending", "pkg:shop": "Paused"})


async def test_burst_of_updates_to_one_model(etcd: Etcd, daemon: Daemon) -> None:
    """1,000 rapid updates to one model's containers end in the state the oracle gives for the
    last write, and the daemon's transitions follow the states the writes went through: never
    the same state twice in a row, in their order, so at most one per change of state."""
    await etcd.package("burst", ["bm"])
    rng = random.Random(7)
    statuses = [("running", {}), ("created", {}), ("exited", {"ExitCode": 0}), ("dead", {})]
    containers: dict[str, ContainerClass] = {}
    passed = [model_verdict(Counter()).state]  # the model's state after each write
    for _ in range(1000):
        cid = f"c{rng.randrange(4)}"
        status, extra = rng.choices(statuses, weights=[3, 3, 3, 1])[0]
        await etcd.container(cid, status, "bm", **extra)
        exit_code = str(extra["ExitCode"]) if extra else None
        containers[cid] = classify(parse_status(status), exit_code, oom_killed=False)
        passed.append(model_verdict(Counter(containers.values())).state)
    await converged(etcd)
    changes = [s for i, s in enumerate(passed) if i == 0 or s != passed[i - 1]]
    assert len(changes) > 50  # the sequence itself moves the model around

    def logged() -> list[str]:
        return [t["to_state"] for t in daemon.events("transition") if t["name"] == "bm"]

    async def last_logged() -> bool:  # the line follows the commit etcd already shows
        return logged()[-1:] == [passed[-1]]

    await eventually(last_logged, what="the last transition logged")
    written = logged()
    assert all(a != b for a, b in itertools.pairwise(written)), written
    remaining = iter(changes)
    assert all(state in remaining for state in written), (written, changes)  # a subsequence


async def test_restart_catches_up_with_changes_made_while_down(
    etcd: Etcd, daemon_factory: DaemonMaker
) -> None:
    """A daemon stopped while etcd changes writes the right states, deletions included, on start."""
    first = daemon_factory()
    first.start()
    await first.wait_synced()
    await etcd.package("keep", ["km"])
    await etcd.package("drop", ["dm"])
    await etcd.container("k", "running", "km")
    await etcd.container("d", "running", "dm")
    await states_are(etcd, {"km": "Running", "dm": "Running", "pkg:drop": "Running"})
    assert first.stop() == 0

    await etcd.container("k", "dead", "km")
    await etcd.delete(etcd.layout.packages + "drop")
    await etcd.delete(etcd.layout.containers + "d")
    second = daemon_factory()
    second.start()
    await second.wait_synced()
    await states_are(etcd, {"km": "Failed", "pkg:keep": "Error", "dm": None, "pkg:drop": None})


async def test_state_key_overwritten_by_someone_else_is_corrected(
    etcd: Etcd, daemon: Daemon
) -> None:
    """Level-triggered: a state key changed behind the daemon's back is put right again."""
    await etcd.package("p", ["m"])
    await etcd.container("c", "running", "m")
    await states_are(etcd, {"m": "Running", "pkg:p": "Running"})
    await etcd.put(f"{etcd.layout.model_states}m/state", "Succeeded")
    await etcd.delete(f"{etcd.layout.package_states}p/state")
    await states_are(etcd, {"m": "Running", "pkg:p": "Running"})


async def test_a_large_burst_fills_transactions_to_the_limit(etcd: Etcd, daemon: Daemon) -> None:
    """600 models changing at once are written in full transactions and the daemon keeps
    running: etcd allows 128 operations a branch (and 128 compares), one kept for the leader
    fence, and each change is two, its state and its history record."""
    ops = []
    for i in range(600):
        doc = documents.container(f"burst{i}", {"Status": "running"}, f"b{i}")
        key = f"{etcd.layout.containers}burst{i}"
        ops.append(etcd.client.transactions.put(key.encode(), doc.encode()))
    for start in range(0, len(ops), 120):
        await etcd.client.transaction(compare=[], success=ops[start : start + 120], failure=[])

    async def all_written() -> bool:
        return len(await etcd.states()) == 600

    await eventually(all_written, 30, "600 model states")
    assert daemon.process is not None
    assert daemon.process.poll() is None
    sizes = [len([t for t in daemon.events("transition") if t["revision"] == r])
             for r in {t["revision"] for t in daemon.events("transition")}]  # fmt: skip
    assert max(sizes) == 127 // 2
