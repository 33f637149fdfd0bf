"""The reconcile sender in process: a Scenario watch delivered behind the container watch, etcd
refusing the sender's requests, an etcd outage while it follows the triggers."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from statemanager.core.errors import EtcdError
from statemanager.core.ports import Header

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    Runtime,
    container,
    package,
    scenario,
    state,
    synced,
    trigger_revision,
    until,
)

pytestmark = pytest.mark.looptime


async def _following_live(rt: Runtime, mem: MemEtcd) -> None:
    """Wait until the watcher has caught up (it holds a fresh stream's events until etcd says
    every prefix has) and applied the daemon's own last write: from then on a lagging prefix
    is a live watch falling behind, not a catch-up."""
    await until(lambda: rt.parts.watcher.applied(LAYOUT.package_states) == mem.current_revision)


async def test_a_death_waits_for_the_scenario_watch_behind_it() -> None:
    """A Scenario written before the container dies, its watch behind the container watch:
    the death is not applied while the Scenario is missing from the index (no Error, no
    trigger), then the package's entry into Error is reconciled to the Scenario, with no
    `no scenario` verdict on the way."""
    mem = MemEtcd()
    async with synced(mem, "c1", target=None) as rt:
        await _following_live(rt, mem)
        mem.lag_watches(LAYOUT.scenarios)
        scenario(mem, "s", "p")
        container(mem, "c1", "m", "dead")
        await asyncio.sleep(1)  # deliberately: an Error applied early would be written meanwhile
        assert state(mem, "package", "p") == "Running"
        assert trigger_revision(mem, "p") == 0
        mem.lag_watches(LAYOUT.scenarios, lagging=False)
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await until(lambda: rt.sample("reconcile_triggers_total", outcome="delivered") == 1)
        assert rt.sample("reconcile_triggers_total", outcome="recorded") == 1
        assert rt.sample("reconcile_no_scenario_total") == 0


async def test_a_package_moved_off_its_models_while_its_watch_lags_gets_no_reconcile() -> None:
    """p is moved off its model m onto n, which runs, and then m's container dies, while the
    Package watch is behind the container watch: by the rules p never enters Error, and the
    daemon, which holds the death until the Package watch has caught up, records no trigger
    (before, it derived Error from the death and p's old models: the simulation's seed
    351961)."""
    mem = MemEtcd()
    container(mem, "d", "n", "running")
    async with synced(mem) as rt:
        await _following_live(rt, mem)
        mem.lag_watches(LAYOUT.packages)
        package(mem, "p", ["n"])
        container(mem, "c", "m", "dead")
        await asyncio.sleep(1)  # deliberately: an Error derived from the mix would be written
        mem.lag_watches(LAYOUT.packages, lagging=False)
        await until(lambda: state(mem, "model", "m") == "Failed")
        written = mem.range_now(f"{LAYOUT.model_states}m/state".encode()).records[0].mod_revision
        await until(lambda: rt.parts.watcher.applied(LAYOUT.model_states) >= written)
        assert state(mem, "package", "p") == "Running"
        assert rt.sample("reconcile_triggers_total", outcome="recorded") == 0
        assert rt.actioncontroller.calls == []


async def test_package_without_scenario_is_warned_counted_and_not_sent() -> None:
    """No Scenario targets the package: its trigger ends with a `no scenario` count and no
    request once the index is known current, without waiting for any Scenario event."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    scenario(mem, "other", "q")
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        container(mem, "c1", "m", "dead")
        await until(lambda: rt.sample("reconcile_no_scenario_total") == 1)
        await until(lambda: trigger_revision(mem, "p") == 0)
        assert rt.actioncontroller.calls == []


async def test_refused_removal_is_retried_not_fatal() -> None:
    """etcd refuses the removal of a delivered trigger (permission denied, not an outage): the
    sender backs off and removes it later; no task of the daemon ends."""
    mem = MemEtcd()
    async with synced(mem, "c1") as rt:
        rt.actioncontroller.refusing = True
        container(mem, "c1", "m", "dead")
        await until(lambda: len(rt.actioncontroller.calls) >= 1)
        mem.refuse_next_txn(EtcdError("etcd refused txn: permission denied"))
        with capture_logs() as logged:
            rt.actioncontroller.refusing = False
            await until(lambda: rt.sample("reconcile_triggers_total", outcome="delivered") == 1)
        assert trigger_revision(mem, "p") == 0
    deferred = [e for e in logged if e["event"] == "reconcile_deferred"]
    assert "permission denied" in deferred[0]["error"]


