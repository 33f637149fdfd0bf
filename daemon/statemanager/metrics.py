"""Prometheus metrics: the only module that imports prometheus_client.

Everything lives on a private registry (tests build their own `Metrics`), and no label takes
values that grow with the fleet: labels are resource types, state names, reasons and kinds.
"""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from statemanager import __version__

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.transitions = Counter(
            "statemanager_transitions",
            "State transitions written to etcd.",
            ["resource", "state"],
            registry=r,
        )
        self.invalid_inputs = Counter(
            "statemanager_invalid_inputs",
            "Keys rejected as bad input (once per key and revision).",
            ["kind"],
            registry=r,
        )
        self.unassigned_containers = Gauge(
            "statemanager_unassigned_containers",
            "Containers that belong to no model.",
            registry=r,
        )
        self.queue_depth = Gauge(
            "statemanager_workqueue_depth", "Work keys waiting to be processed.", registry=r
        )
        self.last_revision = Gauge(
            "statemanager_last_seen_revision", "Newest etcd revision fully delivered.", registry=r
        )
        self.watch_restarts = Counter(
            "statemanager_watch_restarts",
            "Watch streams restarted, by reason.",
            ["reason"],
            registry=r,
        )
        self.write_retries = Counter(
            "statemanager_etcd_write_retries",
            "State write transactions retried after a transient etcd error.",
            registry=r,
        )
        self.write_conflicts = Counter(
            "statemanager_etcd_write_conflicts",
            "State write transactions whose guard failed (someone else wrote a state key).",
            registry=r,
        )
        self.reconcile_requests = Counter(
            "statemanager_reconcile_requests",
            "Reconcile calls to ActionController, by result (ok, rejected, unavailable, error).",
            ["result"],
            registry=r,
        )
        self.reconcile_triggers = Counter(
            "statemanager_reconcile_triggers",
            "Reconcile triggers by what became of them (recorded, delivered, dropped).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_pending = Gauge(
            "statemanager_reconcile_pending_triggers",
            "Reconcile triggers recorded in etcd and not yet delivered.",
            registry=r,
        )
        self.reconcile_no_scenario = Counter(
            "statemanager_reconcile_no_scenario",
            "Packages that entered Error with no Scenario targeting them (no reconcile sent).",
            registry=r,
        )
        self.evaluation_seconds = Histogram(
            "statemanager_evaluation_seconds",
            "Time to plan the writes for one batch of dirty keys.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_seconds = Histogram(
            "statemanager_etcd_txn_seconds",
            "Duration of state write transactions.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.synced = Gauge(
            "statemanager_synced", "1 once the first full sync is written.", registry=r
        )
        self.objects = Gauge(
            "statemanager_objects",
            "Containers, models and packages in the index.",
            ["resource"],
            registry=r,
        )
        Info("statemanager_build", "Version of the daemon and of Python.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )

    def serve(self, address: str) -> Any:
        """Serve /metrics on host:port in a background thread; returns the server to shut down."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        return server
