"""etcd's history replaced under a running daemon (a wipe, a restore from a snapshot), in the
corners the simulator's restore and wipe faults found (tests/simulation)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import Event, ReconcileOutcome
from statemanager.core.triggers import trigger_key
from statemanager.runtime.backoff import Backoff

from support.memetcd import MemEtcd, StoreSnapshot
from support.runtime import (
    LAYOUT,
    FakeActionController,
    Runtime,
    container,
    deliver,
    disagreements,
    history,
    package,
    scenario,
    state,
    state_revisions,
    synced,
    synced_then_deaf,
    trigger_revision,
    until,
)
from support.servicer import container_list, send_list

pytestmark = pytest.mark.looptime


def _answers_held(ac: FakeActionController) -> asyncio.Event:
    """Make `ac` hold its answers (each call recorded as it comes) until the returned event is
    set: ActionController slow to answer, so a trigger stays pending meanwhile."""
    answer = ac.reconcile
    released = asyncio.Event()

    async def held(name: str) -> ReconcileOutcome:
        if not released.is_set():
            ac.calls.append(name)
            await released.wait()
        return await answer(name)

    ac.reconcile = held  # type: ignore[method-assign]
    return released


async def _new_package_in_error_unechoed(rt: Runtime, mem: MemEtcd) -> int:
    """Package q of model n, whose container c2 is dead, handed to the deaf daemon, which
    writes q's entry into Error (its echo lost); the revision of c2's death."""
    spec = package(mem, "q", ["n"])
    revision = container(mem, "c2", "n", "dead")
    for prefix, name, at in ((LAYOUT.packages, "q", spec), (LAYOUT.containers, "c2", revision)):
        key = f"{prefix}{name}".encode()
        value = mem.range_now(key, revision=at).records[0].value
        rt.parts.controller.apply(prefix, [Event(key, value, at)])
    await until(lambda: state(mem, "package", "q") == "Error")
    return revision


async def _relisted_into_error_with_its_trigger(rt: Runtime, mem: MemEtcd, name: str) -> None:
    """Once the daemon has relisted the restored history, package `name` is put in Error as a
    new entry there: with its own trigger (the only one that history holds), no correction."""
    await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
    await until(lambda: state(mem, "package", name) == "Error")
    puts = [r for _, r in mem._versions.get(trigger_key(LAYOUT, name), []) if r is not None]
    assert len(puts) == 1  # the new history's own entry into Error
    assert rt.sample("corrections_total", resource="package") == 0


async def _slow_error(rt: Runtime, mem: MemEtcd) -> tuple[asyncio.Event, int]:
    """ActionController slow to answer (`_answers_held`), c dies and p enters Error: the event
    that releases the answers, and the revision of p's entry (its trigger's, E)."""
    slow = _answers_held(rt.actioncontroller)
    container(mem, "c", "m", "dead")
    await until(lambda: rt.actioncontroller.calls == ["s"])
    return slow, trigger_revision(mem, "p")


async def _refused_error_left(rt: Runtime, mem: MemEtcd) -> int:
    """ActionController refusing, c dies and p enters Error (at E, returned), then c runs
    again: p is Running, and its trigger dropped."""
    rt.actioncontroller.refusing = True
    container(mem, "c", "m", "dead")
    await until(lambda: len(rt.actioncontroller.calls) >= 1)
    error_at = trigger_revision(mem, "p")
    container(mem, "c", "m", "running")
    await until(lambda: state(mem, "package", "p") == "Running")
    await until(lambda: trigger_revision(mem, "p") == 0)  # dropped: p left Error
    return error_at


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


async def test_a_write_landing_on_a_restored_etcd_leaves_no_gap_in_the_history() -> None:
    """Model solo is Running, then its state is deleted (its records 1 and 2); someone puts it
    back and the daemon deletes it again (record 3). etcd is then restored to just after the
    first deletion as the daemon's next write of solo lands: the state key is absent in both
    histories, so the state's guard passes, but record 3 is gone. The write must not land
    with record 4 after 2 (a gap in what etcd holds): its guard on record 3 fails, and once
    the daemon has relisted, solo's next record is 3. Found by the simulator at swarm seed
    357081."""
    mem = MemEtcd()
    async with synced(mem, "c1", target=None) as rt:
        container(mem, "c2", "solo", "running")
        await until(lambda: state(mem, "model", "solo") == "Running")
        mem.delete_now(f"{LAYOUT.containers}c2".encode())
        await until(lambda: len(history(mem, "model", "solo")) == 2)
        snapshot = mem.snapshot_now()
        mem.put_now(f"{LAYOUT.model_states}solo/state".encode(), b"Pending")
        await until(lambda: len(history(mem, "model", "solo")) == 3)
        assert state(mem, "model", "solo") is None
        restarts = rt.sample("watch_restarts_total", reason="revision_backwards")
        mem.before_next_txn(lambda: mem.replace_history(snapshot))
        container(mem, "c2", "solo", "dead")
        await until(
            lambda: rt.sample("watch_restarts_total", reason="revision_backwards") > restarts
        )
        container(mem, "c2", "solo", "running")
        await until(lambda: state(mem, "model", "solo") == "Running")
        records = history(mem, "model", "solo")
    # Whether the deferred write lands again before the relist (Failed, then deleted as the
    # relist finds c2 gone) depends on the reconnection's jitter; either way the records in
    # etcd are consecutive from the two the restore kept, and each follows the one before.
    assert [g for g, _ in records] == list(range(1, len(records) + 1))
    assert [(t.from_state, t.to_state) for _, t in records[:3]] == [
        (None, "Running"),
        ("Running", None),
        (None, records[2][1].to_state),
    ]
    assert all(a.to_state == b.from_state for (_, a), (_, b) in itertools.pairwise(records))
    assert records[-1][1].to_state == "Running"
    assert disagreements(mem) == []


async def test_a_write_whose_answers_were_lost_then_restored_away_leaves_no_gap() -> None:
    """A write of model m's state lands with every answer lost (its echo lost too: the watches
    are deaf); the daemon reads m's newest record (that write's) for its next try. etcd is
    then restored to before that write as the next try lands: m's state key is there as the
    daemon last knew it, so the state's guard passes, but the record the generation was
    counted from is gone. The try fails on that record's guard, the daemon reads m's
    generations again, and m's next record follows the last one etcd holds. Found by the
    simulator at swarm seed 362507."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "paused")
        snapshot = mem.snapshot_now()
        sent = len(mem.txn_log)
        mem.lose_next_txn_response(5)  # the writer's five attempts
        deliver(rt, mem, "c1", revision)
        await until(lambda: len(mem.txn_log) == sent + 5)
        assert [g for g, _ in history(mem, "model", "m")] == [1, 2]
        replaced = mem.replaced
        mem.before_next_txn(lambda: mem.replace_history(snapshot))
        await until(lambda: mem.replaced > replaced and mem.current_revision > snapshot.revision)
        await until(lambda: state(mem, "model", "m") == "Pending")
        records = history(mem, "model", "m")
    assert [g for g, _ in records] == [1, 2]
    assert [(t.from_state, t.to_state) for _, t in records] == [
        (None, "Running"),
        ("Running", "Pending"),
    ]
    assert records[1][1].revision == snapshot.revision + 1  # written again on the new history
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
        after_death = rt.sample("last_seen_revision")
        mem.replace_history(StoreSnapshot(before, mem.compacted_revision))
        await until(lambda: rt.sample("reconcile_pending_triggers") == 0)
        slow.set()
        # The relist of the new history (p Running, as the snapshot has it) before the next
        # death: a death etcd takes before it gets no trigger (the previous states learnt on
        # the replaced history still say Error: a limit the README's simulation section names).
        await until(lambda: rt.sample("last_seen_revision") < after_death)
        container(mem, "c", "m", "dead")  # a new entry into Error, on the new history
        await until(lambda: len(ac.calls) >= 3)
        await until(lambda: trigger_revision(mem, "p") == 0)
        assert ac.calls == ["s", "s", "t"]


