"""Pullpiri's StateManager service in process, on the in-memory etcd and virtual time: a node's
whole container list, of any size, stored by any daemon, flows through the watch into states;
a list written half-way is never seen."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from statemanager.core.index import Index
from statemanager.core.ingest import Ingest
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import TxnResult
from statemanager.proto import statemanager_pb2 as pb

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, MAX_VALUE_BYTES, Runtime, container, package, state, until
from support.servicer import Aborted, container_list, send_list

pytestmark = pytest.mark.looptime


def web_list(node: str, **statuses: str) -> pb.ContainerList:
    """`node`'s list of payment.web containers: id=status each."""
    return container_list(
        node,
        [
            (cid, "payment.web", status, "1" if status == "exited" else "0")
            for cid, status in statuses.items()
        ],
    )


def generations(mem: MemEtcd, node: str) -> set[bytes]:
    """The generations of `node`'s list present in etcd."""
    prefix = f"{LAYOUT.node_lists}{node}/gen/".encode()
    records = mem.range_now(prefix, prefix[:-1] + b"0").records
    return {r.key[len(prefix) :].split(b"/")[0] for r in records}


def current_generation(mem: MemEtcd, node: str) -> str:
    pointer = mem.range_now(f"{LAYOUT.node_lists}{node}/list".encode()).records[0]
    generation: str = json.loads(pointer.value)["generation"]
    return generation


def fresh_view(mem: MemEtcd, layout: KeyLayout = LAYOUT) -> tuple[Ingest, Index]:
    """A new daemon's view of the store: every watched prefix listed and applied."""
    index = Index()
    ingest = Ingest(layout, index, MAX_VALUE_BYTES)
    listing = {
        prefix: [
            (r.key, r.value, r.mod_revision)
            for r in mem.range_now(prefix.encode(), prefix.encode()[:-1] + b"0").records
        ]
        for prefix in layout.watched().values()
    }
    ingest.resync_all(listing, mem.current_revision)
    return ingest, index


async def test_container_lists_drive_states_through_the_watch() -> None:
    """A node's list is stored where the watch reads it: the model fails with a dead container;
    the next list without that container removes it, and the model runs again; only the
    current generation is left in etcd."""
    mem = MemEtcd()
    package(mem, "payment", ["payment.web"])
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        svc = rt.parts.service
        await send_list(svc, web_list("node-a", web="running", db="exited"))
        await until(lambda: state(mem, "package", "payment") == "Error")
        assert state(mem, "model", "payment.web") == "Failed"
        await send_list(svc, web_list("node-a", web="running"))
        await until(lambda: state(mem, "package", "payment") == "Running")
        assert generations(mem, "node-a") == {current_generation(mem, "node-a").encode()}
        assert rt.parts.index.container("db") is None


async def test_a_follower_stores_lists_and_the_leader_derives_from_them() -> None:
    """Storing a node's report needs no leadership: a follower stores it, answers OK, and the
    leader writes the states it leads to."""
    mem = MemEtcd()
    package(mem, "payment", ["payment.web"])
    async with Runtime(mem, "node-a") as a, Runtime(mem, "node-b") as b:
        await until(lambda: a.parts.election.fence() is not None and b.parts.election.decided)
        assert b.parts.election.fence() is None
        answer = await send_list(b.parts.service, web_list("node-b", web="exited"))
        assert "stored 1 containers of node node-b" in answer.resp
        await until(lambda: state(mem, "package", "payment") == "Error")


async def test_ten_thousand_containers_in_one_list_are_stored_whole() -> None:
    """A list over one transaction's limits is written in several and made current by one:
    10,000 containers, then a resend that changes 3,000, removes 3,000 and adds 3,000."""
    mem = MemEtcd()
    package(mem, "big", ["big.a", "big.b"])
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        first = [(f"c{i}", "big.a" if i % 2 else "big.b", "running", "0") for i in range(10_000)]
        before = len(mem.txn_log)
        await send_list(rt.parts.service, container_list("edge", first))
        assert len(mem.txn_log) - before > 2  # chunks in several transactions, then the flip
        await until(lambda: state(mem, "package", "big") == "Running")
        assert len(rt.parts.index.containers_on("edge")) == 10_000
        again = [  # big.a's changed containers die; big.b's change only their exit code
            (cid, m, "exited", "1") if m == "big.a" else (cid, m, "running", "2")
            for cid, m, _, _ in first[3_000:6_000]
        ]
        again += first[6_000:]
        again += [(f"n{i}", "big.a", "running", "0") for i in range(3_000)]
        await send_list(rt.parts.service, container_list("edge", again))
        await until(lambda: state(mem, "package", "big") == "Degraded")
        assert state(mem, "model", "big.a") == "Failed"
        assert len(rt.parts.index.containers_on("edge")) == 10_000
        assert rt.parts.index.container("c0") is None
        assert generations(mem, "edge") == {current_generation(mem, "edge").encode()}


