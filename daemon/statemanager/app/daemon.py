"""`statemanager run`: builds the runtime (`build`, the one place that wires it), starts it
(`start`) and supervises it until a stop signal.

Every long-running task is named and watched: one that ends unexpectedly stops the daemon
loudly (exit 1) rather than leaving a half-working process behind (as kopf does).

Signals: SIGTERM and SIGINT stop it (exit 0); SIGHUP reloads the configuration (what can
change while running: the settings config.py declares reloadable); every other signal whose
default action would end the process silently stops it instead, logged, with leadership
resigned and exit 128 + the signal number, so systemd restarts it. SIGABRT and the fatal
signals are left to faulthandler, which prints every thread's stack.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Protocol

import grpc
import structlog

from statemanager import __version__
from statemanager.adapters import stateservice
from statemanager.adapters.actioncontroller import ActionControllerClient
from statemanager.adapters.etcd import EtcdClient
from statemanager.adapters.queryservice import QueryService, QueryStore
from statemanager.adapters.stateservice import Offloader, ServiceStore, StateService
from statemanager.app import config, logs, web
from statemanager.app.config import Settings
from statemanager.app.statuspage import StatusPage
from statemanager.app.systemd import Notifier
from statemanager.core.errors import ConfigError
from statemanager.core.index import Index
from statemanager.core.ingest import Ingest
from statemanager.core.keys import WorkKey
from statemanager.core.ports import Fence, Newest
from statemanager.runtime.controller import Controller
from statemanager.runtime.election import Election, ElectionClient
from statemanager.runtime.feed import TransitionFeed
from statemanager.runtime.health import Health
from statemanager.runtime.history import HistoryHeads, HistoryPruner, PrunerStore
from statemanager.runtime.metrics import Metrics, QueueMetrics
from statemanager.runtime.outage import Outage
from statemanager.runtime.reconcile import ReconcileClient, ReconcileSender, TriggerStore
from statemanager.runtime.records import LaterFormats
from statemanager.runtime.refusals import RefusalReport
from statemanager.runtime.triggerfeed import TriggerFeed
from statemanager.runtime.watcher import WatchClient, Watcher
from statemanager.runtime.workqueue import WorkQueue
from statemanager.runtime.writer import StateWriter

log = structlog.get_logger("statemanager.daemon")

# The loop proves it turns this often: /healthz fails after four missed beats (10 s), and
# systemd's watchdog (WatchdogSec=30s in the unit) wants a ping within half its limit.
HEARTBEAT_SECONDS = 2.5
PRUNE_INTERVAL_SECONDS = 3600.0  # history older than history.max_age_seconds goes hourly
# Signals that would end the process without a word (their default action is to terminate):
# handled so that none does. SIGPIPE is ignored by Python already.
_STOP_REQUESTS = (signal.SIGTERM, signal.SIGINT)
_UNEXPECTED = tuple(
    getattr(signal, name)
    for name in ("SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO",
                 "SIGPWR", "SIGXCPU", "SIGXFSZ", "SIGSTKFLT", "SIGTRAP", "SIGSYS")
    if hasattr(signal, name)
)  # fmt: skip


class Store(
    WatchClient,
    ElectionClient,
    TriggerStore,
    ServiceStore,
    QueryStore,
    Newest,
    PrunerStore,
    Protocol,
):
    """Everything the runtime asks of etcd: `EtcdClient` in production, an in-memory etcd in
    the tests."""


class Listings:
    """The watcher's full listings (its `on_listed`), counted; the first one is waited on: the
    reconcile sender needs the index it fills, and the first sync follows it."""

    def __init__(self) -> None:
        self.count = 0
        self.first_revision = 0
        self._first = asyncio.Event()

    def listed(self, revision: int) -> None:
        """Count a full listing at `revision`; the first one wakes `first`."""
        self.count += 1
        if not self._first.is_set():
            self.first_revision = revision
            self._first.set()

    async def first(self) -> int:
        """The revision of the first listing, once it is in the index."""
        await self._first.wait()
        return self.first_revision


@dataclass(frozen=True, slots=True)
class Parts:
    """The wired runtime `build` returns: `start` runs its loops, `run` serves and stops it."""

    index: Index
    queue: WorkQueue[WorkKey]
    controller: Controller
    election: Election
    watcher: Watcher
    sender: ReconcileSender
    service: StateService
    status: StatusPage
    listings: Listings
    feed: TransitionFeed
    queries: QueryService
    pruner: HistoryPruner | None  # None: no history, or no maximum age


def build(
    settings: Settings,
    *,
    store: Store,
    actioncontroller: ReconcileClient,
    metrics: Metrics,
    health: Health,
    clock: Callable[[], float] = time.monotonic,
    offloader: Offloader | None = None,
) -> Parts:
    """Build wires the runtime on `store` (etcd) and `actioncontroller` as `settings` say,
    inside the running event loop: the composition root.

    Every object gets its collaborators here, typed by the Protocols its module declares, and
    builds none of its own; one index and one outage reporter serve every reader. The tests
    run this very wiring on an in-memory etcd, with their own `clock`. `offloader` serves
    TriggerOffloading (without it the service answers that none is configured).
    """
    shared = _Shared(
        settings=settings,
        store=store,
        metrics=metrics,
        health=health,
        outage=Outage(clock=clock),
        index=Index(),
        later_formats=LaterFormats(metrics),  # one report per record, whoever meets it
        clock=clock,
        heads=HistoryHeads(store, settings.prefixes.layout, metrics),  # reports foreign keys
    )
    queue: WorkQueue[WorkKey] = WorkQueue(QueueMetrics(metrics))
    controller = _controller(shared, queue)
    election = _election(shared, controller)
    listings = Listings()
    watcher = _watcher(shared, controller, listings)
    controller.on_replaced(watcher.replaced)
    sender = _sender(shared, actioncontroller, watcher, controller)
    service = _service(shared, controller, offloader)
    feed, queries = _queries(shared, controller, watcher)
    status = _status(shared, election, sender)
    return Parts(
        shared.index, queue, controller, election, watcher, sender, service, status, listings,
        feed, queries, _pruner(shared),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Shared:
    """What `build`'s wiring steps hand to more than one object: one of each per daemon."""

    settings: Settings
    store: Store
    metrics: Metrics
    health: Health
    outage: Outage
    index: Index
    later_formats: LaterFormats
    clock: Callable[[], float]
    heads: HistoryHeads  # where each resource's history stands, read from etcd


