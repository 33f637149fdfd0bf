"""Transition history written with the states, on the in-memory etcd and virtual time."""

from __future__ import annotations

import pytest

from statemanager.app.config import HistorySettings
from statemanager.core.history import Transition, encode, history_key, history_prefix
from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import Fence
from statemanager.runtime.history import NANOS, HistoryHeads, HistoryPruner
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.records import LaterFormats

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    Runtime,
    container,
    history,
    package,
    state,
    state_revisions,
    until,
)

pytestmark = pytest.mark.looptime


async def test_each_package_transition_is_recorded_with_its_state_write() -> None:
    """Running → Degraded → Error → Running: exactly those records, in generation order, each
    committed at its state write's revision, with the rule and the model change behind it."""
    mem = MemEtcd()
    package(mem, "p", ["m1", "m2"])
    container(mem, "c1", "m1", "running")
    container(mem, "c2", "m2", "running")
    async with Runtime(mem):
        for cid, status, expected in [
            (None, None, "Running"),
            ("c1", "dead", "Degraded"),
            ("c2", "dead", "Error"),
            ("c1", "running", None),
            ("c2", "running", "Running"),
        ]:
            if cid is not None and status is not None:
                container(mem, cid, "m1" if cid == "c1" else "m2", status)
            if expected is not None:
                await until(lambda e=expected: state(mem, "package", "p") == e)  # type: ignore[misc]
    records = history(mem, "package", "p")
    assert [(t.from_state, t.to_state) for _, t in records] == [
        (None, "Running"),
        ("Running", "Degraded"),
        ("Degraded", "Error"),
        ("Error", "Running"),
    ]
    assert [g for g, _ in records] == [1, 2, 3, 4]
    writes = state_revisions(mem, "package", "p")
    assert [t.revision for _, t in records] == [rev for rev, _ in writes]
    assert [t.rule for _, t in records] == ["P6", "P3", "P2", "P6"]
    assert all(t.caused_by and t.node == "node-a" for _, t in records)
    models = {t.transition_id for _, t in history(mem, "model", "m1") + history(mem, "model", "m2")}
    assert {t.caused_by for _, t in records} <= models


async def test_ten_thousand_transitions_leave_the_last_keep() -> None:
    """A package flipped Running ↔ Paused 10,000 times keeps exactly its last `keep` records,
    the newest matching the state in etcd."""
    mem = MemEtcd()
    keep = 100
    package(mem, "p", ["m"])
    container(mem, "c", "m", "running")
    async with Runtime(mem, history=HistorySettings(keep=keep, max_age_seconds=0)):
        await until(lambda: state(mem, "package", "p") == "Running")
        for i in range(1, 10_000):
            status, expected = ("paused", "Paused") if i % 2 else ("running", "Running")
            container(mem, "c", "m", status)
            await until(lambda e=expected: state(mem, "package", "p") == e)  # type: ignore[misc]
    records = history(mem, "package", "p")
    assert [g for g, _ in records] == list(range(10_000 - keep + 1, 10_001))
    assert records[-1][1].to_state == state(mem, "package", "p") == "Paused"
    assert len(history(mem, "model", "m")) == keep


async def test_a_foreign_key_under_the_history_prefix_is_reported_and_skipped() -> None:
    """Keys someone else put under a resource's history (sorting above its records) are bad
    input: counted once each, left alone, and the records go on from the right generation."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c", "m", "running")
    prefix = history_prefix(LAYOUT)
    mem.put_now(f"{prefix}package/p/000000000001/x".encode(), b"junk")
    mem.put_now(f"{prefix}package/p/zzz".encode(), b"{}")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        container(mem, "c", "m", "dead")
        await until(lambda: state(mem, "package", "p") == "Error")
        assert rt.sample("invalid_inputs_total", kind="history_key") == 2
    foreign = [f"{prefix}package/p/000000000001/x", f"{prefix}package/p/zzz"]
    for key in foreign:  # left as they were
        assert mem.range_now(key.encode()).records
        mem.delete_now(key.encode())
    assert [g for g, _ in history(mem, "package", "p")] == [1, 2]


async def test_the_pruner_removes_records_past_the_age_but_each_newest() -> None:
    """Records older than the maximum age go, but a resource's newest stays unless it
    records the deletion; a foreign key is reported and left; a deposed pruner deletes
    nothing."""
    mem = MemEtcd()
    now = 10**18
    old, young = now - 200 * NANOS, now - 10 * NANOS

    def record(resource: Resource, name: str, generation: int, ts: int, to: str | None) -> None:
        t = Transition(f"t{generation}", resource, name, None, to, None, None, ts, 0, 0, None)
        key = history_key(LAYOUT, WorkKey(resource, name), generation)
        mem.put_now(key.encode(), encode(t))

    record(Resource.PACKAGE, "kept", 1, old, "Running")
    record(Resource.PACKAGE, "kept", 2, old, "Error")  # its newest: stays though old
    record(Resource.PACKAGE, "young", 1, old, "Running")
    record(Resource.PACKAGE, "young", 2, young, "Error")
    record(Resource.MODEL, "gone", 1, old, "Running")
    record(Resource.MODEL, "gone", 2, old, None)  # deleted long ago: all of it goes
    foreign = f"{history_prefix(LAYOUT)}model/gone/zzz".encode()
    mem.put_now(foreign, b"junk")
    leader = f"{LAYOUT.own}leader/0001".encode()
    fence = Fence(leader, mem.put_now(leader, b"x"))
    metrics = Metrics()
    heads = HistoryHeads(mem, LAYOUT, metrics)
    pruner = HistoryPruner(
        store=mem,
        layout=LAYOUT,
        heads=heads,
        later_formats=LaterFormats(metrics),
        max_age=100.0,
        interval=3600.0,
        wall_clock=lambda: now,
    )
    assert await pruner.prune(fence) == 4
    left = [r.key.decode() for r in mem.range_now(b"\x00", b"\x00").records]
    prefix = history_prefix(LAYOUT)
    assert sorted(k for k in left if k.startswith(prefix)) == [
        f"{prefix}model/gone/zzz",
        f"{prefix}package/kept/000000000002",
        f"{prefix}package/young/000000000002",
    ]
    assert (
        metrics.registry.get_sample_value(
            "statemanager_invalid_inputs_total", {"kind": "history_key"}
        )
        == 1
    )
    record(Resource.PACKAGE, "kept", 3, now, "Running")  # kept's old newest is prunable now
    mem.delete_now(leader)  # deposed: the fence fails, nothing is deleted
    assert await pruner.prune(fence) == 0
    kept = history_key(LAYOUT, WorkKey(Resource.PACKAGE, "kept"), 2).encode()
    assert mem.range_now(kept).records
