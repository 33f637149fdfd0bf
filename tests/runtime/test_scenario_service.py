"""A scenario change losing the race to another daemon's (docs/contract.md, Scenario states):
the service judges again from what etcd holds after the failed guard, never overwrites it."""

from __future__ import annotations

import time

from statemanager.adapters.stateservice import StateService
from statemanager.core.index import Index
from statemanager.core.keys import Kind
from statemanager.proto import statemanager_pb2 as pb
from statemanager.runtime.metrics import Metrics

from support import documents
from support.memetcd import MemEtcd
from support.runtime import LAYOUT, MAX_VALUE_BYTES

STATE_KEY = LAYOUT.key_of(Kind.SCENARIO_STATE, "s").encode()


class _Listed:
    revision = 1


def service(mem: MemEtcd) -> StateService:
    """The service alone on `mem`, with no election: scenario changes need no leadership."""
    mem.put_now(f"{LAYOUT.scenarios}s".encode(), documents.scenario("s", "shop").encode())
    return StateService(
        index=Index(),
        layout=LAYOUT,
        store=mem,
        progress=_Listed(),
        on_confirmed=lambda key: None,
        max_value_bytes=MAX_VALUE_BYTES,
        on_list=lambda result: None,
        metrics=Metrics(),
        offloader=None,
    )


async def send(svc: StateService, current: str, target: str) -> pb.StateChangeResponse:
    request = pb.StateChange(
        resource_type=pb.ResourceType.SCENARIO,
        resource_name="s",
        current_state=current,
        target_state=target,
        transition_id="t",
        timestamp_ns=time.time_ns(),
        source="filtergateway",
    )
    return await svc.SendStateChange(request, None)  # type: ignore[arg-type]


def stored(mem: MemEtcd) -> bytes | None:
    records = mem.range_now(STATE_KEY).records
    return records[0].kv().value if records else None


async def test_a_change_that_lost_is_judged_from_the_winners_state() -> None:
    mem = MemEtcd()
    svc = service(mem)
    mem.before_next_txn(lambda: mem.put_now(STATE_KEY, b"Waiting"))
    answer = await send(svc, "idle", "waiting")
    assert answer.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "the scenario is Waiting (stored)" in answer.error_details
    assert stored(mem) == b"Waiting"


async def test_a_change_still_valid_after_losing_is_stored() -> None:
    mem = MemEtcd()
    mem.put_now(STATE_KEY, b"Satisfied")
    svc = service(mem)
    mem.before_next_txn(lambda: mem.put_now(STATE_KEY, b"SCENARIO_STATE_SATISFIED"))
    answer = await send(svc, "satisfied", "denied")
    assert answer.error_code == pb.ErrorCode.SUCCESS, answer.error_details
    assert stored(mem) == b"Denied"


async def test_a_spec_deleted_meanwhile_is_not_found() -> None:
    mem = MemEtcd()
    svc = service(mem)
    mem.before_next_txn(lambda: mem.delete_now(f"{LAYOUT.scenarios}s".encode()))
    answer = await send(svc, "", "idle")
    assert answer.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND
    assert stored(mem) is None


async def test_losing_every_attempt_stores_nothing() -> None:
    mem = MemEtcd()
    svc = service(mem)
    for _ in range(3):
        mem.before_next_txn(lambda: mem.put_now(STATE_KEY, b"Idle"))
    answer = await send(svc, "idle", "waiting")
    assert answer.error_code == pb.ErrorCode.RESOURCE_UNAVAILABLE
    assert "changed under each of 3 attempts" in answer.error_details
    assert stored(mem) == b"Idle"


async def test_a_change_whose_answer_was_lost_is_answered_as_stored() -> None:
    """etcd applied the put but its answer was lost: the key read back holds the change, so
    the caller (who never retries) hears SUCCESS, and it was stored once."""
    mem = MemEtcd()
    svc = service(mem)
    mem.lose_next_txn_response()
    answer = await send(svc, "idle", "waiting")
    assert answer.error_code == pb.ErrorCode.SUCCESS, answer.error_details
    assert stored(mem) == b"Waiting"
    assert sum(STATE_KEY in r.written for r in mem.txn_log) == 1


async def test_a_lost_answer_that_did_not_land_is_refused() -> None:
    """Unreachable etcd: the change is not stored and the caller is told so."""
    mem = MemEtcd()
    svc = service(mem)
    mem.outage()
    answer = await send(svc, "idle", "waiting")
    assert answer.error_code == pb.ErrorCode.RESOURCE_UNAVAILABLE
    mem.restore()
    assert stored(mem) is None


async def test_a_change_judged_before_a_restore_is_judged_again_from_the_new_value() -> None:
    """s is Idle (at R) when the change from idle is judged; as it is stored, etcd is restored
    to before R and someone stores Satisfied there, at revision R again. The guard compares
    the value too: the change is judged again from Satisfied, not stored over it (before, a
    step from a state etcd did not hold)."""
    mem = MemEtcd()
    svc = service(mem)
    snapshot = mem.snapshot_now()
    idle = mem.put_now(STATE_KEY, b"Idle")

    def replaced_then_stored() -> None:
        mem.replace_history(snapshot)
        assert mem.put_now(STATE_KEY, b"Satisfied") == idle

    mem.before_next_txn(replaced_then_stored)
    answer = await send(svc, "idle", "waiting")
    assert answer.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION, answer.error_details
    assert stored(mem) == b"Satisfied"