def _controller(shared: _Shared, queue: WorkQueue[WorkKey]) -> Controller:
    """The controller, with the ingest and the writer it alone drives."""
    layout = shared.settings.prefixes.layout
    return Controller(
        index=shared.index,
        ingest=Ingest(layout, shared.index, shared.settings.inputs.max_value_bytes),
        queue=queue,
        writer=StateWriter(
            shared.store,
            layout,
            shared.index,
            shared.metrics,
            history=shared.heads,
            keep=shared.settings.history.keep,
            node=shared.settings.ha.node_name,
        ),
        layout=layout,
        metrics=shared.metrics,
        later_formats=shared.later_formats,
    )


def _election(shared: _Shared, controller: Controller) -> Election:
    """The election, telling the controller when this daemon leads."""
    settings = shared.settings
    return Election(
        client=shared.store,
        own_prefix=settings.prefixes.layout.own,
        node=settings.ha.node_name,
        ttl=settings.ha.lease_ttl_seconds,
        on_change=functools.partial(_leadership_changed, controller, shared.metrics),
        on_other_leader=controller.another_leads,
        reachability=shared.outage,
        later_formats=shared.later_formats,
        clock=shared.clock,
    )


def _watcher(shared: _Shared, controller: Controller, listings: Listings) -> Watcher:
    """The watcher, feeding the controller and counting its listings in `listings`."""
    settings = shared.settings
    layout = settings.prefixes.layout
    return Watcher(
        client=shared.store,
        sink=controller,
        prefixes=list(layout.watched().values()),
        together=layout.watched_together(),
        metrics=shared.metrics,
        on_listed=listings.listed,
        silence_limit=settings.etcd.watch_silence_seconds,
        resync_interval=settings.etcd.resync_interval_seconds,
        health=shared.health,
        outage=shared.outage,
    )


def _sender(
    shared: _Shared, actioncontroller: ReconcileClient, watcher: Watcher, controller: Controller
) -> ReconcileSender:
    """The reconcile sender, delivering what its trigger feed follows in etcd, reading
    scenarios from the index `watcher` fills, and telling the controller's writer of each
    trigger it removes."""
    settings = shared.settings
    feed = TriggerFeed(
        store=shared.store,
        layout=settings.prefixes.layout,
        metrics=shared.metrics,
        outage=shared.outage,
        later_formats=shared.later_formats,
        max_backoff=settings.actioncontroller.max_backoff_seconds,
        silence_limit=settings.etcd.watch_silence_seconds,
    )
    return ReconcileSender(
        client=actioncontroller,
        feed=feed,
        store=shared.store,
        layout=settings.prefixes.layout,
        scenarios=shared.index,
        applied=watcher,  # how far the index has followed each prefix
        metrics=shared.metrics,
        outage=shared.outage,
        max_backoff=settings.actioncontroller.max_backoff_seconds,
        max_refusals=settings.actioncontroller.max_refusals,
        max_age=settings.actioncontroller.max_trigger_age_seconds,
        on_removed=controller.removed,
    )


