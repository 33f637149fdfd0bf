"""One daemon's runtime (watcher, election, worker) in the test process, on `MemEtcd`, and the
helpers in-process tests use with it: a fleet writer, state reads, `evaluate`'s verdict on the
store, and the fencing invariant over every committed transaction.

Meant for `looptime`'s virtual clock (`@pytest.mark.looptime`): backoffs, lease TTLs and
silence limits then pass instantly, and `until` waits on a condition with a virtual deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from types import TracebackType

from statemanager.adapters.etcd import prefix_end
from statemanager.app import daemon
from statemanager.app.config import (
    ActionControllerSettings,
    EtcdSettings,
    GrpcSettings,
    HaSettings,
    HistorySettings,
    InputSettings,
    LogSettings,
    MetricsSettings,
    PrefixSettings,
    Settings,
)
from statemanager.app.daemon import Parts, Store
from statemanager.core import report
from statemanager.core.history import Transition, decode, history_range, parse_history_key
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.ports import Event, ReconcileOutcome
from statemanager.core.triggers import trigger_key
from statemanager.runtime.health import Health
from statemanager.runtime.metrics import Metrics
from statemanager.runtime.reconcile import ReconcileClient

from support import documents
from support.memetcd import MemEtcd

LAYOUT = KeyLayout()
MAX_VALUE_BYTES = 262_144


class FakeActionController:
    """ActionController's Reconcile as the sender sees it: records every call; answers status
    0 unless `refusing` (a non-zero status)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.refusing = False

    async def reconcile(self, scenario: str) -> ReconcileOutcome:
        self.calls.append(scenario)
        if self.refusing:
            return ReconcileOutcome(False, True, "rejected", "status 1")
        return ReconcileOutcome(True, False, "ok", "")


def daemon_settings(
    node: str = "node-a",
    ttl: int = 6,
    layout: KeyLayout = LAYOUT,
    silence_limit: float = 3.0,
    history: HistorySettings | None = None,
) -> Settings:
    """The daemon's settings as in-process tests run it: a short silence limit and reconcile
    backoff, a resync that never comes due in a test."""
    return Settings(
        etcd=EtcdSettings(watch_silence_seconds=silence_limit, resync_interval_seconds=3600.0),
        prefixes=PrefixSettings(**dataclasses.asdict(layout)),
        actioncontroller=ActionControllerSettings(
            max_backoff_seconds=2.0, max_refusals=20, max_trigger_age_seconds=3600.0
        ),
        grpc=GrpcSettings(),
        metrics=MetricsSettings(),
        ha=HaSettings(node_name=node, lease_ttl_seconds=ttl),
        log=LogSettings(),
        inputs=InputSettings(max_value_bytes=MAX_VALUE_BYTES),
        history=history or HistorySettings(),
    )


def wire(
    store: Store,
    settings: Settings,
    *,
    metrics: Metrics,
    actioncontroller: ReconcileClient | None = None,
    clock: Callable[[], float] | None = None,
) -> Parts:
    """The daemon's runtime, built as `statemanager run` builds it (daemon.py, `build`), on
    `store` and the loop's clock (virtual under looptime); call it in a running loop."""
    return daemon.build(
        settings,
        store=store,
        actioncontroller=actioncontroller or FakeActionController(),
        metrics=metrics,
        health=Health(stuck_after=10.0),
        clock=clock or asyncio.get_running_loop().time,
    )


