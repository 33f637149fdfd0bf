"""The election of two daemons in process on the in-memory etcd, on virtual time: followers
wait on a watch of the key before theirs instead of polling, and take over as soon as it goes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import WatchBatch
from statemanager.core.triggers import trigger_key
from statemanager.runtime.backoff import Backoff
from statemanager.runtime.election import WATCH_SILENCE_SECONDS

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    Runtime,
    assert_fenced,
    container,
    deliver,
    package,
    state,
    until,
)

pytestmark = pytest.mark.looptime

TTL = 6


@contextlib.asynccontextmanager
async def two_daemons() -> AsyncIterator[tuple[MemEtcd, Runtime, Runtime]]:
    """node-a leading and node-b following, the one package written Running."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c", "m", "running")
    async with Runtime(mem, "node-a", TTL) as a, Runtime(mem, "node-b", TTL) as b:
        await until(lambda: a.parts.election.fence() is not None and b.parts.election.decided)
        await until(lambda: state(mem, "package", "p") == "Running")
        yield mem, a, b
    assert_fenced(mem)


async def test_idle_daemons_only_renew_their_leases() -> None:
    """A virtual minute with nothing changing: the two daemons' requests are their lease
    renewals (every TTL/3 each), not a poll of who leads (twice a second each before)."""
    async with two_daemons() as (mem, _a, b):
        before = mem.requests
        await asyncio.sleep(60)  # deliberately let a virtual minute pass
        renewals = 2 * 60 / (TTL / 3)
        assert mem.requests - before <= renewals + 2
        assert b.parts.election.leader_name() == "node-a"


async def test_follower_takes_over_as_soon_as_the_leader_key_goes() -> None:
    """The leader's key is deleted while its lease lives: the follower, watching it, leads
    at once and writes the next change; the old leader campaigns again behind it and never
    writes without the lead."""
    async with two_daemons() as (mem, a, b):
        fence = a.parts.election.fence()
        assert fence is not None
        loop = asyncio.get_running_loop()
        deleted_at = loop.time()
        mem.delete_now(fence.key)
        await until(lambda: b.parts.election.fence() is not None)
        assert loop.time() - deleted_at <= 0.1  # one step of `until`: no poll, no TTL
        container(mem, "c", "m", "exited")
        await until(lambda: state(mem, "model", "m") == "Succeeded")
        await until(lambda: a.parts.election.decided and a.parts.election.leader_name() == "node-b")
        assert a.parts.election.fence() is None


async def test_follower_with_a_silent_watch_still_takes_over() -> None:
    """Every watch stream goes silent (a half-open connection) while requests still succeed,
    then the leader dies: the follower's renewals keep working, so only the silence limit on
    its election watch makes it read the candidates again and take over (the simulation found
    no daemon leading, for good)."""
    async with two_daemons() as (mem, a, b):
        mem.silence_watches()
        await a.crash()
        loop = asyncio.get_running_loop()
        crashed_at = loop.time()
        await until(lambda: b.parts.election.fence() is not None, timeout=120)
        assert loop.time() - crashed_at <= TTL + WATCH_SILENCE_SECONDS + 1.0


