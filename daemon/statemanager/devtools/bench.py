"""`statemanager bench`: the daemon's throughput, latency and footprint against its own etcd.

It starts a private etcd on loopback, loads a synthetic fleet, runs the daemon as production
does (its own process, configured by STATEMANAGER_* variables) and drives load from a third
process (`statemanager.devtools.benchload`). The ceilings — etcd's guarded-transaction rate
and watch delivery to one Python process — are measured in the same run on the same machine, so the
daemon's figures are read against what this machine allows, not against a number from
elsewhere. Progress goes to stderr, the result (a table, or JSON) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import FrameType
from typing import Any

from statemanager.devtools import burst, edge, lists, subscribers
from statemanager.devtools.benchload import COST_POLL_SECONDS, Fleet, cpu_seconds, peak_rss_mb
from statemanager.devtools.localetcd import LocalEtcd, find_etcd, free_port

PARTS = ("txn", "watch", "noop", "change", "latency", "cost", "scaling", "edge", "history")
FIGURES = (
    "etcd_txn_per_s",
    "etcd_watch_events_per_s",
    "noop_events_per_s",
    "noop_writer_bound",
    "noop_replay_per_s",
    "etcd_watch_replay_per_s",
    "change_events_per_s",
    "change_ratio",
    "change_drain_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "etcd_commit_p99_ms",
    "etcd_commit_max_ms",
    "latency_p99_vs_commit",
    "change_cpu_ms",
    "noop_cpu_ms",
    "cold_start_s",
    "cold_start_cpu_s",
    "rss_mb",
    "rss_mb_end",
    "scaling_ratio",
    "scaling_ratio_noop",
    *edge.TARGETS,
    "history_change_cpu_ratio",
    "history_cold_start_ratio",
    "history_cold_start_cpu_ratio",
)
# Room for several 100k-container fleets and their history (etcd's default quota is 2 GiB).
# A transaction of 128 container puts is ~70 KiB, far below --max-request-bytes' 1.5 MiB.
ETCD_ARGS = ("--quota-backend-bytes", str(8 << 30), "--log-level", "warn")
PACED_INFLIGHT = "64"  # paced updates come from many node agents at once, not one writer


@dataclass(frozen=True)
class Sizes:
    """Everything --quick shrinks; each field is also a flag that overrides it."""

    containers: int
    models: int
    packages: int
    noop_events: int
    txns: int
    step_seconds: float
    latency_seconds: float
    scaling_packages: tuple[int, int]
    scaling_rate: float
    scaling_seconds: float


FULL = Sizes(100_000, 20_000, 5_000, 20_000, 2_000, 3.0, 5.0, (100, 10_000), 500.0, 4.0)
QUICK = Sizes(2_000, 400, 100, 2_000, 500, 1.0, 1.0, (10, 100), 200.0, 1.0)

NOTES = {
    "etcd_txn_per_s": "sequential EtcdClient.txn, one in flight, each one put guarded by the "
    "key's mod revision (the daemon's write pattern), median of --repeat runs",
    "etcd_watch_events_per_s": "EtcdClient.watch replaying the no-op revisions below from "
    "etcd's history into the load process, median of --repeat runs",
    "noop_events_per_s": "N stats-only container rewrites (--noop-batch puts per transaction, "
    "64 in flight) written as fast as the load process can; N / seconds from the first write "
    "until the daemon's statemanager_last_seen_revision reached the last one. "
    "noop_writer_bound: the daemon was caught up within 0.1 s of the last write, so the writer "
    "(sharing the CPUs with etcd and the daemon) set the pace and the rate is a lower bound",
    "noop_replay_per_s": "no-op intake by replay: the daemon is stopped (SIGSTOP) while the same "
    "number of no-ops is written (64 puts per transaction), then resumed; N / seconds from the "
    "resume until its statemanager_last_seen_revision reached the last one (polled every 0.1 s). "
    "etcd_watch_replay_per_s: EtcdClient.watch replaying those same revisions into the load "
    "process (median of --repeat runs), the ceiling it is read against",
    "change_events_per_s": "highest offered rate (steps of --step-seconds, 64 puts in flight, "
    "each update flips one model Running<->Failed, models round-robin) after which the daemon "
    "had seen the last revision, emptied its work queue and written every expected model state "
    "within 1 s; the achieved rate of that step",
    "change_drain_per_s": "events of the last step / seconds from its first write until caught "
    "up (the raw drain rate when that step was not kept up with)",
    "latency_ms": "at --rate, each update changing a distinct model: time the load process "
    "received the model state on its own watch of /model/ minus the time its container put "
    "returned, both on its monotonic clock. etcd_commit_p99_ms / etcd_commit_max_ms: those "
    "container puts' own time from send to answer, in the same run: one etcd commit, which the "
    "daemon's state write also is, so the floor under the latency's tail on this etcd",
    "cold_start_s": "daemon process start until /readyz answers 200 (first full sync written); "
    "the daemon logs at warning level, so its info-level 'synced' line is not there to read. "
    "cold_start_cpu_s: the daemon's CPU seconds (utime+stime) by then, which other load on a "
    "shared machine does not inflate as it does the wall time",
    "cpu_ms": "change_cpu_ms / noop_cpu_ms: daemon CPU milliseconds (utime+stime) per "
    "state-changing / stats-only update offered at --rate on the main fleet, from the first "
    "write until caught up, idle costs included (median of --repeat runs); the catch-up is "
    "polled every 0.5 s there, as the daemon's /metrics scrapes would otherwise be counted",
    "rss_mb": "the daemon's VmHWM right after the first sync; rss_mb_end is VmHWM at the end",
    "latency_p99_vs_commit": "latency_p99_ms / etcd_commit_p99_ms of the same run: how far the "
    "daemon's tail is above one etcd commit's",
    **{figure: text for figure, (_, text) in edge.TARGETS.items()},
    "history": "history_change_cpu_ratio: change_cpu_ms on the main fleet (each change writes "
    "its history records) / the same cost phase with STATEMANAGER_HISTORY_KEEP=0 (no history) "
    "on a fresh copy of the fleet; history_cold_start_ratio and history_cold_start_cpu_ratio: "
    "cold_start_s and cold_start_cpu_s over those of that copy (every first state written with "
    "its record against none)",
    "scaling_ratio": "daemon CPU seconds (utime+stime) per change event at the largest "
    "--scaling-packages fleet / at the smallest (median of --repeat runs each), same offered "
    "rate and event count, fleets shaped like the main one, each in a fresh etcd; idle costs "
    "over the same durations are included; scaling_ratio_noop the same for no-op events",
}


class BenchError(Exception):
    """A part of the benchmark could not run; the message says which and why."""


def progress(message: str) -> None:
    """Print `message` to stderr as one `bench:` progress line."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(","))


