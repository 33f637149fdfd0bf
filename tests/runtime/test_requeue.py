"""Per-key requeue in process, on the in-memory etcd and virtual time: a key whose write etcd
refuses comes back after its own growing delay, other keys are written meanwhile without
waiting, and a success forgets the key's failures (client-go's per-item rate limiter)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from statemanager.core.errors import EtcdError
from statemanager.core.ports import Event

from support.memetcd import MemEtcd
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

INITIAL = 0.5  # the work queue's first retry delay (runtime/workqueue.py)


def record_txn_times(mem: MemEtcd) -> list[float]:
    """The virtual time of every guarded transaction the daemon sends, refused or not."""
    times: list[float] = []
    send = mem.txn
    loop = asyncio.get_running_loop()

    async def txn(*args: Any, **kwargs: Any) -> Any:
        times.append(loop.time())
        return await send(*args, **kwargs)

    mem.txn = txn  # type: ignore[method-assign]
    return times


def refuse(mem: MemEtcd, times: int) -> None:
    for _ in range(times):
        mem.refuse_next_txn(EtcdError("etcd txn failed: PERMISSION_DENIED: permission denied"))


async def test_a_refused_key_backs_off_alone_and_is_forgotten_on_success() -> None:
    mem = MemEtcd()
    package(mem, "pa", ["ma"])
    package(mem, "pb", ["mb"])
    container(mem, "ca", "ma", "running")
    container(mem, "cb", "mb", "running")
    async with Runtime(mem):
        await until(lambda: state(mem, "package", "pa") == state(mem, "package", "pb") == "Running")
        sent = record_txn_times(mem)
        loop = asyncio.get_running_loop()

        # Three refusals in a row: each retry of pa's change waits longer than the one before
        # (full jitter over a doubling ceiling: [0.25, 0.5], [0.5, 1], [1, 2] seconds).
        refuse(mem, 3)
        container(mem, "ca", "ma", "paused")
        await until(lambda: state(mem, "package", "pa") == "Paused")
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert len(gaps) == 3
        assert INITIAL / 2 <= gaps[0] <= gaps[1] <= gaps[2] <= 4 * INITIAL

        # pa is refused again (its first failure since the success: a short delay, not 8x);
        # pb changes meanwhile and is written at once, not after pa's delay.
        sent.clear()
        refuse(mem, 1)
        container(mem, "ca", "ma", "running")
        await until(lambda: len(sent) == 1)
        container(mem, "cb", "mb", "paused")
        changed = loop.time()
        await until(lambda: state(mem, "package", "pb") == "Paused")
        assert state(mem, "package", "pa") == "Paused"  # pa still waits for its retry
        assert loop.time() - changed < INITIAL / 2
        await until(lambda: state(mem, "package", "pa") == "Running")
        assert sent[-1] - sent[0] <= INITIAL


async def test_a_deferred_cascade_comes_back_with_its_packages() -> None:
    """c1 dies and someone writes its model m's state Failed at once (a writer ahead of the
    daemon): planning m finds it agreeing and pulls in p (Error). etcd refuses that write: m
    comes back later, and planning it again must pull p in again. Before, m had learnt Failed
    as its previous derived state when found agreeing, so planning it again pulled in nothing:
    p stayed Running until something else made it dirty (the simulation's swarm seed
    9091882)."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        refuse(mem, 1)
        revision = container(mem, "c1", "m", "dead")
        model_state = f"{LAYOUT.model_states}m/state".encode()
        ahead = mem.put_now(model_state, b"Failed")
        deliver(rt, mem, "c1", revision)
        rt.parts.controller.apply(LAYOUT.model_states, [Event(model_state, b"Failed", ahead)])
        await until(lambda: state(mem, "package", "p") == "Error")
