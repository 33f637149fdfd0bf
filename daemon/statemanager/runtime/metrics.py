"""Prometheus metrics: the only module that imports prometheus_client (web.py serves them).

Everything lives on a private registry (tests build their own `Metrics`), and no label takes
values that grow with the fleet: labels are resource types, states, reasons, codes and kinds.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping, Set

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from statemanager import __version__
from statemanager.core.inputs import BAD_INPUT_KINDS
from statemanager.core.nodelists import LIST_RESULTS
from statemanager.core.ports import REFUSAL_REASONS
from statemanager.core.records import RECORDS
from statemanager.core.scenarios import ScenarioState
from statemanager.core.states import ContainerStatus, ModelState, PackageState
from statemanager.runtime.health import Health

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
EXPOSITION_TYPE = CONTENT_TYPE_LATEST
OTHER = "other"  # a written state that is not a state name (someone else wrote it)
QUARANTINE_STAGES = ("ingest", "plan")  # where an unexpected exception set a key aside
# What became of a TriggerOffloading: ActionController accepted it, answered no, or could not
# be asked (down, unreachable, timed out).
OFFLOADING_RESULTS = ("accepted", "refused", "unavailable")


class Metrics:
    """Metrics holds every metric of the daemon on its own registry, each fixed label at 0."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Per by-state gauge, the value each label was last set to (set_counts).
        self._by_state: dict[Gauge, dict[str, int]] = {}
        self._declare_states()
        self._declare_work()
        self._declare_etcd()
        self._declare_watch()
        self._declare_reconcile()
        self._declare_daemon()
        # CPU, memory, open fds, start time (a restart shows as a new start time).
        ProcessCollector(registry=self.registry)
        Info(
            "statemanager_build", "Version of the daemon and of Python.", registry=self.registry
        ).info({"version": __version__, "python": platform.python_version()})
        self._zero_fixed_labels()

    def _counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(f"statemanager_{name}", doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"statemanager_{name}", doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(
            f"statemanager_{name}", doc, labels, buckets=_LATENCY_BUCKETS, registry=self.registry
        )

    def _declare_states(self) -> None:
        """State changes and what is in etcd now."""
        self.transitions = self._counter(
            "transitions", "State transitions written to etcd.", ("resource", "state")
        )
        self.offloading_requests = self._counter(
            "offloading_requests",
            "TriggerOffloading requests forwarded to ActionController's OffloadModel, by result.",
            ("result",),
        )
        self.containers = self._gauge("containers", "Containers by status.", ("status",))
        self.models = self._gauge("models", "Written model states, by state.", ("state",))
        self.packages = self._gauge("packages", "Written package states, by state.", ("state",))
        self.unassigned_containers = self._gauge(
            "unassigned_containers", "Containers that belong to no model."
        )
        self.invalid_inputs = self._counter(
            "invalid_inputs", "Keys rejected as bad input (once per key and revision).", ("kind",)
        )
        self.quarantined = self._counter(
            "quarantined",
            "Keys set aside after an unexpected exception (a bug) while ingesting or planning"
            " them (once per key and revision); retried when they change.",
            ("stage",),
        )
        self.corrections = self._counter(
            "corrections",
            "State keys someone else changed, put back to the unchanged derived state.",
            ("resource",),
        )

    def _declare_work(self) -> None:
        """The work queue and the planning of writes."""
        self.evaluation_seconds = self._histogram(
            "evaluation_seconds", "Time to plan the writes for one batch of dirty keys."
        )
        self.event_to_write_seconds = self._histogram(
            "event_to_write_seconds",
            "From the watch delivering an event to the commit of the state write it caused.",
        )
        self.queue_depth = self._gauge("workqueue_depth", "Work keys waiting to be processed.")
        self.queue_adds = self._counter(
            "workqueue_adds", "Work keys added (not counting duplicates)."
        )
        self.queue_retries = self._counter(
            "workqueue_retries", "Work keys put back after a write failed."
        )
        self.queue_wait_seconds = self._histogram(
            "workqueue_wait_seconds", "Time a key waited in the queue before processing."
        )

    def _declare_etcd(self) -> None:
        """Requests to etcd and what etcd refused."""
        self.etcd_request_seconds = self._histogram(
            "etcd_request_seconds", "etcd request duration.", ("operation",)
        )
        self.etcd_errors = self._counter(
            "etcd_errors", "Failed etcd requests by gRPC status code.", ("operation", "code")
        )
        self.write_retries = self._counter(
            "etcd_write_retries", "State write transactions retried after a transient error."
        )
        self.write_conflicts = self._counter(
            "etcd_write_conflicts",
            "State write transactions whose guard failed (someone else wrote a state key).",
        )
        self.etcd_refusals = self._counter(
            "etcd_refusals",
            "Requests etcd refused by reason: nospace, too_many_requests (etcd cannot take "
            "writes now; retried) or too_many_ops, request_too_large, response_too_large "
            "(never as sent; split or skipped).",
            ("reason",),
        )
        self.etcd_refusing_writes = self._gauge(
            "etcd_refusing_writes", "1 while etcd refuses this daemon's writes (space, load)."
        )
        self.writes_refused = self._counter(
            "writes_refused",
            "State changes skipped because etcd refuses even a transaction of that one change.",
        )

    def _declare_watch(self) -> None:
        """The watch: its restarts, its progress, and what it carried or missed."""
        self.watch_restarts = self._counter(
            "watch_restarts", "Watch streams restarted, by reason.", ("reason",)
        )
        self.last_revision = self._gauge(
            "last_seen_revision", "Newest etcd revision fully delivered."
        )
        self.last_event_time = self._gauge(
            "last_event_timestamp_seconds", "Unix time the watch last delivered events."
        )
        self.watch_foreign_events = self._counter(
            "watch_foreign_events",
            "Events of keys outside the watched prefixes that a watch of adjacent state "
            "prefixes' common range carried (dropped).",
        )
        self.resync_drift = self._counter(
            "resync_drift", "Keys a relist found changed that the watch had not delivered."
        )

    def _declare_reconcile(self) -> None:
        """Reconcile triggers and their delivery to ActionController."""
        self.reconcile_requests = self._counter(
            "reconcile_requests",
            "Reconcile calls to ActionController, by result (ok, rejected, unavailable, error).",
            ("result",),
        )
        self.reconcile_triggers = self._counter(
            "reconcile_triggers",
            "Reconcile triggers by what became of them (recorded, delivered, dropped, "
            "dead_lettered).",
            ("outcome",),
        )
        self.reconcile_dead_letters = self._gauge(
            "reconcile_dead_letters",
            "Triggers given up on after too many refusals, kept in etcd (on the leader).",
        )
        self.reconcile_pending = self._gauge(
            "reconcile_pending_triggers", "Reconcile triggers recorded and not yet delivered."
        )
        self.reconcile_oldest = self._gauge(
            "reconcile_oldest_pending_timestamp_seconds",
            "Unix time the oldest pending trigger was taken on (0 when none).",
        )
        self.reconcile_no_scenario = self._counter(
            "reconcile_no_scenario",
            "Packages that entered Error with no Scenario targeting them (no reconcile sent).",
        )

    def _declare_daemon(self) -> None:
        """Pullpiri's StateManager gRPC service and the daemon itself."""
        self.container_lists = self._counter(
            "container_lists",
            "Nodes' container lists received, by result (stored, invalid, not_this_node, "
            "conflict, unavailable).",
            ("result",),
        )
        # SubscribeToStateChanges (runtime/feed.py).
        self.subscribers = self._gauge(
            "subscribers", "Streams of SubscribeToStateChanges open on this daemon."
        )
        self.subscribers_cut_off = self._counter(
            "subscribers_cut_off",
            "Subscribers cut off because their buffer of transitions overflowed (they resume "
            "from the revision the stream's end names).",
        )
        # The daemon itself.
        self.records_unknown_format = self._counter(
            "records_unknown_format",
            "Records under the daemon's own prefix in a format newer than it knows, left as "
            "they are (once per key and format), by record.",
            ("record",),
        )
        self.synced = self._gauge("synced", "1 once the first full sync is written.")
        self.ready = self._gauge("ready", "1 while /readyz would answer 200.")
        self.leader = self._gauge("leader", "1 while this daemon is the one that writes states.")
        self.leader_changes = self._counter(
            "leader_changes", "Times this daemon became or stopped being the leader."
        )

    def _zero_fixed_labels(self) -> None:
        """Every fixed label value exists from the start at 0, so rate() and increase() see the
        first event too (a series that appears at 1 has no increase to show)."""
        restarts = ("unavailable", "silent", "compacted", "resync", "revision_backwards")
        one_label: list[tuple[Counter | Gauge, Iterable[str]]] = [
            (self.containers, [status.value for status in ContainerStatus]),
            (self.offloading_requests, OFFLOADING_RESULTS),
            (self.etcd_refusals, REFUSAL_REASONS),
            (self.invalid_inputs, BAD_INPUT_KINDS),
            (self.quarantined, QUARANTINE_STAGES),
            (self.watch_restarts, (*restarts, "too_large")),
            (self.reconcile_requests, ("ok", "rejected", "unavailable", "error")),
            (self.reconcile_triggers, ("recorded", "delivered", "dropped", "dead_lettered")),
            (self.container_lists, LIST_RESULTS),
            (self.records_unknown_format, RECORDS),
        ]
        for metric, values in one_label:
            for value in values:
                metric.labels(value)
        for gauge, resource, states in (
            (self.models, "model", [*ModelState, OTHER]),
            (self.packages, "package", [*PackageState, OTHER]),
        ):
            self.corrections.labels(resource)
            for state in states:
                gauge.labels(state)
        transitions = {
            "model": [*ModelState, OTHER],
            "package": [*PackageState, OTHER],
            "scenario": [*ScenarioState],  # set through the gRPC service: never other
        }
        for resource, states in transitions.items():
            for state in [*states, "deleted"]:
                self.transitions.labels(resource, state)
        for operation in ("range", "txn"):
            self.etcd_request_seconds.labels(operation)
            for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                self.etcd_errors.labels(operation, code)

    def set_counts(self, gauge: Gauge, counts: Mapping[str, int], known: Set[str]) -> None:
        """Sets a by-state gauge from counts; names outside `known` are summed into `other`."""
        values = dict.fromkeys([*known, OTHER], 0)
        for name, n in counts.items():
            values[name if name in known else OTHER] += n
        # Runs after every write batch, and a batch moves one or two labels at most: only
        # those are set (a labelled child's lookup and set cost more than the whole diff).
        last = self._by_state.setdefault(gauge, {})
        for name, n in values.items():
            if last.get(name) != n:
                gauge.labels(name).set(n)
                last[name] = n

    def leadership(self, leading: bool) -> None:
        """Records that this daemon became (True) or stopped being (False) the leader."""
        self.leader.set(1 if leading else 0)
        self.leader_changes.inc()

    def scenario_transition(self, state: str) -> None:
        """Counts a scenario state change the gRPC service committed (deletions: the leader)."""
        self.transitions.labels("scenario", state).inc()

    def offloading(self, result: str) -> None:
        """Counts a TriggerOffloading answered with `result`, one of OFFLOADING_RESULTS."""
        self.offloading_requests.labels(result).inc()

    def observe_etcd(self, operation: str, seconds: float, code: str | None) -> None:
        """Records one etcd request's duration and its failure's gRPC status code (None: none)."""
        self.etcd_request_seconds.labels(operation).observe(seconds)
        if code is not None:
            self.etcd_errors.labels(operation, code).inc()

    def exposition(self) -> bytes:
        """Returns every metric in Prometheus' text format, to be served as EXPOSITION_TYPE."""
        return generate_latest(self.registry)

    def follow_readiness(self, health: Health) -> None:
        """Makes `statemanager_ready` read /readyz's answer at each scrape."""
        self.ready.set_function(lambda: 1.0 if health.readiness()[0] else 0.0)


class QueueMetrics:
    """QueueMetrics observes the work queue (`workqueue.QueueObserver`) into Metrics, so the
    queue never imports Prometheus."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def depth(self, depth: int) -> None:
        """Records that the queue holds `depth` keys now."""
        self._m.queue_depth.set(depth)

    def added(self) -> None:
        """Counts a key added that was not already waiting."""
        self._m.queue_adds.inc()

    def waited(self, seconds: float) -> None:
        """Records a key taken after waiting `seconds` in the queue."""
        self._m.queue_wait_seconds.observe(seconds)