async def test_outage_is_reported_once_not_per_watch_retry() -> None:
    """30 s of etcd outage while the sender follows the triggers: one `etcd_unreachable` line,
    no `reconcile_watch_broken` warning per retry, delivery works once etcd is back."""
    mem = MemEtcd()
    async with synced(mem, "c1") as rt:
        await until(lambda: mem.watching(f"{LAYOUT.own}triggers/"))
        with capture_logs() as logged:
            mem.outage()
            await asyncio.sleep(30)
            mem.restore()
            await until(lambda: mem.watching(f"{LAYOUT.own}triggers/"))
        container(mem, "c1", "m", "dead")
        await until(lambda: rt.actioncontroller.calls == ["s"])
    warnings = [e["event"] for e in logged if e["log_level"] == "warning"]
    assert warnings.count("etcd_unreachable") == 1
    assert "reconcile_watch_broken" not in warnings, warnings


async def test_a_new_entry_into_error_supersedes_the_trigger_being_retried() -> None:
    """ActionController refuses the first delivery; while the sender backs off, the package
    leaves Error and enters it again. The newer trigger replaces the older one: one Reconcile
    is delivered, for the newer entry, and no trigger is left."""
    mem = MemEtcd()
    async with synced(mem) as rt:
        fake = rt.actioncontroller
        fake.refusing = True
        with capture_logs() as logs:
            container(mem, "c", "m", "dead")
            await until(lambda: fake.calls == ["s"])  # refused; the sender backs off
            first = trigger_revision(mem, "p")
            container(mem, "c", "m", "running")
            await until(lambda: state(mem, "package", "p") == "Running")
            container(mem, "c", "m", "dead")
            await until(lambda: trigger_revision(mem, "p") > first)
            fake.refusing = False
            await until(lambda: trigger_revision(mem, "p") == 0)
        superseded = [e for e in logs if e["event"] == "reconcile_superseded"]
        assert len(superseded) == 1 and superseded[0]["by"] > first
        assert rt.sample("reconcile_triggers_total", outcome="recorded") == 2
        assert rt.sample("reconcile_triggers_total", outcome="delivered") == 1
        assert rt.sample("reconcile_triggers_total", outcome="dropped") == 0
        assert fake.calls[-1] == "s" and fake.calls.count("s") >= 2


async def test_a_scenario_retargeted_just_before_the_death_is_asked_too() -> None:
    """s1 targets p; s0 is moved from q to p just before p's container dies, and its change is
    still on the way to the index (its watch lags). The death is applied only with the
    scenarios as of it: both are asked (before, s1 alone, and the trigger was removed: the
    simulation's seed 42829)."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    package(mem, "q", ["n"])
    scenario(mem, "s0", "q")
    scenario(mem, "s1", "p")
    container(mem, "c", "m", "running")
    container(mem, "d", "n", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        await _following_live(rt, mem)
        mem.lag_watches(LAYOUT.scenarios)
        scenario(mem, "s0", "p")
        container(mem, "c", "m", "dead")
        await asyncio.sleep(3)  # deliberately: a delivery to s1 alone would happen meanwhile
        assert rt.actioncontroller.calls == []
        mem.lag_watches(LAYOUT.scenarios, lagging=False)
        await until(lambda: sorted(rt.actioncontroller.calls) == ["s0", "s1"])
        await until(lambda: trigger_revision(mem, "p") == 0)


async def test_a_scenario_applied_while_the_sender_checks_the_index_is_asked() -> None:
    """s is retargeted to p just before p's Error write lands (its watch behind), so the
    trigger waits for the index; the Scenario watch catches up exactly while the sender asks
    etcd whether the index is current. The scenarios are read from the index after that check,
    so s is asked (before, they were read first: none, a `no scenario` verdict and the trigger
    dropped: the soak's seed 1069783)."""
    mem = MemEtcd()
    async with synced(mem, "c", target=None) as rt:
        await _following_live(rt, mem)
        mem.before_next_txn(lambda: (mem.lag_watches(LAYOUT.scenarios), scenario(mem, "s", "p")))
        ask = mem.header
        caught_up: list[bool] = []

        async def header_as_the_watch_catches_up() -> Header:
            if not caught_up and trigger_revision(mem, "p"):
                caught_up.append(True)
                mem.lag_watches(LAYOUT.scenarios, lagging=False)
                await until(lambda: rt.parts.watcher.applied(LAYOUT.scenarios) > 0)
            return await ask()

        mem.header = header_as_the_watch_catches_up  # type: ignore[method-assign]
        container(mem, "c", "m", "dead")
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await until(lambda: trigger_revision(mem, "p") == 0)
        assert caught_up == [True]
        assert rt.sample("reconcile_no_scenario_total") == 0
