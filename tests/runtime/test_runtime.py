"""The runtime in process on the in-memory etcd, on virtual time: guard conflicts, a fence lost
in the middle of a batch, compaction while the watch was silent, broken streams, a commit whose
answer was lost, a refused write, a crashed leader replaced within the lease TTL."""

from __future__ import annotations

import asyncio
import random

import pytest

from statemanager.adapters.etcd import prefix_end

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    Runtime,
    assert_fenced,
    container,
    disagreements,
    package,
    scenario,
    state,
    synced,
    until,
)

pytestmark = pytest.mark.looptime


async def test_guard_conflict_replans_on_the_current_value() -> None:
    """A state key another writer changes between plan and commit fails the guard; the daemon
    re-plans from the value etcd returned and writes the rules' state over it, never blindly."""
    mem = MemEtcd()
    async with synced(mem, "c1", target=None) as rt:
        model_key = f"{LAYOUT.model_states}m/state".encode()
        mem.before_next_txn(lambda: mem.put_now(model_key, b"Succeeded"))
        container(mem, "c1", "m", "exited", exit_code=137)
        await until(lambda: state(mem, "package", "p") == "Error")
        assert state(mem, "model", "m") == "Failed"
        assert rt.sample("etcd_write_conflicts_total") == 1
        # Running (the daemon), Succeeded (the other writer), Failed (the daemon, re-planned).
        assert mem.range_now(model_key).records[0].version == 3
        conflicted = [r for r in mem.txn_log if not r.succeeded]
        assert len(conflicted) == 1 and not conflicted[0].fenced
    assert disagreements(mem) == []


async def test_fence_lost_mid_batch_writes_nothing_more() -> None:
    """A first sync too large for one transaction loses its leader key after the first
    transaction: the next one is fenced off and writes nothing; the daemon campaigns again and
    the new leadership writes the rest, each state exactly once."""
    mem = MemEtcd()
    models = [f"m{i:03}" for i in range(200)]
    for i, model in enumerate(models):
        container(mem, f"c{i:03}", model, "running")

    def revoke_leader() -> None:
        leader = mem.txn_log[0].fence
        assert leader is not None
        mem.revoke_now(mem.lease_of(leader.key))

    mem.before_next_txn(lambda: None)  # the first transaction commits
    mem.before_next_txn(revoke_leader)  # the second finds the leader key gone
    async with Runtime(mem):
        await until(lambda: all(state(mem, "model", m) == "Running" for m in models))
    first, fenced, *rest = mem.txn_log
    assert first.succeeded and 0 < len(first.written) < len(models)
    assert fenced.fenced and fenced.written == ()
    assert rest and all(r.fence != first.fence for r in rest)
    assert_fenced(mem)
    for model in models:  # written once: nothing was lost or written twice
        assert mem.range_now(f"{LAYOUT.model_states}{model}/state".encode()).records[0].version == 1


