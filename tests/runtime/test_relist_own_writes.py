"""The relist after compaction knows the state keys the daemon wrote, not only those it saw."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from statemanager.runtime.controller import Controller
from statemanager.runtime.watcher import NEVER

from support.memetcd import MemEtcd
from support.runtime import (
    LAYOUT,
    Runtime,
    container,
    deliver,
    disagreements,
    package,
    state,
    synced_then_deaf,
    until,
)

pytestmark = pytest.mark.looptime


async def test_relist_puts_back_a_written_key_whose_echo_was_lost() -> None:
    """The daemon creates a state key whose watch echo never arrives (the stream went silent);
    someone deletes the key and history is compacted. The relist that the compacted resume
    forces finds the key gone, though the watch never showed it there, and writes it again."""
    mem = MemEtcd()
    async with synced_then_deaf(mem) as rt:
        revision = container(mem, "c2", "solo", "running")  # a model with no state key yet
        # Delivered as the watch would have, just before the stream went quiet for good.
        deliver(rt, mem, "c2", revision)
        await until(lambda: state(mem, "model", "solo") == "Running")
        mem.delete_now(f"{LAYOUT.model_states}solo/state".encode())
        mem.compact(mem.current_revision)
        mem.break_watches()
        await until(lambda: rt.sample("watch_restarts_total", reason="compacted") == 1)
        await until(lambda: state(mem, "model", "solo") == "Running")
    assert disagreements(mem) == []


async def test_listings_hold_off_full_collections_and_restore_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a listing is loaded (at start, and the relist after a compaction) the cycle
    collector makes no full collection but keeps its young ones (they free the cyclic garbage
    made meanwhile); its thresholds are back afterwards, so a long run keeps the usual
    schedule."""
    seen: list[tuple[bool, tuple[int, int, int]]] = []
    original = Controller.load

    async def load(self: Controller, *args: Any, **kwargs: Any) -> int:
        seen.append((gc.isenabled(), gc.get_threshold()))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Controller, "load", load)
    young, middle, old = gc.get_threshold()
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        mem.silence_watches()
        container(mem, "c1", "m", "exited", 1)
        mem.compact(mem.current_revision)
        mem.break_watches()
        await until(lambda: state(mem, "package", "p") == "Error")
        assert rt.listings == 2
        assert gc.get_threshold() == (young, middle, old)
    assert seen == [(True, (young, middle, NEVER))] * 2
