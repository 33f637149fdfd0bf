"""A write whose every answer was lost, on the in-memory etcd and virtual time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from statemanager.core.ports import Event
from statemanager.core.triggers import trigger_key

from support.memetcd import MemEtcd, StoreSnapshot
from support.runtime import (
    LAYOUT,
    Runtime,
    container,
    deliver,
    package,
    state,
    synced_then_deaf,
    until,
)

pytestmark = pytest.mark.looptime


async def _lost_answer_then(before_retry: Callable[[Runtime, MemEtcd], object]) -> None:
    """A package's Error (with its trigger) lands, but etcd's answer is lost and so is the
    watch echo; `before_retry` acts before the retry, which someone setting the package to
    Running makes fail. Error must be put back as a correction, and no second trigger
    recorded."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        mem.lose_next_txn_response()
        mem.before_next_txn(lambda: None)  # the first attempt lands as sent
        package_state = f"{LAYOUT.package_states}p/state".encode()
        mem.before_next_txn(lambda: (before_retry(rt, mem), mem.put_now(package_state, b"Running")))
        deliver(rt, mem, "c1", revision)
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 1


async def test_an_error_write_landed_unheard_then_overwritten_is_put_back_as_a_correction() -> None:
    """The keys cannot show the write landed; its trigger record, naming this write's
    transition, can."""
    await _lost_answer_then(lambda rt, mem: None)


async def test_a_replaced_history_noticed_during_the_retries_keeps_the_lost_writes_records() -> (
    None
):
    """Before the retry the watcher notices a replaced history (a wipe or restore it learnt of
    late: every generation learnt is forgotten) and the trigger is delivered: the lost write's
    history record is looked up by the name it was sent with (not named again from the
    forgotten generations, which would name generation 0). Found by the soak (seed 300823: two
    wipes and a blind restore)."""

    def noticed_and_delivered(rt: Runtime, mem: MemEtcd) -> None:
        rt.parts.controller.forget_history()  # as the watcher does on a replaced history
        mem.delete_now(trigger_key(LAYOUT, "p"))

    await _lost_answer_then(noticed_and_delivered)


async def test_an_error_write_landed_unheard_delivered_then_overwritten_records_no_second_trigger() -> (
    None
):
    """As above, but the trigger is delivered and removed before the retry (the sender
    watches etcd, so it can see the write the writer never heard of): neither the keys nor a
    trigger record show the write landed, but its history record, naming its transition, does:
    putting Error back is a correction and records no second trigger. Found by the
    simulator's swarm schedules (an Error write with every answer lost, its echo lost, its
    trigger delivered, the package overwritten)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        mem.lose_next_txn_response()
        mem.before_next_txn(lambda: None)  # the first attempt lands as sent
        package_state = f"{LAYOUT.package_states}p/state".encode()

        overwritten: list[int] = []

        def delivered_then_overwritten() -> None:
            mem.delete_now(trigger_key(LAYOUT, "p"))
            overwritten.append(mem.put_now(package_state, b"Running"))

        mem.before_next_txn(delivered_then_overwritten)
        deliver(rt, mem, "c1", revision)
        # Error is put back after the overwrite (as a correction, or as a new entry).
        await until(
            lambda: bool(overwritten) and mem.range_now(package_state).records[0].value == b"Error"
        )
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 1


async def test_an_error_write_landed_with_every_answer_lost_then_overwritten_records_no_second_trigger() -> (
    None
):
    """A package's Error (with its trigger) lands, but every answer of every attempt is lost
    and so is the watch echo; someone else sets the package to Running before the second
    attempt. The writer gives up unanswered, and the next commit's answer clears nothing it
    knew: the first transaction's trigger record, naming its transition, still shows it
    landed, so Error is put back as a correction and no second trigger is recorded. Found by
    the simulator (lose_error_write: six answers lost, the echo lost, the state overwritten)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        mem.lose_next_txn_response(6)  # the writer's five attempts, and the next commit's first
        mem.before_next_txn(lambda: None)  # the first attempt lands as sent
        package_state = f"{LAYOUT.package_states}p/state".encode()
        overwritten: list[int] = []
        mem.before_next_txn(lambda: overwritten.append(mem.put_now(package_state, b"Running")))
        deliver(rt, mem, "c1", revision)
        await until(lambda: bool(overwritten) and state(mem, "package", "p") == "Error")
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 1


