"""A write whose every answer was lost, on the in-memory etcd and virtual time."""

from __future__ import annotations

import pytest

from statemanager.adapters.etcd import Event
from statemanager.core.triggers import trigger_key

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, container, package, state, until

pytestmark = pytest.mark.looptime


async def test_an_error_write_landed_unheard_then_overwritten_is_put_back_as_a_correction() -> None:
    """A package's Error (with its trigger) lands, but etcd's answer is lost and so is the
    watch echo; someone else sets the package to Running before the retry, whose guard then
    fails. The keys cannot show the write landed; its trigger record, naming this write's
    transition, can: Error is put back as a correction, and no second trigger is recorded."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        mem.silence_watches()
        revision = container(mem, "c1", "m", "dead")
        key = f"{LAYOUT.containers}c1".encode()
        mem.lose_next_txn_response()
        mem.before_next_txn(lambda: None)  # the first attempt lands as sent
        mem.before_next_txn(
            lambda: mem.put_now(f"{LAYOUT.package_states}p/state".encode(), b"Running")
        )
        value = mem.range_now(key).records[0].value
        rt.parts.controller.apply(LAYOUT.containers, [Event(key, value, revision)])
        await until(lambda: rt.sample("corrections_total", resource="package") == 1)
        await until(lambda: state(mem, "package", "p") == "Error")
    puts = [r for _, r in mem._versions[trigger_key(LAYOUT, "p")] if r is not None]
    assert len(puts) == 1