async def test_a_write_planned_from_an_input_the_restore_took_back_is_no_transition() -> None:
    """p is in Error; its Package spec is made invalid (at R), so the daemon deletes p's state;
    etcd is restored to just before R as that deletion goes out, so it lands on the new
    history at revision R, where p's spec is still valid. The answer (a success at no revision
    above the event it was planned from) shows the history was replaced: the deletion is no
    transition, and once the relist shows p's spec, putting Error back is a correction, with
    no second trigger (before, a new entry into Error: the soak's seeds 1012021 and
    1064960)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced(mem, "c", target="s") as rt:
        container(mem, "c", "m", "dead")
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await until(lambda: trigger_revision(mem, "p") == 0)
        before = mem.current_revision
        mem.before_next_txn(
            lambda: mem.replace_history(StoreSnapshot(before, mem.compacted_revision))
        )
        mem.put_now(f"{LAYOUT.packages}p".encode(), b"[]")  # invalid: p's spec is gone
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 1  # put and removed before the restore, which kept both
    assert rt.actioncontroller.calls == ["s"]


async def test_a_key_found_older_than_the_deletion_the_index_saw_shows_a_restore() -> None:
    """Someone deletes p's state (at D); as the daemon's correction goes out, etcd is restored
    to just before D and the new history grows to D (another writer): the guard (p absent)
    fails on p's state as of before D, at no revision below what the daemon knew. A key the
    index knew absent at D cannot hold a value modified at or below D in one history: the
    answer shows the replacement, and the daemon relists instead of planning from what it
    knew. Before, the failed guard taught the index nothing (it keeps the newer revision) and
    the worker sent the same transaction again at once, in a loop that let no time pass (the
    simulation's swarm seed 3004827)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced(mem, target=None) as rt:
        key = f"{LAYOUT.package_states}p/state".encode()
        before = mem.current_revision
        failed = len([r for r in mem.txn_log if not r.succeeded])

        def restore_then_grow() -> None:
            mem.replace_history(StoreSnapshot(before, mem.compacted_revision))
            mem.put_now(b"/elsewhere/x", b"x")  # the new history reaches the deletion's revision

        mem.before_next_txn(restore_then_grow)
        mem.delete_now(key)
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "package", "p") == "Running")
        assert len([r for r in mem.txn_log if not r.succeeded]) - failed == 1


