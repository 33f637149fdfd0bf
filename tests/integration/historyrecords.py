"""History records written by the tests themselves, as the daemon's writer writes them
(core/history.py's key and encoding), so the queries and the stream can be driven record by
record, for resources the daemon does not manage (no spec: its writer never records them)."""

from __future__ import annotations

import time

from statemanager.core.history import Transition, encode, history_key
from statemanager.core.keys import Resource, WorkKey

from conftest import Etcd


async def record(
    etcd: Etcd,
    resource: Resource,
    name: str,
    generation: int,
    to_state: str | None,
    from_state: str | None = None,
    timestamp_ns: int | None = None,
    reason_bytes: int = 0,
    correction: bool = False,
) -> int:
    """Write `name`'s `generation`-th transition (its reason padded to `reason_bytes`; a
    correction's record with `correction`); the revision it was committed at."""
    t = Transition(
        transition_id=f"t-{name}-{generation}",
        resource=resource,
        name=name,
        from_state=from_state,
        to_state=to_state,
        rule="test",
        reason=f"written by the test, generation {generation}".ljust(reason_bytes, "."),
        timestamp_ns=timestamp_ns or time.time_ns(),
        cause_revision=0,
        revision=0,
        caused_by=None,
        correction=correction,
    )
    key = history_key(etcd.layout, WorkKey(resource, name), generation)
    return await etcd.put(key, encode(t))