async def test_a_list_cut_off_half_way_leaves_the_previous_one_current() -> None:
    """etcd going away between the chunks and the flip: the node's previous list stays what the
    rules see, for the running daemon and for one that lists etcd afresh; the node's next list
    removes the chunks left behind."""
    mem = MemEtcd()
    package(mem, "big", ["big.a"])
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        old = [(f"c{i}", "big.a", "running", "0") for i in range(10_000)]
        await send_list(rt.parts.service, container_list("edge", old))
        await until(lambda: state(mem, "model", "big.a") == "Running")
        kept = current_generation(mem, "edge")
        dead = [(cid, "big.a", "dead", "0") for cid, *_ in old]
        txn = mem.txn

        async def cut_at_the_flip(guards: Any, ops: Any, fence: Any = None) -> TxnResult:
            if any(op.key.endswith(b"/list") for op in ops):
                mem.outage()  # the chunks' transactions went through; the flip does not
            return await txn(guards, ops, fence)

        mem.txn = cut_at_the_flip  # type: ignore[method-assign]
        with pytest.raises(Aborted) as refused:
            await send_list(rt.parts.service, container_list("edge", dead))
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        mem.txn = txn  # type: ignore[method-assign]
        mem.restore()
        assert len(generations(mem, "edge")) == 2  # the abandoned one is still there
        assert current_generation(mem, "edge") == kept
        view, index = fresh_view(mem)
        assert view.node_lists.nodes() == {"edge": 10_000}
        for seen in (rt.parts.index, index):
            verdict = seen.model_verdict("big.a")
            assert verdict is not None and verdict.state == "Running"
        await send_list(rt.parts.service, container_list("edge", old[:10]))
        assert generations(mem, "edge") == {current_generation(mem, "edge").encode()}


async def test_lists_an_earlier_version_stored_are_superseded_then_removed() -> None:
    """Format 1 stored one container key per container (with the reporting node) and an ids
    record: the node's first list of this version hides them at once and deletes them."""
    mem = MemEtcd()
    package(mem, "payment", ["payment.web"])
    legacy = {
        "id": "db",
        "names": ["payment.web_db"],
        "state": {"Status": "dead"},
        "annotation": {"io.pullpiri.annotations.model": "payment.web"},
        "node": "node-a",
    }
    mem.put_now(f"{LAYOUT.containers}db".encode(), json.dumps(legacy).encode())
    mem.put_now(f"{LAYOUT.node_lists}node-a/containers".encode(), b"db")
    container(mem, "other", "payment.web", "running")  # a key no node reported: stays
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "model", "payment.web") == "Failed")
        await send_list(rt.parts.service, web_list("node-a", web="running"))
        await until(lambda: state(mem, "model", "payment.web") == "Running")
        assert mem.range_now(f"{LAYOUT.containers}db".encode()).count == 0
        assert mem.range_now(f"{LAYOUT.node_lists}node-a/containers".encode()).count == 0
        assert mem.range_now(f"{LAYOUT.containers}other".encode()).count == 1


async def test_the_etcd_outage_answer_says_the_previous_list_stays() -> None:
    """etcd unreachable: the node hears UNAVAILABLE with etcd's words, nothing is stored."""
    mem = MemEtcd()
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        mem.outage()
        with pytest.raises(Aborted) as refused:
            await send_list(rt.parts.service, web_list("node-a", web="running"))
        mem.restore()
        assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        assert "previous list stays current" in refused.value.details
        assert mem.range_now(LAYOUT.node_lists.encode(), b"\x00").count == 0


async def test_concurrent_lists_of_one_node_leave_one_whole_list() -> None:
    """Two large lists of one node at once: each is stored whole in turn (the one beaten at
    the pointer writes again), the chunks of the beaten attempt are removed, and etcd ends
    holding exactly one of the two."""
    mem = MemEtcd()
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        lists = [
            container_list("edge", [(f"{tag}{i}", "m", "running", "0") for i in range(10_000)])
            for tag in ("x", "y")
        ]
        before = len(mem.txn_log)
        answers = await asyncio.gather(*(send_list(rt.parts.service, r) for r in lists))
        assert all(a.resp.startswith("stored 10000 containers") for a in answers)
        assert any(not r.succeeded for r in mem.txn_log[before:])  # one was beaten
        assert generations(mem, "edge") == {current_generation(mem, "edge").encode()}
        await until(lambda: len(rt.parts.index.containers_on("edge")) == 10_000)
        shown = rt.parts.index.containers_on("edge")
        assert shown in ({f"x{i}" for i in range(10_000)}, {f"y{i}" for i in range(10_000)})


async def test_a_newer_daemons_list_is_left_as_it_is() -> None:
    """A node's pointer in a later format is not replaced (FAILED_PRECONDITION, nothing
    written) and is reported as a newer daemon's record, not as bad input."""
    mem = MemEtcd()
    pointer = f"{LAYOUT.node_lists}edge/list".encode()
    newer = b'{"format": 3, "generation": "g", "parts": []}'
    mem.put_now(pointer, newer)
    async with Runtime(mem) as rt:
        await until(lambda: rt.parts.election.fence() is not None)
        with pytest.raises(Aborted) as refused:
            await send_list(rt.parts.service, web_list("edge", web="running"))
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "newer statemanager (format 3)" in refused.value.details
        assert mem.range_now(pointer).records[0].value == newer
        assert rt.sample("records_unknown_format_total", record="node_list") == 1
        assert rt.sample("invalid_inputs_total", kind="wrong_type") == 0
