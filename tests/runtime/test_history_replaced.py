"""etcd's history replaced under a running daemon (a wipe, a restore from a snapshot), in the
corners the simulator's restore and wipe faults found (tests/simulation)."""

from __future__ import annotations

import asyncio

import pytest

from statemanager.core.ports import Event, ReconcileOutcome
from statemanager.runtime.backoff import Backoff

from support.memetcd import MemEtcd, StoreSnapshot
from support.runtime import (
    LAYOUT,
    container,
    deliver,
    disagreements,
    package,
    scenario,
    state,
    state_revisions,
    synced,
    synced_then_deaf,
    trigger_revision,
    until,
)

pytestmark = pytest.mark.looptime


async def test_a_restore_below_a_write_whose_echo_had_not_come_is_noticed() -> None:
    """The daemon writes a state (etcd answers at W) whose echo never comes; etcd is then
    restored to W - 1, at or above every revision the watch delivered, with the raft term it
    had. Only the answer tells that etcd went back: the daemon relists and writes the state
    again."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c2", "solo", "running")  # a model with no state key yet
        deliver(rt, mem, "c2", revision)
        await until(lambda: state(mem, "model", "solo") == "Running")
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        assert state(mem, "model", "solo") is None
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "model", "solo") == "Running")
    assert disagreements(mem) == []


async def test_a_write_against_a_wiped_etcd_waits_for_the_relist() -> None:
    """etcd is wiped; the daemon leads again in the new history, and before its watcher has
    noticed (slow to reconnect here) the worker writes a change: the guard fails against the
    new history, which a failed guard cannot teach the index (the revisions it knows are
    higher). The write is deferred, not sent again at once in a loop that lets no time pass;
    once the watcher has relisted, the states of what is written anew are right."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        old = rt.parts.election.fence()
        rt.parts.watcher._backoff = Backoff(initial=5.0, cap=5.0)  # reconnects 2.5-5 s later
        revision = container(mem, "c1", "m", "dead")
        key = f"{LAYOUT.containers}c1".encode()
        value = mem.range_now(key).records[0].value
        mem.replace_history(None)
        await until(lambda: rt.parts.election.fence() not in (None, old))
        assert rt.sample("watch_restarts_total", reason="revision_backwards") == 0
        # The change as the watch would have brought it, had the stream not gone quiet.
        rt.parts.controller.apply(LAYOUT.containers, [Event(key, value, revision)])
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        package(mem, "p", ["m"])
        container(mem, "c1", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error")
    assert disagreements(mem) == []


async def test_a_restored_trigger_waits_for_the_index_of_the_new_history() -> None:
    """p's entry into Error is delivered to s, then s is retargeted to q, and etcd is restored
    to the Error's revision: the trigger is back, and s targets p again. The trigger feed lists
    it before the watcher has noticed the restore (slow to reconnect here): the index still
    says nobody targets p, at a revision of the replaced history above the trigger's. The
    delivery waits for the index of the new history and asks s again, with no `no scenario`
    verdict (before, the trigger was dropped: the simulation's seeds 400168 and 402588)."""
    mem = MemEtcd()
    package(mem, "q", ["n"])
    async with synced(mem, "c", target="s") as rt:
        container(mem, "c", "m", "dead")
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await until(lambda: trigger_revision(mem, "p") == 0)
        error_at = state_revisions(mem, "package", "p")[-1][0]
        scenario(mem, "s", "q")
        await until(lambda: rt.parts.index.scenarios_of("p") == [])
        rt.parts.watcher._backoff = Backoff(initial=5.0, cap=5.0)  # reconnects 2.5-5 s later
        mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
        assert trigger_revision(mem, "p") == error_at
        await until(lambda: rt.actioncontroller.calls == ["s", "s"])
        await until(lambda: trigger_revision(mem, "p") == 0)
        assert rt.sample("watch_restarts_total", reason="revision_backwards") == 1
        assert rt.sample("reconcile_no_scenario_total") == 0


async def test_a_trigger_the_restore_took_back_is_not_sent_on_after_a_slow_call() -> None:
    """p's entry into Error is sent to s, which answers slowly; meanwhile etcd is restored to
    before it, and the trigger feed's listing drops the trigger etcd no longer holds. The
    sender, still in that delivery, must not go on to ask t, the next scenario: before, it sent
    the dropped trigger on (the simulation's seed 500739: a Reconcile with no trigger)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        scenario(mem, "t", "p")
        await until(lambda: rt.parts.index.scenarios_of("p") == ["s", "t"])
        ac = rt.actioncontroller
        answer = ac.reconcile
        slow = asyncio.Event()

        async def slow_for_s(name: str) -> ReconcileOutcome:
            if name == "s" and not slow.is_set():
                ac.calls.append(name)
                await slow.wait()
                return ReconcileOutcome(True, False, "ok", "")
            return await answer(name)

        ac.reconcile = slow_for_s  # type: ignore[method-assign]
        before = mem.current_revision
        container(mem, "c", "m", "dead")
        await until(lambda: ac.calls == ["s"])
        mem.replace_history(StoreSnapshot(before, mem.compacted_revision))
        await until(lambda: rt.sample("reconcile_pending_triggers") == 0)
        slow.set()
        await until(lambda: state(mem, "package", "p") == "Running")
        container(mem, "c", "m", "dead")  # a new entry into Error, on the new history
        await until(lambda: len(ac.calls) >= 3)
        await until(lambda: trigger_revision(mem, "p") == 0)
        assert ac.calls == ["s", "s", "t"]