class Runtime:
    """One daemon's runtime (watcher, election, worker, reconcile sender) in this process, on
    `mem`, wired and started as `statemanager run` does. Leaving the `async with` (or
    `crash()`) stops it without resigning, as a killed process would."""

    def __init__(
        self,
        mem: MemEtcd,
        node: str = "node-a",
        ttl: int = 6,
        *,
        actioncontroller: ReconcileClient | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] | None = None,
        history: HistorySettings | None = None,
    ) -> None:
        self.mem = mem
        self.metrics = metrics or Metrics()
        self.actioncontroller = FakeActionController()
        self.parts = wire(
            mem,
            daemon_settings(node, ttl, history=history),
            actioncontroller=actioncontroller or self.actioncontroller,
            metrics=self.metrics,
            clock=clock,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listings(self) -> int:
        return self.parts.listings.count

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(f"statemanager_{name}", labels)
        return value or 0.0

    async def __aenter__(self) -> Runtime:
        self._tasks = daemon.start(self.parts)
        return self

    async def crash(self) -> None:
        """Stop every task at once, resigning nothing: the lease lingers until its TTL."""
        ended = [t for t in self._tasks if t.done()]
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        # Nothing but the stop may end a task of the daemon.
        assert not ended, [(t.get_name(), t.exception()) for t in ended if not t.cancelled()]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.crash()


async def until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait until `condition()` holds; fail after `timeout` virtual seconds, or after as many
    real seconds: a task that never waits on a timer (a busy loop) stops virtual time, and the
    test would otherwise hang instead of failing."""
    loop = asyncio.get_running_loop()
    waiter = asyncio.current_task()
    assert waiter is not None
    stalled = threading.Event()

    def stall() -> None:  # in the watchdog's thread
        stalled.set()
        loop.call_soon_threadsafe(waiter.cancel)

    watchdog = threading.Timer(timeout, stall)
    watchdog.start()
    deadline = loop.time() + timeout
    try:
        while not condition():
            assert loop.time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        if stalled.is_set():
            raise AssertionError("virtual time stalled: is a task busy-looping?") from None
        raise
    finally:
        watchdog.cancel()


def container(mem: MemEtcd, cid: str, model: str, status: str, exit_code: int = 0) -> int:
    doc = documents.container(cid, {"Status": status, "ExitCode": str(exit_code)}, model)
    return mem.put_now(f"{LAYOUT.containers}{cid}".encode(), doc.encode())


def package(mem: MemEtcd, name: str, models: list[str]) -> int:
    return mem.put_now(
        f"{LAYOUT.packages}{name}".encode(), documents.package(name, models).encode()
    )


def scenario(mem: MemEtcd, name: str, target: str) -> int:
    doc = documents.scenario(name, target)
    return mem.put_now(f"{LAYOUT.scenarios}{name}".encode(), doc.encode())


def trigger_revision(mem: MemEtcd, package: str) -> int:
    """The mod revision of `package`'s pending reconcile trigger; 0 when there is none."""
    records = mem.range_now(trigger_key(LAYOUT, package)).records
    return records[0].mod_revision if records else 0


def history(mem: MemEtcd, resource: str, name: str) -> list[tuple[int, Transition]]:
    """`name`'s history records in etcd now, oldest first: (generation, transition)."""
    key = WorkKey(Resource(resource), name)
    start, end = history_range(LAYOUT, key)
    found = []
    for r in mem.range_now(start, end).records:
        record = decode(LAYOUT, r.key, r.value, r.mod_revision)
        assert isinstance(record, Transition), record
        found.append((parse_history_key(LAYOUT, r.key.decode())[1], record))
    return found


def state_revisions(mem: MemEtcd, resource: str, name: str) -> list[tuple[int, str | None]]:
    """Every write of `name`'s state key still in the store's history: (revision, value)."""
    key = LAYOUT.state_key(WorkKey(Resource(resource), name)).encode()
    return [
        (rev, r.value.decode() if r is not None else None) for rev, r in mem._versions.get(key, [])
    ]


def state(mem: MemEtcd, resource: str, name: str) -> str | None:
    prefix = LAYOUT.model_states if resource == "model" else LAYOUT.package_states
    records = mem.range_now(f"{prefix}{name}/state".encode()).records
    return records[0].value.decode() if records else None


def disagreements(mem: MemEtcd) -> list[str]:
    """What `statemanager evaluate` would report for the store as it is now."""
    prefixes = list(LAYOUT.watched().values())
    listing = {
        p: [r.kv() for r in mem.range_now(p.encode(), prefix_end(p.encode())).records]
        for p in prefixes
    }
    snapshot = report.build(LAYOUT, mem.current_revision, listing, MAX_VALUE_BYTES)
    return report.render_differences(report.differences(snapshot))


def assert_fenced(mem: MemEtcd) -> None:
    """Every committed write carried a fence that held: the leader key existed with the
    fence's create revision just before the write's revision."""
    for record in mem.txn_log:
        if not record.succeeded or record.fence is None:
            continue
        before = mem.range_now(record.fence.key, revision=record.revision - 1).records
        assert before and before[0].create_revision == record.fence.create_revision, record


@contextlib.asynccontextmanager
async def synced(mem: MemEtcd, cid: str = "c", target: str | None = "s") -> AsyncIterator[Runtime]:
    """A daemon on `mem`, which holds package p of model m with container `cid` running and
    scenario `target` targeting p (None: no scenario), yielded once synced (p Running)."""
    package(mem, "p", ["m"])
    if target is not None:
        scenario(mem, target, "p")
    container(mem, cid, "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "package", "p") == "Running")
        yield rt


@contextlib.asynccontextmanager
async def synced_then_deaf(mem: MemEtcd) -> AsyncIterator[Runtime]:
    """`synced` with container c1 and no scenario, then its watches silenced, so the test
    hands it events itself (`deliver`) and decides which of them it hears."""
    async with synced(mem, "c1", target=None) as rt:
        mem.silence_watches()
        yield rt


def deliver(rt: Runtime, mem: MemEtcd, cid: str, revision: int) -> None:
    """Hand the daemon container `cid`'s event at `revision`, as its watch would have."""
    key = f"{LAYOUT.containers}{cid}".encode()
    value = mem.range_now(key, revision=revision).records[0].value
    rt.parts.controller.apply(LAYOUT.containers, [Event(key, value, revision)])