def _service(shared: _Shared, controller: Controller, offloader: Offloader | None) -> StateService:
    """Pullpiri's StateManager service, confirming asserted states through the controller."""
    settings = shared.settings
    metrics = shared.metrics
    return StateService(
        index=shared.index,
        layout=settings.prefixes.layout,
        store=shared.store,
        progress=shared.health,
        on_confirmed=controller.confirm,
        max_value_bytes=settings.inputs.max_value_bytes,
        on_list=lambda result: metrics.container_lists.labels(result).inc(),
        node_identity=settings.grpc.node_identity,
        metrics=metrics,
        offloader=offloader,
        history=shared.heads if settings.history.keep else None,
        keep=settings.history.keep,
        node=settings.ha.node_name,
    )


def _pruner(shared: _Shared) -> HistoryPruner | None:
    """The leader's pruning of history by age; None without history or without an age limit."""
    settings = shared.settings.history
    if not settings.keep or not settings.max_age_seconds:
        return None
    return HistoryPruner(
        store=shared.store,
        layout=shared.settings.prefixes.layout,
        heads=shared.heads,
        later_formats=shared.later_formats,
        max_age=settings.max_age_seconds,
        interval=min(PRUNE_INTERVAL_SECONDS, settings.max_age_seconds / 4),
        wall_clock=time.time_ns,
    )


def _queries(
    shared: _Shared, controller: Controller, watcher: Watcher
) -> tuple[TransitionFeed, QueryService]:
    """The queries Pullpiri's service plans: states from the index, history and records from
    etcd, relists through the watcher, streams from the feed making way for the controller."""
    feed = TransitionFeed(
        client=shared.store,
        layout=shared.settings.prefixes.layout,
        metrics=shared.metrics,
        later_formats=shared.later_formats,
    )
    return feed, QueryService(
        index=shared.index,
        layout=shared.settings.prefixes.layout,
        store=shared.store,
        progress=shared.health,
        feed=feed,
        resync=watcher.resync,
        rested=functools.partial(_quiet, controller, feed),
    )


def _status(shared: _Shared, election: Election, sender: ReconcileSender) -> StatusPage:
    """The status page: the index's tree, the leader, pending triggers and, when history is
    kept, each package's recent transitions read from etcd."""
    settings = shared.settings
    return StatusPage(
        loop=asyncio.get_running_loop(),
        index=shared.index,
        leadership=election,
        triggers=sender,
        progress=shared.health,
        node=settings.ha.node_name,
        history=shared.store if settings.history.keep else None,
        layout=settings.prefixes.layout,
    )


async def _quiet(controller: Controller, feed: TransitionFeed) -> None:
    """Return once the daemon's own work leaves time for a subscriber's message: no change
    queued or being written, and the event loop on time."""
    await controller.rested()
    await feed.calm()


def _leadership_changed(
    controller: Controller, metrics: Metrics, leading: bool, fence: Fence | None, revision: int
) -> None:
    metrics.leadership(leading)
    if leading:  # a new leader evaluates everything once, writes differences
        controller.mark_all(fence, revision)


def start(parts: Parts) -> list[asyncio.Task[None]]:
    """Start the runtime's loops as named tasks: none of them ends unless cancelled, so the
    caller treats any that does as a failure."""
    tasks = [
        asyncio.create_task(parts.watcher.run(), name="watcher"),
        asyncio.create_task(parts.election.run(), name="election"),
        asyncio.create_task(parts.controller.run_worker(parts.election), name="worker"),
        asyncio.create_task(_send_after_listing(parts), name="reconcile-sender"),
        asyncio.create_task(parts.feed.run(), name="transition-feed"),
    ]
    if parts.pruner is not None:
        tasks.append(asyncio.create_task(parts.pruner.run(parts.election), name="history-pruner"))
    return tasks