def _pair(text: str) -> tuple[int, int]:
    sizes = sorted(set(_numbers(text)))
    if len(sizes) != 2:
        raise argparse.ArgumentTypeError(f"two different sizes expected, got {text!r}")
    return sizes[0], sizes[1]


def _skips(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part {sorted(unknown)}; choose from {PARTS}")
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the bench's flags to `parser`; size flags default to the full run's, or --quick's,
    values."""
    add = parser.add_argument
    add("--quick", action="store_true", help="small fleet and short steps: a smoke run")
    add("--json", action="store_true", help="print one JSON object instead of a table")
    add("--skip", action="extend", type=_skips, default=[], help=f"comma-separated: {PARTS}")
    add("--containers", type=int, help=f"containers in the fleet ({FULL.containers})")
    add("--models", type=int, help=f"models in the fleet ({FULL.models})")
    add("--packages", type=int, help=f"packages in the fleet ({FULL.packages})")
    add("--rate", type=float, default=500.0, help="offered updates/s for latency (500)")
    add("--latency-seconds", type=float, help=f"latency run length ({FULL.latency_seconds})")
    add("--noop-events", type=int, help=f"no-op updates written ({FULL.noop_events})")
    add("--noop-batch", type=int, default=1, help="no-op puts per transaction (1)")
    add("--txns", type=int, help=f"guarded transactions per ceiling run ({FULL.txns})")
    add("--repeat", type=int, default=3, help="runs of each ceiling; the median is reported")
    add(
        "--step-rates",
        type=_numbers,
        default=(250, 500, 1000, 2000, 4000),
        help="offered change rates, comma-separated (250,500,1000,2000,4000)",
    )
    add("--step-seconds", type=float, help=f"length of each change step ({FULL.step_seconds})")
    add("--scaling-packages", type=_pair, help="the two fleet sizes compared (100,10000)")
    add("--scaling-rate", type=float, help=f"offered rate when scaling ({FULL.scaling_rate})")
    add("--scaling-seconds", type=float, help=f"events per fleet / rate ({FULL.scaling_seconds})")
    add(
        "--burst",
        type=_numbers,
        help="measure only the gRPC service instead: bursts of these many concurrent calls, "
        "comma-separated (e.g. 2000,4000,8000; devtools/burst.py)",
    )
    add("--max-concurrent-rpcs", type=int, help="grpc.max_concurrent_rpcs for --burst")
    add(
        "--subscribers",
        type=int,
        help="only the change latency alone and with this many SubscribeToStateChanges streams",
    )
    add(
        "--lists",
        type=_numbers,
        help="measure only the gRPC service instead: one node's whole list of these many "
        "containers each, comma-separated (e.g. 10000,100000,200000; devtools/lists.py)",
    )


class Rig:
    """One etcd with the fleet loaded and one daemon watching it."""

    def __init__(self, workdir: Path, fleet: Fleet) -> None:
        self.fleet = fleet
        self.etcd = LocalEtcd(workdir / "etcd", free_port(), free_port(), ETCD_ARGS)
        self.metrics_port = free_port()
        self.log_path = workdir / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        """The running daemon's process id (there must be one)."""
        assert self.daemon is not None
        return self.daemon.pid

    def load(self, phase: str, *options: str, timeout: float = 1800.0) -> dict[str, Any]:
        """Run one phase of the load process and return what it printed."""
        command = [
            sys.executable, "-m", "statemanager.devtools.benchload", phase,
            "--endpoint", self.etcd.endpoint,
            "--metrics", f"http://127.0.0.1:{self.metrics_port}/metrics",
            "--pid", str(self.daemon.pid if self.daemon else 0),
            "--containers", str(self.fleet.containers),
            "--models", str(self.fleet.models),
            "--packages", str(self.fleet.packages),
            *options,
        ]  # fmt: skip
        done = subprocess.run(
            command, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise BenchError(
                f"load phase {phase!r} failed with exit code {done.returncode}; "
                f"{self.daemon_state()}"
            )
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result

    def start_daemon(
        self, timeout: float = 900.0, settings: Mapping[str, str] | None = None
    ) -> tuple[float, float, float]:
        """Start the daemon, `settings` added to its environment; returns (seconds until
        /readyz said 200, its CPU seconds by then, VmHWM then in MB)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATEMANAGER_")}
        env.update(settings or {})
        env.update(
            STATEMANAGER_ETCD_ENDPOINTS=self.etcd.endpoint,
            STATEMANAGER_METRICS_ADDRESS=f"127.0.0.1:{self.metrics_port}",
            STATEMANAGER_LOG_FORMAT="json",
            STATEMANAGER_LOG_LEVEL="warning",
            # The 10-minute backstop relist would land inside a long run and be measured.
            STATEMANAGER_ETCD_RESYNC_INTERVAL_SECONDS="86400",
        )
        started = time.monotonic()
        with self.log_path.open("ab") as log_file:
            self.daemon = subprocess.Popen(
                # --config /dev/null: a config file on this machine must not change the run.
                [sys.executable, "-m", "statemanager", "run", "--config", os.devnull],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        url = f"http://127.0.0.1:{self.metrics_port}/readyz"
        while not _answers_200(url):
            waited = time.monotonic() - started
            if self.daemon.poll() is not None or waited > timeout:
                raise BenchError(f"the daemon did not become ready; {self.daemon_state()}")
            # Every 10 ms in the first second (a small node's start is timed to that), then
            # every 50 ms, so a long cold start is not slowed by the requests.
            time.sleep(0.01 if waited < 1.0 else 0.05)
        ready = time.monotonic() - started
        return ready, cpu_seconds(self.daemon.pid), peak_rss_mb(self.daemon.pid)

    def stop_daemon(self) -> None:
        """Stop the daemon if one runs (SIGTERM, then SIGKILL after 30 s) and keep its exit
        code in `exit_code`."""
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.exit_code = self.daemon.returncode
        self.daemon = None

    def log_events(self) -> dict[str, int]:
        """What the daemon logged (warning and above), counted by level and event."""
        seen: Counter[str] = Counter()
        with contextlib.suppress(FileNotFoundError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    seen[f"{entry.get('level')}:{entry.get('event')}"] += 1
                except (json.JSONDecodeError, AttributeError):
                    seen["non-json"] += 1
        return dict(seen)

    def daemon_state(self) -> str:
        """Whether the daemon is still up (a failed load phase is often a daemon that died,
        so give it a moment to finish exiting) and the end of its log."""
        state = "no daemon"
        if self.daemon is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(5)
            code = self.daemon.poll()
            state = "the daemon is running" if code is None else f"the daemon exited with {code}"
        with contextlib.suppress(FileNotFoundError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-5:]
            state += ", its log ends:\n" + "\n".join(lines)
        return state


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running(
    workdir: Path, fleet: Fleet, settings: Mapping[str, str] | None = None
) -> Iterator[tuple[Rig, float, float, float]]:
    """A rig with etcd up, the fleet loaded and the daemon synced (with `settings` in its
    environment): (rig, cold start s, its CPU s, RSS MB).
    etcd and the daemon are stopped on the way out, whatever happened."""
    rig = Rig(workdir, fleet)
    try:
        progress(f"{workdir.name}: starting etcd")
        rig.etcd.start()
        progress(
            f"{workdir.name}: loading {fleet.containers} containers, {fleet.models} models, "
            f"{fleet.packages} packages"
        )
        rig.load("load", "--inflight", "8")
        progress(f"{workdir.name}: starting the daemon")
        cold, cpu, rss = rig.start_daemon(settings=settings)
        progress(
            f"{workdir.name}: daemon ready after {cold:.2f} s ({cpu:.2f} s CPU), "
            f"peak RSS {rss:.0f} MB"
        )
        yield rig, cold, cpu, rss
    finally:
        rig.stop_daemon()
        rig.etcd.stop()


def _settings(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    given = {f.name: getattr(args, f.name) for f in fields(Sizes)}
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _scaled(fleet: Fleet, packages: int) -> Fleet:
    """A fleet of `packages` packages with the same models and containers per package."""
    return Fleet(
        round(fleet.containers * packages / fleet.packages),
        round(fleet.models * packages / fleet.packages),
        packages,
    )


def measure(args: argparse.Namespace, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Every figure of the parts not skipped, with their raw results under `details`."""
    skip = set(args.skip)
    fleet = Fleet(sizes.containers, sizes.models, sizes.packages)
    out: dict[str, Any] = {}
    details: dict[str, Any] = {}
    with running(workdir / "main", fleet) as (rig, cold, cpu, rss):
        out["cold_start_s"], out["cold_start_cpu_s"], out["rss_mb"] = cold, cpu, rss
        for name, parts, step in _MAIN_STEPS:
            if not parts <= skip:
                details[name] = step(rig, args, sizes, out)
        out["rss_mb_end"] = peak_rss_mb(rig.pid)
    if out.get("latency_p99_ms") and out.get("etcd_commit_p99_ms"):
        out["latency_p99_vs_commit"] = out["latency_p99_ms"] / out["etcd_commit_p99_ms"]
    details["daemon_log"] = rig.log_events()
    details["daemon_exit_code"] = rig.exit_code
    if "scaling" not in skip:
        details["scaling"] = _scaling(args, sizes, fleet, workdir, out)
    if "edge" not in skip:
        out.update(edge.measure(running, workdir / "edge", args.quick))
    if "history" not in skip:
        details["no_history"] = _without_history(args, sizes, fleet, workdir, out)
    out["details"] = details
    return out


# A step of the main rig: (rig, args, sizes, figures so far) -> its raw result; it adds its
# figures to the dict it is given.
Step = Callable[[Rig, argparse.Namespace, Sizes, dict[str, Any]], Any]


def _txn(rig: Rig, args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> Any:
    """etcd's guarded-transaction ceiling (`etcd_txn_per_s`)."""
    txn = rig.load("txn", "--count", str(sizes.txns), "--repeat", str(args.repeat))
    out["etcd_txn_per_s"] = txn["median"]
    return txn


def _intake(rig: Rig, args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> Any:
    """No-op intake, paced and by replay, and etcd's watch ceilings beside it."""
    skip = set(args.skip)
    intake = rig.load(
        "intake",
        "--count", str(sizes.noop_events),
        "--batch", str(args.noop_batch),
        "--repeat", str(args.repeat),
        "--inflight", PACED_INFLIGHT,
        *(["--no-noop"] if "noop" in skip else []),
        *(["--no-watch"] if "watch" in skip else []),
    )  # fmt: skip
    out["noop_events_per_s"] = intake.get("noop_per_s")
    out["noop_writer_bound"] = intake.get("writer_bound")
    out["etcd_watch_events_per_s"] = intake.get("replay_per_s")
    if "stopped" in intake:
        out["noop_replay_per_s"] = intake["stopped"]["daemon_per_s"]
        out["etcd_watch_replay_per_s"] = intake["stopped"]["ceiling_per_s"]
    return intake


def _change(rig: Rig, args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> Any:
    """The highest change rate kept up with, stepping up through --step-rates."""
    steps = rig.load(
        "steps",
        "--rates", ",".join(str(r) for r in args.step_rates),
        "--seconds", str(sizes.step_seconds),
        "--inflight", PACED_INFLIGHT,
    )  # fmt: skip
    out["change_events_per_s"] = steps["sustained_per_s"]
    out["change_drain_per_s"] = steps["drain_per_s"]
    if out.get("etcd_txn_per_s"):
        out["change_ratio"] = steps["sustained_per_s"] / out["etcd_txn_per_s"]
    return steps["steps"]


def _latency(rig: Rig, args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> Any:
    """Change latency at --rate, beside etcd's own commit times in the same run."""
    latency = rig.load(
        "latency",
        "--rate", str(args.rate),
        "--seconds", str(sizes.latency_seconds),
        "--inflight", PACED_INFLIGHT,
    )  # fmt: skip
    out.update(
        latency_p50_ms=latency["p50_ms"],
        latency_p99_ms=latency["p99_ms"],
        latency_max_ms=latency["max_ms"],
        etcd_commit_p99_ms=latency["commit_p99_ms"],
        etcd_commit_max_ms=latency["commit_max_ms"],
    )
    return latency


def _cost(rig: Rig, args: argparse.Namespace, sizes: Sizes, out: dict[str, Any]) -> Any:
    """The daemon's CPU per change and per no-op at --rate."""
    cost = rig.load("cost", *_cost_options(args, sizes))
    out["change_cpu_ms"] = cost["change_cpu_per_event_ms"]
    out["noop_cpu_ms"] = cost["noop_cpu_per_event_ms"]
    return cost


# The main rig's steps in the order they run: (its key in `details`, the parts of --skip that
# name it: it runs unless all are skipped, step).
_MAIN_STEPS: tuple[tuple[str, set[str], Step], ...] = (
    ("txn", {"txn"}, _txn),
    ("intake", {"noop", "watch"}, _intake),
    ("change_steps", {"change"}, _change),
    ("latency", {"latency"}, _latency),
    ("cost", {"cost"}, _cost),
)


def _scaling(
    args: argparse.Namespace, sizes: Sizes, fleet: Fleet, workdir: Path, out: dict[str, Any]
) -> dict[str, Any]:
    """The cost per event at the two --scaling-packages fleets: their ratios go into `out`;
    returns each fleet's cost figures."""
    costs = {}
    for packages in sizes.scaling_packages:
        scaled = _scaled(fleet, packages)
        with running(workdir / f"scaling-{packages}", scaled) as (scaling_rig, *_):
            costs[packages] = scaling_rig.load(
                "cost", *_cost_options(args, sizes, sizes.scaling_rate)
            )
    small, large = (costs[p] for p in sizes.scaling_packages)
    out["scaling_ratio"] = large["change_cpu_per_event_ms"] / small["change_cpu_per_event_ms"]
    out["scaling_ratio_noop"] = large["noop_cpu_per_event_ms"] / small["noop_cpu_per_event_ms"]
    return {str(p): c for p, c in costs.items()}


def _without_history(
    args: argparse.Namespace, sizes: Sizes, fleet: Fleet, workdir: Path, out: dict[str, Any]
) -> dict[str, Any]:
    """The cold start and the cost per change of a daemon keeping no history, on a fresh copy
    of the fleet: their ratios to the main run's go into `out`; returns its figures."""
    without = {"STATEMANAGER_HISTORY_KEEP": "0"}
    with running(workdir / "no-history", fleet, without) as (rig, cold, cpu, _):
        figures = {"cold_start_s": cold, "cold_start_cpu_s": cpu}
        if "cost" not in set(args.skip):
            cost = rig.load("cost", *_cost_options(args, sizes))
            figures["change_cpu_ms"] = cost["change_cpu_per_event_ms"]
    if out.get("change_cpu_ms") and figures.get("change_cpu_ms"):
        out["history_change_cpu_ratio"] = out["change_cpu_ms"] / figures["change_cpu_ms"]
    out["history_cold_start_ratio"] = out["cold_start_s"] / cold
    out["history_cold_start_cpu_ratio"] = out["cold_start_cpu_s"] / cpu
    return figures


def _cost_options(args: argparse.Namespace, sizes: Sizes, rate: float | None = None) -> list[str]:
    """The cost phase's flags: --repeat runs of --scaling-seconds at `rate` (--rate when None)."""
    return [
        "--repeat", str(args.repeat),
        "--rate", str(args.rate if rate is None else rate),
        "--seconds", str(sizes.scaling_seconds),
        "--inflight", PACED_INFLIGHT,
        "--poll", str(COST_POLL_SECONDS),
    ]  # fmt: skip


# The footprint targets, per fleet size they are set for: (cold start s, peak RSS MB).
FOOTPRINT_TARGETS = {100_000: (4.0, 150.0), 1_000_000: (30.0, 1024.0)}


def _targets(out: dict[str, Any], args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    """The issue's targets. `met` is null, with `why`, when a figure is missing or cannot be
    judged: measured under other conditions than the target's, or a lower bound that falls
    short of it."""

    def target(value: float | None, limit: float, at_least: bool, unjudged: str = "") -> Any:
        entry: dict[str, Any] = {
            "value": value,
            "target": f"{'>=' if at_least else '<='} {limit:g}",
        }
        if value is None or unjudged:
            entry.update(met=None, why="not measured" if value is None else unjudged)
        else:
            entry["met"] = value >= limit if at_least else value <= limit
        return entry

    watch, noop = out.get("etcd_watch_events_per_s"), out.get("noop_events_per_s")
    intake = noop / watch if noop and watch else None
    lower_bound = out.get("noop_writer_bound") and intake is not None and intake < 0.9
    cold_limit, rss_limit = FOOTPRINT_TARGETS.get(sizes.containers, FOOTPRINT_TARGETS[100_000])
    fleet = (
        ""
        if sizes.containers in FOOTPRINT_TARGETS
        else "the targets are for 100,000 and 1,000,000 containers"
    )
    at_rate = "" if args.rate == 500 else "target is at 500/s"
    scaling = sizes.scaling_packages == (100, 10_000)
    replayed, ceiling = out.get("noop_replay_per_s"), out.get("etcd_watch_replay_per_s")
    return {
        "noop_replay_ratio": target(
            replayed / ceiling if replayed and ceiling else None, 0.9, True
        ),
        "noop_intake_ratio": target(
            intake, 0.9, True, "the writer set the pace: a lower bound" if lower_bound else ""
        ),
        "change_ratio": target(out.get("change_ratio"), 0.8, True),
        "latency_p99_ms": target(out.get("latency_p99_ms"), 5, False, at_rate),
        "latency_max_ms": target(out.get("latency_max_ms"), 20, False, at_rate),
        "change_cpu_ms": target(out.get("change_cpu_ms"), 0.5, False, at_rate),
        "noop_cpu_ms": target(out.get("noop_cpu_ms"), 0.1, False, at_rate),
        "cold_start_s": target(out["cold_start_s"], cold_limit, False, fleet),
        "rss_mb": target(out["rss_mb"], rss_limit, False, fleet),
        "scaling_ratio": target(
            out.get("scaling_ratio"), 1.2, False, "" if scaling else "target is 10,000 vs 100"
        ),
        "latency_p99_vs_commit": target(out.get("latency_p99_vs_commit"), 1.5, False, at_rate),
        **{f: target(out.get(f), limit, False) for f, (limit, _) in edge.TARGETS.items()},
        "history_change_cpu_ratio": target(out.get("history_change_cpu_ratio"), 1.25, False),
        "history_cold_start_ratio": target(out.get("history_cold_start_ratio"), 1.1, False),
    }


def _machine() -> dict[str, Any]:
    etcd = subprocess.run([find_etcd(), "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "etcd": etcd.stdout.splitlines()[0] if etcd.stdout else "unknown",
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
    }


def _table(result: dict[str, Any]) -> str:
    targets = result["targets"]
    figures = {name: result[name] for name in FIGURES}
    figures["noop_intake_ratio"] = targets["noop_intake_ratio"]["value"]
    figures["noop_replay_ratio"] = targets["noop_replay_ratio"]["value"]
    rows = [("figure", "value", "target", "met")]
    for name, value in figures.items():
        t = targets.get(name, {})
        met = {True: "yes", False: "NO", None: f"? {t.get('why')}"}[t.get("met")] if t else ""
        if value is None or isinstance(value, bool):
            text = {None: "-", True: "yes", False: "no"}[value]
        else:
            text = f"{value:,.3f}".rstrip("0").rstrip(".")
        rows.append((name, text, t.get("target", ""), met))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += ["", "how each figure is measured:"]
    lines += [f"  {k}: {v}" for k, v in result["notes"].items()]
    lines += [f"machine: {json.dumps(result['machine'])}"]
    return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C, so etcd and the daemon are stopped


SERVICE_FLEET = Fleet(100, 20, 5)  # the fleet behind --burst and --lists


@contextlib.contextmanager
def _serving(
    args: argparse.Namespace, workdir: Path, fleet: Fleet = SERVICE_FLEET
) -> Iterator[tuple[Rig, str]]:
    """A rig whose daemon serves the gRPC service, and the service's address."""
    port = free_port()
    settings = {
        "STATEMANAGER_GRPC_ENABLED": "true",
        "STATEMANAGER_GRPC_ADDRESS": f"127.0.0.1:{port}",
    }
    if args.max_concurrent_rpcs:
        settings["STATEMANAGER_GRPC_MAX_CONCURRENT_RPCS"] = str(args.max_concurrent_rpcs)
    with running(workdir, fleet, settings) as (rig, *_):
        yield rig, f"127.0.0.1:{port}"


def _bursts(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The largest burst the gRPC service answers in full, of the sizes asked for."""
    with _serving(args, workdir) as (_, target):
        progress(f"bursts of {', '.join(map(str, args.burst))} concurrent calls")
        measured = asyncio.run(
            burst.measure(target, args.burst, SERVICE_FLEET.model_name(0), "Running")
        )
    rows = [
        {"calls": size, "seconds": round(b.seconds, 2), "full": b.full, **b.outcomes}
        for size, b in measured
    ]
    largest = max((size for size, b in measured if b.full), default=0)
    return {"largest_full_burst": largest, "bursts": rows, "machine": _machine()}


def _lists(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The largest node list the gRPC service stores, of the sizes asked for, and how fast."""
    models = [SERVICE_FLEET.model_name(j) for j in range(SERVICE_FLEET.models)]
    with _serving(args, workdir) as (rig, target):
        progress(f"node lists of {', '.join(map(str, args.lists))} containers")
        measured = asyncio.run(
            lists.measure(target, rig.etcd.endpoint, args.lists, models, "/model/")
        )
    rows = [dataclasses.asdict(m) for m in measured]
    largest = max((m.containers for m in measured if m.refused is None), default=0)
    return {"largest_list_stored": largest, "lists": rows, "machine": _machine()}


def _subscribed(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The change latency alone, then with `--subscribers` streams reading every transition
    (devtools/subscribers.py)."""
    sizes = _settings(args)
    options = ["--rate", str(args.rate), "--seconds", str(sizes.latency_seconds)]
    options += ["--inflight", PACED_INFLIGHT]
    with _serving(args, workdir, Fleet(*subscribers.FLEET)) as (rig, target):
        progress("change latency without subscribers")
        cpu = cpu_seconds(rig.pid)
        alone = rig.load("latency", *options)
        alone["daemon_cpu_s"] = cpu_seconds(rig.pid) - cpu
        progress(f"change latency with {args.subscribers} subscribers")
        run = functools.partial(rig.load, "latency", *options)
        cpu = cpu_seconds(rig.pid)
        subscribed = asyncio.run(subscribers.measure(target, args.subscribers, run))
        subscribed.latency["daemon_cpu_s"] = cpu_seconds(rig.pid) - cpu
    figures = ("p50_ms", "p99_ms", "max_ms", "commit_p99_ms", "daemon_cpu_s")
    return {
        "subscribers": args.subscribers,
        "alone": {f: alone[f] for f in figures},
        "subscribed": {f: subscribed.latency[f] for f in figures},
        "received_min": subscribed.received_min,
        "received_max": subscribed.received_max,
        "ended_by_the_daemon": subscribed.ended,
        "machine": _machine(),
    }


def _full(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every figure of the full benchmark, with its targets and what it ran on."""
    sizes = _settings(args)
    started = time.monotonic()
    machine = _machine()
    measured = measure(args, sizes, workdir)
    details = measured.pop("details")
    result: dict[str, Any] = dict.fromkeys(FIGURES)
    result.update(measured)
    result["targets"] = _targets(measured, args, sizes)
    result["sizes"] = {f.name: getattr(sizes, f.name) for f in fields(Sizes)}
    result["sizes"].update(latency_rate=args.rate, noop_batch=args.noop_batch, quick=args.quick)
    result["machine"] = machine
    result["seconds"] = round(time.monotonic() - started, 1)
    result["notes"] = NOTES
    result["details"] = details
    return result


def _burst_table(result: dict[str, Any]) -> str:
    rows = [json.dumps(row) for row in result["bursts"]]
    return "\n".join([*rows, f"largest burst answered in full: {result['largest_full_burst']}"])


def _lists_table(result: dict[str, Any]) -> str:
    rows = [json.dumps(row) for row in result["lists"]]
    return "\n".join([*rows, f"largest list stored: {result['largest_list_stored']}"])


def main(args: argparse.Namespace) -> int:
    """Run the benchmark `args` ask for and print its result; 0 when it ran, 1 when a part
    failed, 130 when interrupted. etcd, the daemon and the work directory never outlive it."""
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="statemanager-bench-"))
    try:
        if args.burst:
            result = _bursts(args, workdir)
        elif args.lists:
            result = _lists(args, workdir)
        elif args.subscribers:
            result = _subscribed(args, workdir)
        else:
            result = _full(args, workdir)
    except KeyboardInterrupt:
        progress("interrupted; etcd and the daemon are stopped")
        return 130
    except (BenchError, RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        progress(f"failed: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    table = _burst_table if args.burst else _lists_table if args.lists else _table
    as_json = args.json or args.subscribers  # a handful of figures: the JSON is the table
    print(json.dumps(result, indent=2) if as_json else table(result))
    return 0