async def test_a_write_whose_guard_revision_a_restore_gave_another_value_does_not_land() -> None:
    """p's state is put again as it was (Running, at R) by someone else; then c dies and the
    daemon writes p's entry into Error guarded on R. As it goes out, etcd is restored to just
    before R and someone puts Paused there: p's state has mod revision R again, with another
    value. The write must not land recording a change from Running (etcd held Paused): the
    guard compares the value too, and the answer shows the history replaced (before, the
    record's `from` was a state etcd never held before it: the soak's swarm seed 2099848)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced(mem, "c", target=None) as rt:
        snapshot = mem.snapshot_now()
        key = f"{LAYOUT.package_states}p/state".encode()
        again = mem.put_now(key, b"Running")
        await until(lambda: rt.parts.index.written(WorkKey(Resource.PACKAGE, "p")).seen == again)

        def replaced_then_overwritten() -> None:
            mem.replace_history(snapshot)
            assert mem.put_now(key, b"Paused") == again

        mem.before_next_txn(replaced_then_overwritten)
        container(mem, "c", "m", "dead")
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") >= 1)
        await until(lambda: state(mem, "package", "p") == "Running")  # c runs on the new history
        writes = dict(state_revisions(mem, "package", "p"))
        records = history(mem, "package", "p")
    for _, record in records:
        assert writes[record.revision] == record.to_state, record
        held = [value for revision, value in sorted(writes.items()) if revision < record.revision]
        assert (held[-1] if held else None) == record.from_state, record
    assert disagreements(mem) == []


@pytest.mark.parametrize("shown_by", ["event", "listing"])
async def test_a_list_stored_at_the_revision_of_an_unechoed_write_shows_a_restore(
    shown_by: str,
) -> None:
    """The daemon deletes a stray state (package q has no spec) and etcd answers at W; the echo
    never comes, and etcd is restored to W - 1 at the same raft term. Before the watcher is
    back, a node's list stored through the service lands at W again, on the new history, so
    the watch, reconnecting, is shown nothing below what it saw: the only sign of the restore
    is the list's key modified at W, a revision our deletion had. Its event shows it (the
    simulation's swarm seed 4015143); so does a listing, when the watch was compacted past W
    meanwhile, which shows q's state modified below what the index knew (and ignored for
    that: the swarm seed 13043743). The daemon relists and deletes q's state again; before,
    q stayed Error for good, the index sure it had deleted it."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        rt.parts.watcher._backoff = Backoff(initial=5.0, cap=5.0)  # reconnects 2.5-5 s later
        key = f"{LAYOUT.package_states}q/state".encode()
        stray = mem.put_now(key, b"Error")
        rt.parts.controller.apply(LAYOUT.package_states, [Event(key, b"Error", stray)])
        await until(lambda: state(mem, "package", "q") is None)
        mem.replace_history(StoreSnapshot(stray, mem.compacted_revision), keep_term=True)
        assert state(mem, "package", "q") == "Error"
        await send_list(rt.parts.service, container_list("n", [("c9", "m9", "running", "0")]))
        assert mem.current_revision == stray + 1  # the revision the deletion was answered at
        if shown_by == "listing":
            mem.compact(mem.current_revision)
        await until(lambda: state(mem, "package", "q") is None)
        assert rt.sample("watch_restarts_total", reason="revision_backwards") == 1
    assert disagreements(mem) == []