async def test_a_new_leader_plans_nothing_before_its_index_holds_what_the_last_one_wrote() -> None:
    """c dies and node-a writes p's entry into Error (node-b hears it); then every watch goes
    quiet, c runs again and node-a, told of it, writes p Running; node-a dies and c dies
    again. node-b, whose watch comes back late, leads first: its index still holds p in Error
    on c dead. It plans nothing until the index holds etcd's state as of its leader key's
    creation, so p, Running there, enters Error: a new entry with its trigger (before, node-b
    found Error agreeing on its stale index, learnt it as p's previous state, and once its
    watch caught up took putting Error over Running as a correction: a Reconcile lost, the
    simulation's swarm seed 15011406)."""
    async with two_daemons() as (mem, a, b):
        p = WorkKey(Resource.PACKAGE, "p")
        container(mem, "c", "m", "dead")
        await until(lambda: b.parts.controller._index.written(p).value == "Error")
        mem.silence_watches()
        b.parts.watcher._backoff = Backoff(initial=60.0, cap=60.0)  # back 30-60 s later
        deliver(a, mem, "c", container(mem, "c", "m", "running"))
        await until(lambda: state(mem, "package", "p") == "Running")
        await a.crash()
        container(mem, "c", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error", timeout=120)
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 2  # node-a's entry, and node-b's
        assert b.sample("corrections_total", resource="package") == 0


class _HeldElection:
    """etcd as one daemon's election sees it: while `free` is clear every request it sends,
    and every watch batch on its way to it, waits (the daemon's process paused)."""

    def __init__(self, mem: MemEtcd) -> None:
        self._mem = mem
        self.free = asyncio.Event()
        self.free.set()

    def __getattr__(self, name: str) -> Any:
        request = getattr(self._mem, name)

        async def held(*args: Any) -> Any:
            await self.free.wait()
            return await request(*args)

        return held

    async def watch(self, *args: Any) -> AsyncIterator[WatchBatch]:
        await self.free.wait()
        async for batch in self._mem.watch(*args):
            await self.free.wait()
            yield batch


async def test_a_state_changed_while_another_daemon_led_is_no_previous_state() -> None:
    """node-a, leading, writes p's entry into Error and is paused; its key is deleted, node-b
    leads and learns Error as p's previous state. etcd is restored to a snapshot holding
    node-a's key, older than node-b's: node-a, resumed, leads under it and writes p Running
    while node-b's key stays. node-a dies; node-b leads again under the same key, and c dies:
    p's entry into Error is a transition with its Reconcile: having found node-a leading,
    node-b learns p's change to what the rules gave meanwhile as that leader's write, not as
    someone else's to correct.
    Before, the same key made it keep Error as p's previous
    state, and putting Error back over node-a's Running was a correction with no trigger (a
    Reconcile lost, the simulation's swarm seed 17044339). Nor may node-b, following, write:
    its worker, waiting for keys with the fence it took while leading, sent c's change under
    it (etcd's compare passed, node-b's key still being there) beside node-a's."""
    async with two_daemons() as (mem, a, b):
        p = WorkKey(Resource.PACKAGE, "p")
        fence = a.parts.election.fence()
        assert fence is not None
        held = _HeldElection(mem)
        a.parts.election._client = held
        container(mem, "c", "m", "dead")
        await until(lambda: b.parts.controller._index.written(p).value == "Error")
        snapshot = mem.snapshot_now()
        held.free.clear()
        mem.delete_now(fence.key)
        await until(lambda: b.parts.controller._writer.previous.previous(p) == "Error")
        await b.parts.controller.rested()
        mem.replace_history(snapshot)
        held.free.set()
        await until(lambda: b.parts.election.leader_name() == "node-a")
        deliver(a, mem, "c", container(mem, "c", "m", "running"))
        await until(lambda: state(mem, "package", "p") == "Running")
        await until(lambda: b.parts.controller._index.written(p).value == "Running")
        await a.parts.controller.rested()
        await b.parts.controller.rested()
        assert b.sample("etcd_write_conflicts_total") == 0  # node-b, following, sent nothing
        await a.crash()
        mem.delete_now(fence.key)
        await until(lambda: b.parts.election.fence() is not None)
        container(mem, "c", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error")
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 2  # node-a's entry (the snapshot holds it), and node-b's
        assert b.sample("corrections_total", resource="package") == 0


@pytest.mark.parametrize("yields", [0, 1, 2, 3])
async def test_a_stop_just_after_a_wake_still_stops_the_election(yields: int) -> None:
    """The stop (task cancellation) arrives a step or two after the election's wake event was
    set: the election must end. With `asyncio.wait_for` on Python 3.11 it swallowed the
    cancellation and ran on (the simulation's schedules that never finished stopping)."""
    mem = MemEtcd()
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        task = next(t for t in rt._tasks if t.get_name() == "election")
        rt.parts.election.lost()  # sets the wake event the campaign loop waits on
        for _ in range(yields):
            await asyncio.sleep(0)  # let the event's waiter finish first
        task.cancel()
        await until(task.done, timeout=5)
        assert task.cancelled()
        rt._tasks.remove(task)  # ended as asked; the harness reports tasks that ended alone
