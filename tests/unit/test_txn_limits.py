"""Transactions the writer packs stay within etcd's limits, measured on the encoded request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from statemanager.adapters.etcd import txn_request
from statemanager.core.index import Index
from statemanager.core.inputs import ContainerInfo
from statemanager.core.keys import MAX_NAME_LENGTH, KeyLayout, Resource, WorkKey
from statemanager.core.planner import plan
from statemanager.core.ports import Delete, Fence, Guard, Put, TxnLimits, TxnResult
from statemanager.core.states import ContainerClass, ContainerStatus
from statemanager.runtime.history import Head
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.writer import StateWriter

FENCE = Fence(b"/statemanager/leader/0123456789abcdef", 7)


class RecordingClient:
    """Accepts every transaction and keeps the encoded request."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def txn(
        self, guards: Sequence[Guard], ops: Sequence[Put | Delete], fence: Fence | None = None
    ) -> TxnResult:
        self.requests.append(txn_request(guards, ops, fence))
        return TxnResult(True, len(self.requests), {})


def _fleet(packages: int, held: str | None) -> Index:
    """Packages with the longest names, each listing one model whose container is dead, each
    with scenarios: every package enters Error and records a trigger. Each state key holds
    `held` (None: absent; present, each guard compares its value too)."""
    index = Index()
    dead = ContainerInfo((), ContainerStatus.DEAD, ContainerClass.DEAD, None)
    for i in range(packages):
        name = f"{i:05}".ljust(MAX_NAME_LENGTH, "p")
        model = f"{i:05}".ljust(MAX_NAME_LENGTH, "m")
        index.put_package_spec(name, (model,))
        index.put_container(f"c{i}", ContainerInfo((), dead.status, dead.cls, model))
        index.put_scenario(f"s{i}", name)
        if held is not None:
            index.observe_written(WorkKey(Resource.PACKAGE, name), held, 1)
            index.observe_written(WorkKey(Resource.MODEL, model), held, 1)
    return index


class DeepHistories:
    """Every resource has `newest` history records already."""

    def __init__(self, newest: int) -> None:
        self._newest = newest

    async def heads(self, keys: Sequence[WorkKey]) -> dict[WorkKey, Head]:
        # Put at a revision of many digits: the anchor's guard is at its longest.
        return dict.fromkeys(keys, Head(self._newest, 10**15 if self._newest else 0))

    async def empty(self, resource: Resource) -> bool:
        return self._newest == 0


@pytest.mark.parametrize("held", [None, "Running"], ids=["absent", "held"])
@pytest.mark.parametrize("history", [None, 0, 500], ids=["no-history", "first", "retiring"])
# max_ops 9: the least a package and its model fit in together, with a trigger, records and
# retention deletes (7 operations), the fence's compare and the history anchor's.
@pytest.mark.parametrize(
    "limits", [TxnLimits(), TxnLimits(max_bytes=16 * 1024), TxnLimits(max_ops=9)]
)
async def test_packed_transactions_fit_the_limits(
    limits: TxnLimits, history: int | None, held: str | None
) -> None:
    """Every transaction the writer sends is within max_ops (compares, each branch) and its
    encoded size within max_bytes minus the headroom, history records (and their retention
    deletes) and the guards' value compares included, with the longest node name; every
    change is written once, and no model is split from its package by the trigger records."""
    index = _fleet(300, held)
    client = RecordingClient()
    writer = StateWriter(
        client,
        KeyLayout(),
        index,
        Metrics(),
        limits=limits,
        history=DeepHistories(history) if history is not None else None,
        keep=100,
        node="n" * MAX_NAME_LENGTH,
    )
    groups = plan(index, sorted(index.all_keys())).groups
    batches = writer.batches(groups, FENCE)
    for batch in batches:
        assert await writer.commit(batch, {}, FENCE) is not None
    for request in client.requests:
        assert len(request.SerializeToString()) <= limits.byte_budget
        for branch in (request.compare, request.success, request.failure):
            assert len(branch) <= limits.max_ops
    written = [c.key for batch in batches for c in batch]
    assert sorted(written) == sorted(index.all_keys())
    assert len(written) == 600
    triggers = sum(
        op.HasField("request_put") and op.request_put.key.startswith(b"/statemanager/triggers/")
        for request in client.requests
        for op in request.success
    )
    assert triggers == 300
    for batch in batches:
        names = {c.key.name for c in batch}
        assert all(next(iter(index.models_of(n))) in names for n in names if n.endswith("p"))


def test_chunks_cut_unguarded_ops_at_the_op_and_byte_limits() -> None:
    """Ops keep their order; each chunk stays within max_ops and the byte budget, counting the
    guard's compare when one is given; an empty list makes no chunk."""
    limits = TxnLimits(max_ops=4, max_bytes=TxnLimits.HEADROOM_BYTES + 200)
    ops: list[Put | Delete] = [Put(b"k%d" % i, b"v" * 10) for i in range(6)]
    ops.append(Delete(b"gone"))
    assert list(limits.chunks([], None)) == []
    assert list(limits.chunks(ops, None)) == [ops[:4], ops[4:]]
    guarded = list(limits.chunks(ops, b"guard"))
    assert [op for chunk in guarded for op in chunk] == ops
    assert all(len(chunk) + 1 <= limits.max_ops for chunk in guarded)
    assert [len(c) for c in guarded] == [3, 3, 1]
    each = limits.put_bytes(b"k0", b"v" * 10)  # 36 bytes: five fit 200, six do not
    wide = TxnLimits(max_ops=128, max_bytes=TxnLimits.HEADROOM_BYTES + 5 * each)
    assert [len(c) for c in wide.chunks(ops[:6], None)] == [5, 1]
    # The fence's compare (75 bytes) leaves room for two puts a chunk.
    assert wide.guarded_write_bytes(b"g", None) == 75
    assert [len(c) for c in wide.chunks(ops[:6], b"g")] == [2, 2, 2]


def test_chunks_fill_each_transaction_to_the_exact_limit() -> None:
    """A chunk takes ops up to exactly its budget, the second as much as the first: a delete
    costs its key and the overhead (it has no value), and a guard's compare takes one of
    max_ops when the bytes leave room for more."""
    deletes: list[Put | Delete] = [Delete(b"gone%d" % i) for i in range(6)]
    each = TxnLimits().put_bytes(b"gone0", b"")
    exact = TxnLimits(max_bytes=TxnLimits.HEADROOM_BYTES + 3 * each)
    assert [len(c) for c in exact.chunks(deletes, None)] == [3, 3]
    assert [len(c) for c in TxnLimits(max_ops=4).chunks(deletes, b"guard")] == [3, 3]


def test_byte_costs_count_keys_values_and_overheads() -> None:
    limits = TxnLimits()
    assert limits.put_bytes(b"abc", b"12345") == 3 + 5 + TxnLimits.OP_OVERHEAD_BYTES
    assert limits.guarded_write_bytes(b"abc", b"12345") == 3 * (3 + 24) + 5
    assert limits.guarded_write_bytes(b"abc", None) == 3 * (3 + 24)
    assert limits.byte_budget == limits.max_bytes - TxnLimits.HEADROOM_BYTES
