"""The relist after compaction knows the state keys the daemon wrote, not only those it saw."""

from __future__ import annotations

import pytest

from statemanager.adapters.etcd import Event

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, container, disagreements, package, state, until

pytestmark = pytest.mark.looptime


async def test_relist_puts_back_a_written_key_whose_echo_was_lost() -> None:
    """The daemon creates a state key whose watch echo never arrives (the stream went silent);
    someone deletes the key and history is compacted. The relist that the compacted resume
    forces finds the key gone, though the watch never showed it there, and writes it again."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        mem.silence_watches()
        revision = container(mem, "c2", "solo", "running")  # a model with no state key yet
        key = f"{LAYOUT.containers}c2".encode()
        value = mem.range_now(key).records[0].value
        # Delivered as the watch would have, just before the stream went quiet for good.
        rt.parts.controller.apply(LAYOUT.containers, [Event(key, value, revision)])
        await until(lambda: state(mem, "model", "solo") == "Running")
        mem.delete_now(f"{LAYOUT.model_states}solo/state".encode())
        mem.compact(mem.current_revision)
        mem.break_watches()
        await until(lambda: rt.sample("watch_restarts_total", reason="compacted") == 1)
        await until(lambda: state(mem, "model", "solo") == "Running")
    assert disagreements(mem) == []
