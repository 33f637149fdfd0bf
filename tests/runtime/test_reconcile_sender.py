"""The reconcile sender in process: a Scenario watch delivered behind the container watch."""

from __future__ import annotations

import pytest

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, container, package, scenario, state, until

pytestmark = pytest.mark.looptime


async def test_scenario_arriving_after_the_death_still_gets_its_reconcile() -> None:
    """A Scenario written before the container dies reaches the index after the death (its
    watch is still catching up): the package's entry into Error is reconciled all the same,
    with no `no scenario` verdict on the way."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        mem.lag_watches(LAYOUT.scenarios)
        scenario(mem, "s", "p")
        container(mem, "c1", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error")
        await until(lambda: rt.sample("reconcile_triggers_total", outcome="recorded") == 1)
        assert rt.controller.index.scenarios_of("p") == []
        mem.lag_watches(LAYOUT.scenarios, lagging=False)
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await until(lambda: rt.sample("reconcile_triggers_total", outcome="delivered") == 1)
        assert rt.sample("reconcile_no_scenario_total") == 0


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
        await until(lambda: not mem.range_now(f"{LAYOUT.own}triggers/p".encode()).records)
        assert rt.actioncontroller.calls == []
