"""Records of every format in etcd, as the reconcile sender meets them (docs/contract.md,
Records): a format-1 trigger of the first releases is delivered to its scenario and removed;
a trigger or dead letter of a later format is left as it is, reported once and counted."""

from __future__ import annotations

import asyncio
import json

import pytest
from structlog.testing import capture_logs

from statemanager.core.triggers import dead_letter_key, trigger_prefix

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, container, package, scenario, state, until

pytestmark = pytest.mark.looptime

TRIGGERS = trigger_prefix(LAYOUT)


def _in_error(mem: MemEtcd, name: str) -> None:
    """Package `name` (model `{name}m`, one dead container), its Error already written, as a
    daemon stopped after the package entered Error leaves it."""
    package(mem, name, [f"{name}m"])
    container(mem, f"{name}c", f"{name}m", "dead")
    mem.put_now(f"{LAYOUT.model_states}{name}m/state".encode(), b"Failed")
    mem.put_now(f"{LAYOUT.package_states}{name}/state".encode(), b"Error")


def _keys(mem: MemEtcd, prefix: str) -> dict[bytes, bytes]:
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return {r.key: r.value for r in mem.range_now(prefix.encode(), end.encode()).records}


async def test_format_1_triggers_are_delivered_to_their_scenario_and_removed() -> None:
    """The first releases wrote one trigger per scenario, `{own}triggers/{package}/{scenario}`
    = `{"package", "scenario", "transition_id"}`. Each is sent once, to the scenario it names
    (not to one that targets the package only now), and removed; none is called unreadable."""
    mem = MemEtcd()
    _in_error(mem, "up")
    for name in ("up_recovery", "up_restart", "up_later"):
        scenario(mem, name, "up")
    for name in ("up_recovery", "up_restart"):
        body = {"package": "up", "scenario": name, "transition_id": "6aa9-1"}  # 6aa985a's order
        mem.put_now(f"{TRIGGERS}up/{name}".encode(), json.dumps(body).encode())
    with capture_logs() as logged:
        async with Runtime(mem) as rt:
            await until(lambda: rt.sample("reconcile_triggers_total", outcome="delivered") == 2)
            assert sorted(rt.actioncontroller.calls) == ["up_recovery", "up_restart"]
            assert _keys(mem, TRIGGERS) == {}
            assert state(mem, "package", "up") == "Error"
    events = [e["event"] for e in logged]
    assert "reconcile_trigger_unreadable" not in events
    delivered = {e["trigger"] for e in logged if e["event"] == "reconcile_delivered"}
    assert len(delivered) == 2 and all(t.startswith("up/up_re") for t in delivered)


async def test_records_of_a_later_format_are_left_reported_once_and_counted() -> None:
    """A newer daemon's trigger (format 3) and dead letter (format 2): never sent, removed or
    overwritten, through a relist too; each reported once with its key and format."""
    mem = MemEtcd()
    _in_error(mem, "q")
    scenario(mem, "q_fix", "q")
    later_trigger = b'{"format": 3, "package": "q", "transition_id": "x", "scenarios": ["q_fix"]}'
    later_letter = b'{"format": 2, "package": "r", "whatever": true}'
    mem.put_now(f"{TRIGGERS}q".encode(), later_trigger)
    mem.put_now(dead_letter_key(LAYOUT, "r"), later_letter)
    with capture_logs() as logged:
        async with Runtime(mem) as rt:
            await until(lambda: rt.sample("records_unknown_format_total", record="trigger") == 1)
            await until(
                lambda: rt.sample("records_unknown_format_total", record="dead_letter") == 1
            )
            mem.break_watches()  # the sender lists both prefixes again
            await until(lambda: any(e["event"] == "reconcile_watch_broken" for e in logged))
            await asyncio.sleep(10)  # deliberately: ten virtual seconds for a wrong delivery
            assert rt.actioncontroller.calls == []
            assert rt.sample("records_unknown_format_total", record="trigger") == 1
            assert rt.sample("reconcile_dead_letters") == 1
    assert _keys(mem, TRIGGERS) == {f"{TRIGGERS}q".encode(): later_trigger}
    assert mem.range_now(dead_letter_key(LAYOUT, "r")).records[0].value == later_letter
    reports = [
        (e["record"], e["key"], e["format"])
        for e in logged
        if e["event"] == "record_unknown_format"
    ]
    assert sorted(reports) == [
        ("dead_letter", dead_letter_key(LAYOUT, "r").decode(), 2),
        ("trigger", f"{TRIGGERS}q", 3),
    ]
    assert "reconcile_trigger_unreadable" not in [e["event"] for e in logged]


async def test_a_later_dead_letter_of_the_package_is_not_overwritten() -> None:
    """A trigger refused until given up on would move to its package's dead letter; a newer
    daemon's dead letter holds that key, so the trigger stays pending instead, and the dead
    letter is kept. Once that one is gone, the trigger moves."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    scenario(mem, "s", "p")
    container(mem, "c1", "m", "running")
    later = b'{"format": 2, "package": "p"}'
    mem.put_now(dead_letter_key(LAYOUT, "p"), later)
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        rt.actioncontroller.refusing = True
        with capture_logs() as logged:
            container(mem, "c1", "m", "dead")
            await until(lambda: any(e["event"] == "reconcile_dead_letter_taken" for e in logged))
        assert mem.range_now(dead_letter_key(LAYOUT, "p")).records[0].value == later
        assert f"{TRIGGERS}p".encode() in _keys(mem, TRIGGERS)
        mem.delete_now(dead_letter_key(LAYOUT, "p"))
        await until(lambda: rt.sample("reconcile_triggers_total", outcome="dead_lettered") == 1)
        letter = json.loads(mem.range_now(dead_letter_key(LAYOUT, "p")).records[0].value)
        assert letter["format"] == 1 and letter["scenario"] == "s"
        assert _keys(mem, TRIGGERS) == {}