async def test_compaction_while_silent_relists_and_finds_deletions() -> None:
    """Deletions made while the watch was silent, then compacted away, are found by the relist
    that the compacted resume forces: the model recovers and the deleted package loses its
    state key."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    package(mem, "gone", ["m"])
    container(mem, "ok", "m", "running")
    container(mem, "bad", "m", "exited", exit_code=1)
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "gone") == "Error")
        mem.silence_watches()
        mem.delete_now(f"{LAYOUT.containers}bad".encode())
        mem.delete_now(f"{LAYOUT.packages}gone".encode())
        mem.compact(mem.current_revision)
        await until(lambda: state(mem, "package", "gone") is None)
        assert state(mem, "model", "m") == "Running"
        assert state(mem, "package", "p") == "Running"
        assert rt.sample("watch_restarts_total", reason="silent") == 1
        assert rt.sample("watch_restarts_total", reason="compacted") == 1
        assert rt.listings == 2
    assert disagreements(mem) == []


async def test_watch_resumes_after_broken_streams_without_loss() -> None:
    """Container churn with the stream broken every few writes (more writes landing while it is
    down) and etcd unreachable now and then: every change arrives by the watch alone (no
    relist), the index holds each container's last status, and the states are the rules'."""
    rng = random.Random(7)
    mem = MemEtcd()
    models = [f"m{i}" for i in range(5)]
    for j in range(0, 5, 2):
        package(mem, f"p{j}", models[j : j + 2])
    cids = [f"c{i:02}" for i in range(20)]
    last: dict[str, str] = {}

    def churn() -> None:
        cid = rng.choice(cids)
        status, code = rng.choice([("running", 0), ("exited", 0), ("exited", 1), ("paused", 0)])
        container(mem, cid, models[cids.index(cid) % 5], status, exit_code=code)
        last[cid] = status

    for _ in range(40):
        churn()
    async with Runtime(mem) as rt:

        def restarts() -> float:
            return rt.sample("watch_restarts_total", reason="unavailable")

        await until(lambda: state(mem, "package", "p0") is not None)
        for step in range(60):
            churn()
            before = restarts()
            if step % 15 == 7:
                mem.outage()
                # Down: the watcher keeps retrying, each retry counted, with backoff.
                await until(lambda: restarts() > before + 1)  # noqa: B023 - awaited here
                mem.restore()
            elif step % 4 == 0:
                mem.break_watches()
            else:
                continue
            churn()  # written while no stream is open: the resume must replay them
            churn()
            await until(lambda: restarts() > before and mem.watching(LAYOUT.containers))  # noqa: B023
        await until(lambda: disagreements(mem) == [] and rt.parts.queue.idle())
        index = rt.parts.index
        seen = {cid: info.status.value for m in models for cid, info in index.containers_of(m)}
        assert seen == last
        assert restarts() >= 15 + 4
        assert rt.sample("watch_restarts_total", reason="compacted") == 0
        assert rt.listings == 1
        assert rt.sample("resync_drift_total") == 0
    assert_fenced(mem)


async def test_commit_with_lost_answer_converges_and_reconciles() -> None:
    """The transaction that writes Error commits but its answer is lost: the retry finds its
    own write (guard conflict, nothing to do), and the trigger recorded with it is delivered
    anyway, then removed. Someone then overwrites the state: putting Error back is a
    correction, not a second entry into Error (the simulation found a second Reconcile)."""
    mem = MemEtcd()
    async with synced(mem) as rt:
        mem.lose_next_txn_response()
        container(mem, "c", "m", "dead")
        await until(lambda: rt.actioncontroller.calls == ["s"])
        triggers = LAYOUT.own.encode() + b"triggers/"
        await until(lambda: mem.range_now(triggers, prefix_end(triggers)).count == 0)
        assert state(mem, "package", "p") == "Error"
        assert rt.sample("etcd_write_retries_total") >= 1
        assert [r.lost for r in mem.txn_log].count(True) == 1
        mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Running")
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await asyncio.sleep(5.0)  # time for a wrongly recorded trigger to be delivered
        assert rt.actioncontroller.calls == ["s"]
        assert state(mem, "package", "p") == "Error"
    assert disagreements(mem) == []
    assert_fenced(mem)


async def test_refused_write_is_retried_not_dropped() -> None:
    """etcd refusing a write (space quota alarm) delays it; the state is written once etcd
    takes writes again, and nothing ends the daemon."""
    mem = MemEtcd()
    async with synced(mem, target=None):
        for _ in range(3):
            mem.refuse_next_txn()
        container(mem, "c", "m", "paused")
        await until(lambda: state(mem, "package", "p") == "Paused")
    assert disagreements(mem) == []


async def test_crashed_leader_is_replaced_within_the_lease_ttl() -> None:
    """Two daemons: the leader dies without resigning; the follower, whose index is warm,
    takes over once the lease lapses and writes the next change, within TTL + a second."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c", "m", "running")
    ttl = 6
    async with Runtime(mem, "node-a", ttl) as a, Runtime(mem, "node-b", ttl) as b:
        await until(lambda: a.parts.election.fence() is not None and b.parts.election.decided)
        await until(lambda: state(mem, "package", "p") == "Running")
        await a.crash()
        loop = asyncio.get_running_loop()
        crashed_at = loop.time()
        container(mem, "c", "m", "exited")
        await until(
            lambda: (
                state(mem, "package", "p") == "Running" and state(mem, "model", "m") == "Succeeded"
            )
        )
        assert loop.time() - crashed_at <= ttl + 1.0
        assert b.parts.election.fence() is not None
    assert_fenced(mem)


async def test_correction_after_an_outage_shorter_than_the_lease_sends_nothing() -> None:
    """The leader loses etcd for less than its lease and leads again (evaluating everything);
    someone then overwrites its Error package state: putting Error back is a correction, and
    ActionController hears of the failure once (the simulation found the second call)."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    scenario(mem, "s", "p")
    container(mem, "c", "m", "dead")
    async with Runtime(mem) as rt:
        await until(lambda: rt.actioncontroller.calls == ["s"])
        fences = {r.fence for r in mem.txn_log if r.fence is not None}
        mem.outage()
        await asyncio.sleep(2.0)
        mem.restore()
        await until(lambda: rt.parts.election.fence() is not None)
        mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Degraded")
        await until(lambda: state(mem, "package", "p") == "Error")
        await asyncio.sleep(5.0)  # time for a wrongly recorded trigger to be delivered
        assert rt.actioncontroller.calls == ["s"]
        assert {r.fence for r in mem.txn_log if r.fence is not None} == fences
        assert rt.sample("corrections_total", resource="package") == 1
    assert_fenced(mem)


async def test_a_write_landed_unanswered_then_overwritten_is_put_back_as_a_correction() -> None:
    """The Error write lands but every answer to it (and to its retries) is lost; someone then
    overwrites the state before the daemon plans again. The watch showed the write landing,
    so putting Error back is a correction: one trigger, one Reconcile (before, a second
    entry into Error: the simulation's seed 49567 and ten more in 100,000)."""
    mem = MemEtcd()
    async with synced(mem) as rt:
        mem.lose_next_txn_response(5)  # the write and every retry of it
        container(mem, "c", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error")
        mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"bogus")
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        assert state(mem, "package", "p") == "Error"
        await until(lambda: rt.actioncontroller.calls == ["s"])
        await asyncio.sleep(5.0)  # deliberately: time for a second trigger to be delivered
        assert rt.actioncontroller.calls == ["s"]
        assert rt.sample("reconcile_triggers_total", outcome="recorded") == 1
    assert_fenced(mem)
