"""Prometheus metrics and the HTTP endpoints: the only module that imports prometheus_client.

Everything lives on a private registry (tests build their own `Metrics`), and no label takes
values that grow with the fleet: labels are resource types, states, reasons, codes and kinds.
The HTTP server also answers /healthz (process alive, loop not stuck) and /readyz (first sync
done, watch healthy): 200 when true, 503 with the reason otherwise.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Mapping, Set
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from statemanager import __version__
from statemanager.etcd import REFUSAL_REASONS
from statemanager.health import Health
from statemanager.inputs import BAD_INPUT_KINDS
from statemanager.states import ContainerStatus, ModelState, PackageState

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
OTHER = "other"  # a written state that is not a state name (someone else wrote it)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"statemanager_{name}", doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"statemanager_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
            return Histogram(
                f"statemanager_{name}", doc, labels, buckets=_LATENCY_BUCKETS, registry=r
            )

        # State changes and what is in etcd now.
        self.transitions = counter(
            "transitions", "State transitions written to etcd.", ("resource", "state")
        )
        self.containers = gauge("containers", "Containers by status.", ("status",))
        self.models = gauge("models", "Written model states, by state.", ("state",))
        self.packages = gauge("packages", "Written package states, by state.", ("state",))
        self.unassigned_containers = gauge(
            "unassigned_containers", "Containers that belong to no model."
        )
        self.invalid_inputs = counter(
            "invalid_inputs", "Keys rejected as bad input (once per key and revision).", ("kind",)
        )
        # Work.
        self.evaluation_seconds = histogram(
            "evaluation_seconds", "Time to plan the writes for one batch of dirty keys."
        )
        self.event_to_write_seconds = histogram(
            "event_to_write_seconds",
            "From the watch delivering an event to the commit of the state write it caused.",
        )
        self.queue_depth = gauge("workqueue_depth", "Work keys waiting to be processed.")
        self.queue_adds = counter("workqueue_adds", "Work keys added (not counting duplicates).")
        self.queue_retries = counter(
            "workqueue_retries", "Work keys put back after a write failed."
        )
        self.queue_wait_seconds = histogram(
            "workqueue_wait_seconds", "Time a key waited in the queue before processing."
        )
        # etcd.
        self.etcd_request_seconds = histogram(
            "etcd_request_seconds", "etcd request duration.", ("operation",)
        )
        self.etcd_errors = counter(
            "etcd_errors", "Failed etcd requests by gRPC status code.", ("operation", "code")
        )
        self.write_retries = counter(
            "etcd_write_retries", "State write transactions retried after a transient error."
        )
        self.write_conflicts = counter(
            "etcd_write_conflicts",
            "State write transactions whose guard failed (someone else wrote a state key).",
        )
        self.watch_restarts = counter(
            "watch_restarts", "Watch streams restarted, by reason.", ("reason",)
        )
        self.last_revision = gauge("last_seen_revision", "Newest etcd revision fully delivered.")
        self.last_event_time = gauge(
            "last_event_timestamp_seconds", "Unix time the watch last delivered events."
        )
        self.etcd_refusals = counter(
            "etcd_refusals",
            "Requests etcd refused by reason: nospace, too_many_requests (etcd cannot take "
            "writes now; retried) or too_many_ops, request_too_large, response_too_large "
            "(never as sent; split or skipped).",
            ("reason",),
        )
        self.etcd_refusing_writes = gauge(
            "etcd_refusing_writes", "1 while etcd refuses this daemon's writes (space, load)."
        )
        self.writes_refused = counter(
            "writes_refused",
            "State changes skipped because etcd refuses even a transaction of that one change.",
        )
        self.corrections = counter(
            "corrections",
            "State keys someone else changed, put back to the unchanged derived state.",
            ("resource",),
        )
        self.resync_drift = counter(
            "resync_drift", "Keys a relist found changed that the watch had not delivered."
        )
        # Reconcile.
        self.reconcile_requests = counter(
            "reconcile_requests",
            "Reconcile calls to ActionController, by result (ok, rejected, unavailable, error).",
            ("result",),
        )
        self.reconcile_triggers = counter(
            "reconcile_triggers",
            "Reconcile triggers by what became of them (recorded, delivered, dropped, "
            "dead_lettered).",
            ("outcome",),
        )
        self.reconcile_dead_letters = gauge(
            "reconcile_dead_letters",
            "Triggers given up on after too many refusals, kept in etcd (on the leader).",
        )
        self.reconcile_pending = gauge(
            "reconcile_pending_triggers", "Reconcile triggers recorded and not yet delivered."
        )
        self.reconcile_oldest = gauge(
            "reconcile_oldest_pending_timestamp_seconds",
            "Unix time the oldest pending trigger was taken on (0 when none).",
        )
        self.reconcile_no_scenario = counter(
            "reconcile_no_scenario",
            "Packages that entered Error with no Scenario targeting them (no reconcile sent).",
        )
        # The daemon itself.
        self.synced = gauge("synced", "1 once the first full sync is written.")
        self.ready = gauge("ready", "1 while /readyz would answer 200.")
        self.leader = gauge("leader", "1 while this daemon is the one that writes states.")
        Info("statemanager_build", "Version of the daemon and of Python.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        self._zero_fixed_labels()

    def _zero_fixed_labels(self) -> None:
        """Every fixed label value exists from the start at 0, so rate() and increase() see the
        first event too (a series that appears at 1 has no increase to show)."""
        for status in ContainerStatus:
            self.containers.labels(status.value)
        for model_state in [*ModelState, OTHER]:
            self.models.labels(model_state)
            self.transitions.labels("model", model_state)
        for package_state in [*PackageState, OTHER]:
            self.packages.labels(package_state)
            self.transitions.labels("package", package_state)
        for resource in ("model", "package"):
            self.transitions.labels(resource, "deleted")
            self.corrections.labels(resource)
        for reason in REFUSAL_REASONS:
            self.etcd_refusals.labels(reason)
        for kind in BAD_INPUT_KINDS:
            self.invalid_inputs.labels(kind)
        for reason in ("unavailable", "silent", "compacted", "resync", "revision_backwards"):
            self.watch_restarts.labels(reason)
        for result in ("ok", "rejected", "unavailable", "error"):
            self.reconcile_requests.labels(result)
        for outcome in ("recorded", "delivered", "dropped", "dead_lettered"):
            self.reconcile_triggers.labels(outcome)
        for operation in ("range", "txn"):
            self.etcd_request_seconds.labels(operation)
            for code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                self.etcd_errors.labels(operation, code)

    def set_counts(self, gauge: Gauge, counts: Mapping[str, int], known: Set[str]) -> None:
        """Set a by-state gauge from counts; names outside `known` are summed into `other`."""
        values = dict.fromkeys([*known, OTHER], 0)
        for name, n in counts.items():
            values[name if name in known else OTHER] += n
        for name, n in values.items():
            gauge.labels(name).set(n)

    def observe_etcd(self, operation: str, seconds: float, code: str | None) -> None:
        self.etcd_request_seconds.labels(operation).observe(seconds)
        if code is not None:
            self.etcd_errors.labels(operation, code).inc()

    def serve(self, address: str, health: Health) -> ThreadingHTTPServer:
        """Serve /metrics, /healthz and /readyz on host:port from a daemon thread."""
        registry = self.registry
        self.ready.set_function(lambda: 1.0 if health.readiness()[0] else 0.0)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, why = health.liveness() if path == "/healthz" else health.readiness()
                    self._reply(200 if ok else 503, f"{why}\n".encode(), "text/plain")
                else:
                    self._reply(404, b"try /metrics, /healthz or /readyz\n", "text/plain")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the daemon's own logs

        host, _, port = address.rpartition(":")
        server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server
