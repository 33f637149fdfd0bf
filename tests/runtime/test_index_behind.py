"""A failed guard showing a write the watch has not brought yet: the index is behind etcd, and
the keys wait for the watch instead of being planned again on the inputs it still holds."""

from __future__ import annotations

import pytest

from statemanager.core.ports import Event

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    container,
    deliver,
    disagreements,
    state,
    state_revisions,
    synced_then_deaf,
    until,
)

pytestmark = pytest.mark.looptime


async def test_a_guard_failing_on_a_write_the_watch_has_not_brought_waits_for_the_watch() -> None:
    """The daemon (p of model m, container c1 Running) hears c1 pause and someone write m's
    state Pending (a writer ahead of it), but not what came next: c1 died and the leader before
    it wrote m Failed and p Error (its watch is half-open, or lags a takeover). It plans p
    Paused, and the guard fails on p's Error, at a revision its watch has not reached. Planned
    again at once, p went to Paused over Error while etcd held m Failed (a package state its
    models' states contradict, a transition from Error and a second entry into Error once the
    watch caught up: swarm seed 5061923). The keys now wait for the watch to bring the index
    past that revision, and then find etcd agreeing."""
    mem = MemEtcd()
    model_key = f"{LAYOUT.model_states}m/state".encode()
    async with synced_then_deaf(mem) as rt:
        paused = container(mem, "c1", "m", "paused")
        pending = mem.put_now(model_key, b"Pending")
        container(mem, "c1", "m", "dead")
        mem.put_now(model_key, b"Failed")
        erring = mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Error")
        deliver(rt, mem, "c1", paused)
        rt.parts.controller.apply(LAYOUT.model_states, [Event(model_key, b"Pending", pending)])
        await until(lambda: rt.sample("etcd_write_conflicts_total") == 1)
        await until(lambda: rt.parts.watcher.applied(LAYOUT.package_states) >= erring)
        await rt.parts.controller.rested()
        assert state(mem, "package", "p") == "Error"
    assert [value for _, value in state_revisions(mem, "package", "p")] == ["Running", "Error"]
    assert disagreements(mem) == []