async def test_a_retry_does_not_land_again_after_its_absent_key_was_deleted_again() -> None:
    """A new package's state key is absent when its Error write is planned (guarded on
    "absent"); the first attempt lands, its answer is lost, and someone deletes the state
    before the retry: the state guard passes a second time, but the guard on the history
    record's key (each generation's is new) fails, so the transaction does not land twice and
    its trigger is put once. Found by the soak (24 of its 30 broken seeds: an ABA on the state
    key's guard)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        deliver(rt, mem, "c1", container(mem, "c1", "m", "dead"))
        await until(lambda: state(mem, "package", "p") == "Error")
        package_state = f"{LAYOUT.package_states}q/state".encode()
        spec_key = f"{LAYOUT.packages}q".encode()
        spec = package(mem, "q", ["m"])  # q's Error alone is written, guarded on "absent"
        mem.lose_next_txn_response()
        mem.before_next_txn(lambda: None)  # the first attempt lands as sent
        mem.before_next_txn(lambda: mem.delete_now(package_state))
        value = mem.range_now(spec_key).records[0].value
        rt.parts.controller.apply(LAYOUT.packages, [Event(spec_key, value, spec)])
        await until(lambda: len(mem._versions.get(package_state, [])) >= 3)  # put, deleted, put
        await until(lambda: state(mem, "package", "q") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "q")] if r is not None]
    assert len(puts) == 1


async def test_an_error_write_landed_unanswered_on_a_restored_history_is_looked_for() -> None:
    """A new package q's entry into Error goes out; etcd is restored to just below it as it
    does, so the attempt lands on the new history, its answer lost; someone deletes q's state
    before the retry, whose answer (below a revision etcd gave before) shows the replacement.
    The attempt may have landed: after the relist, its trigger record still shows it did, so
    putting Error back is a correction with no second trigger (before, only an attempt whose
    every answer was lost was looked for: the simulation's swarm seed 7072400)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        spec = package(mem, "q", ["n"])
        death = container(mem, "c2", "n", "dead")
        mem.put_now(b"/elsewhere/x", b"1")
        mem.put_now(b"/elsewhere/x", b"2")
        deliver(rt, mem, "c9", container(mem, "c9", "m9", "running"))
        await until(lambda: state(mem, "model", "m9") == "Running")  # answered above it all
        mem.lose_next_txn_response()
        mem.before_next_txn(
            lambda: mem.replace_history(StoreSnapshot(death, mem.compacted_revision))
        )
        q_state = f"{LAYOUT.package_states}q/state".encode()
        mem.before_next_txn(lambda: mem.delete_now(q_state))
        key = f"{LAYOUT.packages}q".encode()
        value = mem.range_now(key).records[0].value
        rt.parts.controller.apply(LAYOUT.packages, [Event(key, value, spec)])
        deliver(rt, mem, "c2", death)
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await until(lambda: state(mem, "package", "q") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "q")] if r is not None]
    assert len(puts) == 1


async def test_a_write_landed_unanswered_then_shown_by_a_failed_guard_is_the_previous_state() -> (
    None
):
    """p is in Error; c1 runs again and the daemon writes p Running, which lands, but every
    answer of every attempt is lost and so is the watch echo: the write is deferred. Planned
    again, its guard fails on the very value it wrote. That answer shows what the deferred
    write put there: Running is p's previous state, so c1 dying again is a new entry into
    Error, with its trigger (before, the failed guard's answer ended the wait for the first
    write unlearnt, the previous state stayed Error and the entry was taken as a correction:
    the Reconcile was lost; the simulation's swarm seed 11052761)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        deliver(rt, mem, "c1", container(mem, "c1", "m", "dead"))
        await until(lambda: state(mem, "package", "p") == "Error")
        conflicts = rt.sample("etcd_write_conflicts_total")
        mem.lose_next_txn_response(5)  # the writer's five attempts; the first one lands
        deliver(rt, mem, "c1", container(mem, "c1", "m", "running"))
        await until(lambda: rt.sample("etcd_write_conflicts_total") > conflicts)
        assert state(mem, "package", "p") == "Running"
        deliver(rt, mem, "c1", container(mem, "c1", "m", "dead"))
        await until(lambda: state(mem, "package", "p") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 2
    assert rt.sample("corrections_total", resource="package") == 0