async def _send_after_listing(parts: Parts) -> None:
    """The sender needs the index filled by the first listing to know the scenarios targeting a
    trigger's package."""
    await parts.listings.first()
    await parts.sender.run(parts.election)


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def unpool_large_blocks() -> None:
    """Have glibc map every block of 128 KiB or more on its own, and unmap it when freed.

    glibc's default raises that threshold to the largest block freed so far, so after the
    first page of a listing every multi-megabyte gRPC response is carved from the heap and,
    once freed, stays there: at 100,000 containers 20-40 MB of the peak RSS, varying from run
    to run (docs/design.md, Footprint). Without glibc (no `mallopt`) there is nothing to do.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


async def run(settings: Settings, reload: Callable[[], Settings] | None = None) -> int:
    """Run serves until a stop signal (exit 0; 128 + n for an unexpected signal n) or a task
    failure (exit 1). `reload` reads the configuration again (SIGHUP); it raises ConfigError."""
    unpool_large_blocks()
    metrics = Metrics()
    health = Health(stuck_after=HEARTBEAT_SECONDS * 4)
    client = EtcdClient.from_settings(
        settings.etcd, observe=metrics.observe_etcd, refusals=RefusalReport(metrics, health)
    )
    actioncontroller = ActionControllerClient(
        settings.actioncontroller.address,
        settings.actioncontroller.timeout_seconds,
        settings.actioncontroller.tls,
    )
    try:
        parts = build(
            settings,
            store=client,
            actioncontroller=actioncontroller,
            metrics=metrics,
            health=health,
            offloader=actioncontroller,
        )
        stop = _handle_signals(settings, reload)
        server = _serve_http(stop, metrics, health, parts.status)
        if server is None:
            return 1
        log.info(
            "starting", version=__version__, etcd=client.endpoint, metrics=settings.metrics.address
        )
        try:
            return await _supervised(parts, stop, metrics, health)
        finally:
            server.shutdown()
    finally:
        await client.close()
        await actioncontroller.close()


async def _supervised(parts: Parts, stop: _Signals, metrics: Metrics, health: Health) -> int:
    """Start the runtime and serve gRPC, supervise them until a stop signal or a task failure
    (`_supervise`'s exit code), then stop them."""
    notifier = Notifier()
    supervised = [
        *start(parts),
        asyncio.create_task(_heartbeat(health, notifier), name="heartbeat"),
    ]
    # Not supervised: ends on its own once the first sync is announced.
    announcer = asyncio.create_task(_announce_sync(parts, metrics, health), name="sync")
    grpc_server = await _serve_grpc(stop.settings, parts.service, parts.queries)
    # Ready as soon as the daemon serves: etcd being down is a state it reports and recovers
    # from, not a failed start (docs/decisions/ready-before-etcd.md). /readyz waits for sync.
    notifier.ready(health.status_line())
    stopper = asyncio.create_task(stop.event.wait(), name="stop-signal")
    code = 0
    try:
        code = await _supervise(stopper, supervised, stop)
    finally:
        (log.warning if code else log.info)("stopping", exit_code=code, signal=stop.name())
        notifier.stopping()
        await _stop(parts, [*supervised, announcer, stopper], grpc_server)
    return code


async def _stop(
    parts: Parts, tasks: list[asyncio.Task[Any]], grpc_server: grpc.aio.Server | None
) -> None:
    """Stop taking work, end every task, hand leadership over and stop serving gRPC."""
    parts.queue.shutdown()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await parts.election.resign()  # hand over at once rather than after a lease TTL
    if grpc_server is not None:
        await grpc_server.stop(grace=0.5)


async def _supervise(
    stopper: asyncio.Task[Any], supervised: list[asyncio.Task[Any]], stop: _Signals
) -> int:
    """Wait for a stop signal (0 for SIGTERM/SIGINT, 128 + n for another signal n) or for any
    supervised task to end, which is a failure (1)."""
    done, _ = await asyncio.wait([stopper, *supervised], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if stop.received is not None and stop.received not in _STOP_REQUESTS:
        code = 128 + stop.received
    for task in done - {stopper}:
        code = 1
        failure = None if task.cancelled() else task.exception()
        log.error(
            "task_failed",
            task=task.get_name(),
            error=str(failure) if failure else "cancelled unexpectedly",
            error_type=type(failure).__name__ if failure else "CancelledError",
        )
    return code


def _serve_http(
    signals: _Signals, metrics: Metrics, health: Health, status: StatusPage
) -> ThreadingHTTPServer | None:
    """/metrics, /healthz, /readyz and /status, secured as the web config file says (as of the
    last reload); None (logged) when the address cannot be bound."""
    settings = signals.settings
    routes = {**web.health_routes(metrics, health), "/status": status.route}
    try:
        # Read at each connection: attribute reads are atomic, and SIGHUP replaces the settings.
        return web.serve(
            settings.metrics.address, routes, lambda: signals.settings.metrics.web_config_file
        )
    except OSError as exc:
        log.error("metrics_bind_failed", address=settings.metrics.address, error=str(exc))
        return None


async def _serve_grpc(
    settings: Settings, service: StateService, queries: QueryService
) -> grpc.aio.Server | None:
    """Pullpiri's StateManager service, with its planned queries, when enabled."""
    if not settings.grpc.enabled:
        return None
    server = await stateservice.serve(
        service,
        settings.grpc.address,
        settings.grpc.tls,
        settings.grpc.max_concurrent_rpcs,
        queries,
    )
    tls = settings.grpc.tls
    log.info(
        "grpc_serving",
        address=settings.grpc.address,
        tls="off" if tls is None else "mutual" if tls.client_ca else "server",
        max_concurrent_rpcs=settings.grpc.max_concurrent_rpcs,
    )
    return server


@dataclass
class _Signals:
    """What the signals asked for: `event` is set by the first stop signal (`received`; waiting
    on the event, unlike sleep, ends at once); SIGHUP replaces `settings` by a reload."""

    event: asyncio.Event
    settings: Settings
    reload: Callable[[], Settings] | None
    received: signal.Signals | None = None

    def stop(self, sig: signal.Signals) -> None:
        if self.received is None:
            self.received = sig
        self.event.set()

    def name(self) -> str | None:
        return self.received.name if self.received is not None else None

    def hangup(self) -> None:
        self.settings = _reload(self.settings, self.reload)


def _handle_signals(settings: Settings, reload: Callable[[], Settings] | None) -> _Signals:
    stop = _Signals(asyncio.Event(), settings, reload)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, stop.hangup)
    hooks = os.environ.get("STATEMANAGER_TEST_HOOKS") == "1"
    for sig in (*_STOP_REQUESTS, *_UNEXPECTED):
        if not (hooks and sig == signal.SIGUSR2):
            loop.add_signal_handler(sig, stop.stop, signal.Signals(sig))
    if hooks:
        # Test hook: SIGUSR2 blocks the event loop for an hour, as a bug would, so tests can
        # show that /healthz fails and systemd's watchdog restarts a wedged daemon.
        loop.add_signal_handler(signal.SIGUSR2, time.sleep, 3600)
    return stop


def _reload(current: Settings, reload: Callable[[], Settings] | None) -> Settings:
    """Read the configuration again and apply what can change while running. Invalid new
    configuration changes nothing (the daemon keeps running as it was) and says why."""
    if reload is None:
        log.warning("reload_unsupported", hint="started without a configuration to re-read")
        return current
    try:
        fresh = reload()
    except ConfigError as exc:
        log.error("reload_failed", error=str(exc), hint="running on with the previous settings")
        return current
    logs.configure(fresh.log.format, fresh.log.level)
    applied, changed = config.reloaded(current, fresh)
    log.info(
        "reloaded",
        # Values of reloadable settings only: the others may be secrets (etcd.password).
        changed={o.name: [o.value(current), o.value(fresh)] for o in changed
                 if o.declared.reloadable},
        restart_needed=[o.name for o in changed if not o.declared.reloadable],
    )  # fmt: skip
    return applied


async def _heartbeat(health: Health, notifier: Notifier) -> None:
    """Prove the event loop turns: /healthz and systemd's watchdog both hear it from here, so a
    wedged loop fails the one and gets the process restarted by the other."""
    period = min(HEARTBEAT_SECONDS, notifier.watchdog_interval or HEARTBEAT_SECONDS)
    status = ""
    while True:
        health.beat()
        if notifier.watchdog_interval is not None:
            notifier.watchdog()
        if health.status_line() != status:
            status = health.status_line()
            notifier.status(status)
        await asyncio.sleep(period)


async def _announce_sync(parts: Parts, metrics: Metrics, health: Health) -> None:
    """Mark the first full sync done: as leader once everything listed has been evaluated and
    written; as follower once the election has placed us (our index is warm, nothing to write)."""
    revision = await parts.listings.first()
    election = parts.election
    # Two conditions owned by two objects, once per process: polling is the simple answer,
    # often enough not to delay readiness (a small node is ready ~0.1 s after the listing).
    while not (parts.queue.idle() if election.fence() else election.decided):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    containers, models, packages = parts.index.sizes()
    health.synced()
    metrics.synced.set(1)
    # The index is now mostly long-lived objects: keep the cyclic GC from rescanning them on
    # every collection (its cost otherwise grows with the fleet; see `statemanager bench`).
    # After the readiness above: the full collection takes ~0.1 s at 100,000 containers.
    gc.collect()
    gc.freeze()
    log.info(
        "synced",
        revision=revision,
        role="leader" if election.fence() else "follower",
        containers=containers,
        models=models,
        packages=packages,
    )