@pytest.mark.parametrize("left", ["running", "spec gone"])
async def test_a_trigger_the_restore_put_back_makes_error_the_previous_state(left: str) -> None:
    """p enters Error (at E) and s is slow to answer, so the trigger stays; p then leaves Error
    (its container runs again: the daemon writes Running; or its spec is made invalid: the
    daemon deletes its state). etcd is restored to E (p in Error, its trigger back) and someone
    deletes p's state (or puts Degraded) before the daemon relists. The previous state it
    learnt on the replaced history says Running (or none), but the new history's trigger says
    p entered Error there and it was not handled: putting Error back is a correction, with no
    second trigger (before, a new entry into Error: the simulation's swarm seeds 6106668 and,
    with no previous state, 39 of the restore_then_tamper fault)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        slow, error_at = await _slow_error(rt, mem)
        key = f"{LAYOUT.package_states}p/state".encode()
        if left == "running":
            container(mem, "c", "m", "running")
            await until(lambda: state(mem, "package", "p") == "Running")
        else:
            mem.put_now(f"{LAYOUT.packages}p".encode(), b"[]")
            await until(lambda: state(mem, "package", "p") is None)
        mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
        if left == "running":
            mem.delete_now(key)
        else:
            mem.put_now(key, b"Degraded")
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since
        slow.set()
        await until(lambda: trigger_revision(mem, "p") == 0)


async def test_an_error_write_a_restore_took_back_is_a_new_entry_with_its_trigger() -> None:
    """c dies and the daemon writes p's entry into Error (at W), its echo lost; etcd is then
    restored to below W at the raft term it had: c still dead, p Running, no trigger. The
    relist shows p's state modified below W, so the new history never held the Error learnt
    there: putting p in Error is a new entry on the new history, with its trigger. Before, the
    previous state carried from the replaced history made it a correction with none, and the
    Reconcile was lost unless the trigger feed, not relisted yet, sent the old history's
    trigger that etcd no longer holds (the simulation's swarm seed 7064849)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        deliver(rt, mem, "c1", revision)
        await until(lambda: state(mem, "package", "p") == "Error")
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        assert state(mem, "package", "p") == "Running"
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
        puts = [r for _, r in mem._versions.get(trigger_key(LAYOUT, "p"), []) if r is not None]
        assert len(puts) == 1  # the new history's own entry into Error


async def test_an_error_write_on_a_key_the_restore_took_back_whole_is_a_new_entry() -> None:
    """As above, for a package whose state key the new history never had: q (model n, its
    container dead) is written into Error at W, its echo lost, and etcd is restored to before
    W. The listing, at a revision below W, does not hold q's state: the new history never held
    the Error learnt at W, so putting q in Error is a new entry there, with its trigger (not a
    correction of a state someone deleted)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = await _new_package_in_error_unechoed(rt, mem)
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        assert state(mem, "package", "q") is None
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "package", "q") == "Error")
        puts = [r for _, r in mem._versions.get(trigger_key(LAYOUT, "q"), []) if r is not None]
        assert len(puts) == 1  # the new history's own entry into Error
    assert disagreements(mem) == []


async def test_a_restored_trigger_is_not_dropped_before_the_index_has_the_new_history() -> None:
    """p enters Error (at E) and ActionController refuses, so its trigger stays; p then runs
    again. etcd is restored to E (p in Error, its trigger back) and someone deletes p's state
    at once; the watcher is slow to reconnect. The sender, which lists the trigger of the new
    history first, must not drop it (p's state is not Error) before the index has that
    history: once the watcher relists, the writer finds the trigger and putting Error back is
    a correction, with no second trigger (before, the trigger was dropped first: the
    simulation's swarm seed 71)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        error_at = await _refused_error_left(rt, mem)
        rt.parts.watcher._backoff = Backoff(initial=5.0, cap=5.0)  # reconnects 2.5-5 s later
        mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
        mem.delete_now(f"{LAYOUT.package_states}p/state".encode())
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
        assert rt.sample("corrections_total", resource="package") == 1
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since
        rt.actioncontroller.refusing = False
        await until(lambda: trigger_revision(mem, "p") == 0)


async def test_a_restored_trigger_the_sender_dropped_before_the_writer_planned_is_learnt() -> None:
    """As above, but the sender drops the restored trigger (p's state is not Error) before the
    controller plans p again (a daemon paused through the restore wakes with both to do, and
    the sender goes first): the writer can no longer find the trigger, so the sender tells it
    of the drop, and Error, entered at E on the new history, is p's previous state there.
    Putting Error back is a correction, with no second trigger (before, the carried Running
    stood and it was a new entry: the simulation's swarm seed 13099827)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        error_at = await _refused_error_left(rt, mem)
        queue = rt.parts.controller._queue
        add, late = queue.add, WorkKey(Resource.PACKAGE, "p")

        async def after_the_drop(key: WorkKey) -> None:
            await until(lambda: trigger_revision(mem, "p") == 0)
            add(key)

        def add_late(key: WorkKey) -> None:
            if key == late:
                asyncio.get_running_loop().create_task(after_the_drop(key))
            else:
                add(key)

        queue.add = add_late  # type: ignore[method-assign]
        mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
        mem.delete_now(f"{LAYOUT.package_states}p/state".encode())
        await until(lambda: state(mem, "package", "p") == "Error")
        assert rt.sample("corrections_total", resource="package") == 1
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since
        assert trigger_revision(mem, "p") == 0


async def test_an_agreement_found_after_an_input_the_restore_took_back_does_not_stand() -> None:
    """c1 dies and the deaf daemon writes p's entry into Error (at E, its trigger pending);
    someone puts p Running (at M), unheard. c1 then runs again (at A): the rules give Running,
    which etcd holds, so Running is p's previous state, found agreeing at M from inputs up to
    A. etcd is restored to M: c1 dead, p Running, the trigger of E back. The new history
    holds Running at M, but not the input at A the rules gave it from: the agreement is
    dropped, the trigger makes Error p's previous state, and putting Error back is a
    correction, with no second trigger (before, the agreement counted as learnt at M, the
    listing showed that very write, and it stood: the simulation's swarm seed 13037801)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        deliver(rt, mem, "c1", revision)
        await until(lambda: state(mem, "package", "p") == "Error")
        mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Running")
        snapshot = mem.snapshot_now()
        revision = container(mem, "c1", "m", "running")
        deliver(rt, mem, "c1", revision)
        await until(lambda: state(mem, "model", "m") == "Running")
        mem.replace_history(snapshot)
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        assert state(mem, "package", "p") == "Error"
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since


async def test_a_failed_guard_answered_from_a_restored_history_teaches_nothing() -> None:
    """p enters Error (at E, its trigger stays: s is slow to answer); c runs again, and the
    daemon writes p Running. Just before that write applies, etcd is restored to E and
    someone puts p Running (at E+1): the guard fails, and the answer, at a revision below the
    container event the write came from, shows the replacement. It shows Running, the value
    the write was putting, but from another history: it teaches nothing, and Error, carried,
    stays p's previous state, so putting Error back is a correction (before, Running at E+1
    was learnt as the daemon's own write, the relist showed that very write and kept it, and
    putting Error back was a new entry with a second trigger: the simulation's swarm seed
    13032263)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        slow, error_at = await _slow_error(rt, mem)
        mem.put_now(b"/elsewhere/x", b"x")  # the container event lands above E+1

        def restore_then_tamper() -> None:
            mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
            mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Running")

        mem.before_next_txn(restore_then_tamper)
        container(mem, "c", "m", "running")
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        assert state(mem, "package", "p") == "Error"
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since
        slow.set()
        await until(lambda: trigger_revision(mem, "p") == 0)


async def test_an_error_write_the_restore_took_back_is_a_new_entry_though_others_wrote_past_it() -> (
    None
):
    """As above (q written into Error at W, its echo lost, etcd restored to below W), but
    others write before the daemon relists: a container at W, then more. The listing, above
    W, does not hold q's state, which alone could be a deletion after our write; but it shows
    the container modified at W, where our transaction landed on the replaced history without
    writing it: the histories differ from W on, so the new one never held the Error learnt at
    W, and putting q in Error is a new entry, with its trigger (before, the carried Error
    stood: a correction, the Reconcile lost; the simulation's swarm seed 13071009)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced_then_deaf(mem) as rt:
        revision = await _new_package_in_error_unechoed(rt, mem)
        assert trigger_revision(mem, "q") == revision + 1
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        container(mem, "c3", "k", "running")  # at W, on the new history
        mem.put_now(b"/elsewhere/x", b"x")
        await _relisted_into_error_with_its_trigger(rt, mem, "q")


async def test_an_error_write_the_restore_took_back_is_new_though_its_state_was_deleted_past_it() -> (
    None
):
    """c1 dies and the deaf daemon writes m Failed and p's entry into Error (at W), its echo
    lost; etcd is restored to below W, and before the daemon relists someone deletes p's state
    (at W) and writes elsewhere. The listing, above W, does not hold p's state (a deletion
    after our write, or none), nor shows anything modified at W; but it shows m's state
    modified below W, which our transaction wrote at W: the histories differ from W on, and
    putting p in Error is a new entry, with its trigger (the simulation's swarm seed
    13071009, where someone's write at W also put the very value ours had there)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c1", "m", "dead")
        deliver(rt, mem, "c1", revision)
        await until(lambda: state(mem, "package", "p") == "Error")
        assert trigger_revision(mem, "p") == revision + 1
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        mem.delete_now(f"{LAYOUT.package_states}p/state".encode())  # at W
        mem.put_now(b"/elsewhere/x", b"x")
        await _relisted_into_error_with_its_trigger(rt, mem, "p")


async def test_a_write_of_ours_the_restored_history_holds_is_newer_than_its_older_trigger() -> None:
    """p enters Error (at E; s is slow to answer, so the trigger stays), runs again (the
    daemon writes Running at D) and c dies again: the daemon writes Error (at E2, the trigger
    record now E2's). etcd is restored to c's second death, below E2: p Running at D, the
    trigger of E back. The listing shows p at D, our very write of Running: the new history
    holds it, so it is p's previous state there, newer than the trigger of E, and putting
    Error in is a new entry, with its trigger (before, the carried Error of E2 was dropped, as
    p was shown modified below it, and the trigger of E made putting Error back a correction:
    a Reconcile lost, the simulation's swarm seed 14005423)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        slow, _ = await _slow_error(rt, mem)
        container(mem, "c", "m", "running")
        await until(lambda: state(mem, "package", "p") == "Running")
        died = container(mem, "c", "m", "dead")
        await until(lambda: trigger_revision(mem, "p") > died)
        mem.replace_history(StoreSnapshot(died, mem.compacted_revision))
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 2  # E's, restored, and the new history's own entry into Error
        assert rt.sample("corrections_total", resource="package") == 0
        slow.set()


async def test_a_trigger_delivered_across_a_restore_is_removed_once_the_writer_knows() -> None:
    """p enters Error (at E) and s is slow to answer; p runs again (the daemon writes
    Running). etcd is restored to E (p in Error, its trigger back) and someone deletes p's
    state; the watcher is slow to reconnect. s then answers: the sender, its call made before
    the restore, removes the restored trigger as delivered, but only once the watcher follows
    the new history, telling the writer first: Error, entered at E there, is p's previous
    state, and putting it back is a correction, with no second trigger (before, the removal
    came while the writer knew nothing of the restore, and the writer, finding no trigger
    after the relist, took it as a new entry: the simulation's swarm seed 16023248)."""
    mem = MemEtcd()
    async with synced(mem, "c", target="s") as rt:
        slow, error_at = await _slow_error(rt, mem)
        container(mem, "c", "m", "running")
        await until(lambda: state(mem, "package", "p") == "Running")
        rt.parts.watcher._backoff = Backoff(initial=5.0, cap=5.0)  # reconnects 2.5-5 s later
        mem.replace_history(StoreSnapshot(error_at, mem.compacted_revision))
        mem.delete_now(f"{LAYOUT.package_states}p/state".encode())
        slow.set()
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        assert state(mem, "package", "p") == "Error"
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        assert len(puts) == 1  # the restore's, none of the daemon's since
        await until(lambda: trigger_revision(mem, "p") == 0)


async def test_a_carried_state_of_a_key_the_index_saw_deleted_is_judged_by_the_relist() -> None:
    """As above, but someone deletes q's state after the daemon's Error write (at W), and the
    daemon hears it (the index no longer holds q's state) just before etcd is restored to
    below W. The listing shows no q state, nor reports its deletion (the index held none to
    diff): the first whole listing since the restore judges every carried key it did not show
    as absent there, so the Error learnt at W is dropped and putting q in Error is a new entry,
    with its trigger (before, the carried Error stood: a correction, the Reconcile lost; the
    simulation's swarm seed 12005081)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = await _new_package_in_error_unechoed(rt, mem)
        q_state = f"{LAYOUT.package_states}q/state".encode()
        deleted = mem.delete_now(q_state)
        rt.parts.controller.apply(LAYOUT.package_states, [Event(q_state, None, deleted)])
        mem.replace_history(StoreSnapshot(revision, mem.compacted_revision))
        await _relisted_into_error_with_its_trigger(rt, mem, "q")
    assert disagreements(mem) == []


async def test_a_trigger_older_than_the_daemons_own_deletion_does_not_make_error_previous() -> None:
    """p enters Error (at E) and s is slow to answer, so its trigger stays; p's spec is then
    made invalid and the daemon deletes p's state (at D). etcd is replaced by a copy at the
    same revisions (a member restored from the newest snapshot), so every key is carried,
    and grows past D before the daemon relists; then p's spec is made valid again. By the
    rules p left Error at D and enters it again: a new entry, with its own trigger. The
    trigger of E, still pending, is older than the
    deletion the daemon learnt at D (which the relist let stand: p's state absent above D),
    so it does not make Error p's previous state (before, the writer's trigger look-up
    trusted it, and the entry got no trigger of its own: the simulation's swarm seed
    13071818)."""
    mem = MemEtcd()
    mem.restart()  # it has run: the restored cluster's raft term is below the one seen
    async with synced(mem, "c", target="s") as rt:
        slow, _ = await _slow_error(rt, mem)
        spec = mem.range_now(f"{LAYOUT.packages}p".encode()).records[0].value
        mem.put_now(f"{LAYOUT.packages}p".encode(), b"[]")  # invalid: p's spec is gone
        await until(lambda: state(mem, "package", "p") is None)
        mem.replace_history(mem.snapshot_now())
        mem.put_now(b"/elsewhere/x", b"x")  # the relist comes above D: p absent there
        await until(lambda: rt.sample("watch_restarts_total", reason="revision_backwards") >= 1)
        mem.put_now(f"{LAYOUT.packages}p".encode(), spec)
        await until(lambda: state(mem, "package", "p") == "Error")
        puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
        slow.set()
        assert len(puts) == 2  # E's, and the new entry's
