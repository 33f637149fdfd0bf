"""The load side of `statemanager bench`: `python -m statemanager.devtools.benchload PHASE ...`.

It runs as a process of its own, as node agents do, so that writing load and timing the
daemon never share an event loop or a GIL with the daemon or with the bench driver. Every
time it reports is taken on this process's one monotonic clock. Each phase prints one JSON
object on stdout; progress goes to stderr.

The synthetic fleet is fully determined by its three sizes: container i belongs to model
i mod M, model j to package j mod P. Container j (j < M) is model j's *flip* container: a
state-changing update toggles it between running and exited 137, which toggles model j
between Running and Failed. Containers M and above are only ever rewritten stats-only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, count, islice
from typing import Any

from statemanager.adapters.etcd import EtcdClient
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import TXN_LIMITS, Guard, Put, WatchBatch
from statemanager.core.states import ModelState

POLL_SECONDS = 0.02  # how often the daemon's /metrics is scraped while waiting for it
# ... when only its CPU time is measured: a scrape costs the daemon about as much as a hundred
# events, so 50 scrapes a second would be counted as its cost per event (Prometheus scrapes it
# every 15-60 s); waiting up to this long for the catch-up adds only the daemon's idle cost.
COST_POLL_SECONDS = 0.5
# The replay's catch-up is polled this often: a 2.5% resolution on a 4 s catch-up, for about
# as large a share of the daemon's CPU spent answering the scrapes.
REPLAY_POLL_SECONDS = 0.1
REPLAY_BATCH = 64  # no-op puts per transaction while the daemon is stopped: only the history counts
SETTLE_SECONDS = 300.0  # longest wait for the daemon to go quiet before a phase
# A daemon caught up this soon after the last write was waiting for the writer, not behind it.
WRITER_BOUND_SECONDS = 0.1
LAST_SEEN = "statemanager_last_seen_revision"
QUEUE_DEPTH = "statemanager_workqueue_depth"
# Outside every prefix the daemon watches, so the etcd ceiling costs the daemon nothing.
CEILING_KEY = b"/statemanager-bench/txn-ceiling"

# (index of the transaction, time it was sent, time its response arrived)
OnDone = Callable[[int, float, float], None]


@dataclass(frozen=True)
class Fleet:
    """A synthetic fleet fully determined by its three sizes (the module docstring says how
    containers, models and packages relate)."""

    containers: int
    models: int
    packages: int
    layout: KeyLayout = field(default_factory=KeyLayout)

    def __post_init__(self) -> None:
        if not 0 < self.packages <= self.models < self.containers:
            raise ValueError("need 0 < packages <= models < containers")

    def package_name(self, p: int) -> str:
        """The name of package `p`."""
        return f"bench-p{p:05d}"

    def model_name(self, j: int) -> str:
        """The name of model `j`, which belongs to package j mod packages."""
        return f"{self.package_name(j % self.packages)}.m{j:06d}"

    def container_key(self, i: int) -> bytes:
        """The etcd key of container `i`'s info."""
        return f"{self.layout.containers}{i:064x}".encode()

    def model_state_key(self, j: int) -> bytes:
        """The etcd key the daemon writes model `j`'s state to."""
        return f"{self.layout.model_states}{self.model_name(j)}/state".encode()

    def container(self, i: int, dead: bool = False, tick: int = 0) -> Put:
        """Container info as a node agent writes it (docs/contract.md, Reads), with a small
        stats blob."""
        j = i % self.models
        model = self.model_name(j)
        state = {
            "Status": "exited" if dead else "running",
            "ExitCode": "137" if dead else "0",
            "OOMKilled": "false",
            "Pid": "0" if dead else str(1000 + i % 30000),
            "StartedAt": "2025-01-01T00:00:00Z",
        }
        doc = {
            "id": f"{i:064x}",
            "names": [f"{model}_app"],
            "state": state,
            "annotation": {
                "io.pullpiri.annotations.model": model,
                "io.pullpiri.annotations.package": self.package_name(j % self.packages),
            },
            "stats": {
                "cpu_ns": str(tick * 7919 + i),
                "mem_bytes": str(50_000_000 + tick % 997),
                "rx_bytes": str(tick * 1500),
                "tx_bytes": str(tick * 900),
                "read_at": str(tick),
            },
        }
        return Put(self.container_key(i), json.dumps(doc, separators=(",", ":")).encode())

    def specs(self) -> Iterator[Put]:
        """Every package and model spec of the fleet, packages first."""
        for p in range(self.packages):
            items = "".join(
                f"\n    - {{name: {self.model_name(j)}, node: node-a}}"
                for j in range(p, self.models, self.packages)
            )
            name = self.package_name(p)
            doc = f"kind: Package\nmetadata: {{name: {name}}}\nspec:\n  models:{items}\n"
            yield Put(f"{self.layout.packages}{name}".encode(), doc.encode())
        for j in range(self.models):
            name = self.model_name(j)
            doc = (
                f"kind: Model\nmetadata: {{name: {name}}}\n"
                "spec:\n  containers:\n    - {name: app, image: registry.local/bench/app:1.0}\n"
            )
            yield Put(f"{self.layout.models}{name}".encode(), doc.encode())

    def noop(self, k: int, tick: int) -> Put:
        """The k-th stats-only rewrite: a container that is never flipped, always running."""
        return self.container(self.models + k % (self.containers - self.models), tick=tick)


def chunks(puts: Iterable[Put], size: int) -> Iterator[list[Put]]:
    """`puts` in lists of `size` (the last one shorter), in order."""
    it = iter(puts)
    while chunk := list(islice(it, size)):
        yield chunk


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def progress(message: str) -> None:
    """Print `message` to stderr as one `benchload:` progress line."""
    print(f"benchload: {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields after the parenthesised name)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The peak resident set size (VmHWM) of process `pid`, in MB."""
    return status_mb(pid, "VmHWM")


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (`VmHWM`, `VmRSS`, …), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page (`name value` lines)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


async def offer(
    client: EtcdClient,
    txns: Iterable[Sequence[Put]],
    rate: float | None,
    inflight: int,
    on_done: OnDone | None = None,
) -> tuple[float, float, int, int]:
    """Commit each group of puts as one transaction, `inflight` at a time, the i-th started
    no earlier than i/rate seconds in (rate None: as fast as possible).

    Returns (start time, end time, newest revision written, transactions).
    """
    slots = asyncio.Semaphore(inflight)
    newest = 0

    async def one(i: int, ops: Sequence[Put]) -> None:
        nonlocal newest
        sent = time.perf_counter()
        try:
            result = await client.txn((), ops)
        finally:
            slots.release()
        newest = max(newest, result.revision)
        if on_done is not None:
            on_done(i, sent, time.perf_counter())

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for i, ops in enumerate(txns):
        if rate is not None:
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        await slots.acquire()
        tasks.append(asyncio.create_task(one(i, ops)))
    await asyncio.gather(*tasks)
    return started, time.perf_counter(), newest, len(tasks)


class Daemon:
    """What the load process can see of the daemon: its /metrics, its CPU time, etcd."""

    def __init__(
        self, client: EtcdClient, fleet: Fleet, metrics_url: str, pid: int, poll: float
    ) -> None:
        self.client = client
        self.fleet = fleet
        self.metrics_url = metrics_url
        self.pid = pid
        self.poll = poll  # seconds between two scrapes while waiting for a catch-up

    async def metrics(self) -> dict[str, float]:
        """One scrape of the daemon's /metrics (unlabelled samples), off the event loop."""
        return await asyncio.to_thread(scrape, self.metrics_url)

    async def model_states(self) -> dict[bytes, bytes]:
        """Every model state key in etcd now, with its value."""
        _, listing = await self.client.snapshot([self.fleet.layout.model_states], page_size=10_000)
        return {kv.key: kv.value for kv in next(iter(listing.values()))}

    async def settle(self) -> None:
        """Wait until the daemon has nothing queued and has seen nothing new for 0.5 s, so a
        phase does not start while the previous one is still being absorbed."""
        quiet_since, last = time.perf_counter(), -1.0
        async with asyncio.timeout(SETTLE_SECONDS):
            while True:
                m = await self.metrics()
                now = time.perf_counter()
                if m[QUEUE_DEPTH] != 0 or m[LAST_SEEN] != last:
                    quiet_since, last = now, m[LAST_SEEN]
                elif now - quiet_since >= 0.5:
                    return
                await asyncio.sleep(0.05)

    async def caught_up(self, revision: int, expected: dict[bytes, bytes] | None) -> float:
        """The time the daemon was confirmed to have seen `revision`, emptied its queue and (if
        given) written the expected model states: an upper bound, late by at most one poll and
        the checks' own duration. Callers bound the wait with asyncio.timeout."""
        while True:
            m = await self.metrics()
            if m[LAST_SEEN] >= revision and m[QUEUE_DEPTH] == 0:
                if expected is None:
                    return time.perf_counter()
                states = await self.model_states()
                if all(states.get(k) == v for k, v in expected.items()):
                    return time.perf_counter()
            await asyncio.sleep(self.poll)


class Toggler:
    """State-changing updates: each flips one model between Running and Failed, visiting the
    models round-robin so consecutive updates land on different models and packages."""

    def __init__(self, fleet: Fleet, states: dict[bytes, bytes]) -> None:
        self.fleet = fleet
        self.failed = {
            j for j in range(fleet.models) if states.get(fleet.model_state_key(j)) == b"Failed"
        }
        self.expected: dict[bytes, bytes] = {}
        self._next = count()
        self._tick = count(1)

    def take(self, n: int) -> list[tuple[int, Put]]:
        """The next n updates as (model, put); `expected` then holds the states they imply."""
        updates = []
        for _ in range(n):
            j = next(self._next) % self.fleet.models
            dead = j not in self.failed
            self.failed.symmetric_difference_update({j})
            state = ModelState.FAILED if dead else ModelState.RUNNING
            self.expected[self.fleet.model_state_key(j)] = state.value.encode()
            updates.append((j, self.fleet.container(j, dead=dead, tick=next(self._tick))))
        return updates


# -- phases --------------------------------------------------------------------------------


async def phase_load(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """Write the whole fleet: transactions of up to 128 puts, several in flight."""
    fleet = daemon.fleet
    puts = (fleet.container(i) for i in range(fleet.containers))
    keys = fleet.packages + fleet.models + fleet.containers
    started, ended, revision, txns = await offer(
        daemon.client, chunks(chain(fleet.specs(), puts), TXN_LIMITS.max_ops), None, args.inflight
    )
    progress(f"loaded {keys} keys in {txns} transactions, {ended - started:.1f} s")
    return {"keys": keys, "seconds": ended - started, "revision": revision}


async def phase_txn(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """etcd's ceiling for the daemon's write pattern: one guarded put in flight at a time."""
    client = daemon.client
    rates = []
    for _ in range(args.repeat):
        current = await client.get(CEILING_KEY)
        revision = current.mod_revision if current is not None else 0
        started = time.perf_counter()
        for i in range(args.count):
            value = (ModelState.FAILED if i % 2 else ModelState.RUNNING).value.encode()
            result = await client.txn([Guard(CEILING_KEY, revision)], [Put(CEILING_KEY, value)])
            if not result.succeeded:
                raise RuntimeError("the ceiling key changed underneath the benchmark")
            revision = result.revision
        rates.append(args.count / (time.perf_counter() - started))
    progress(f"etcd guarded txn/s: {', '.join(f'{r:.0f}' for r in rates)}")
    return {"rates": rates, "median": statistics.median(rates)}


async def phase_intake(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """No-op intake, then the watch ceiling replaying the very revisions the daemon absorbed.

    The writer shares the machine with etcd and the daemon; when the daemon is caught up
    within a poll of the last write it was waiting for the writer (`writer_bound`), and the
    rate is a lower bound of what it can absorb.
    """
    fleet, client, n = daemon.fleet, daemon.client, args.count
    await daemon.settle()
    first = await client.revision() + 1
    cpu_before = cpu_seconds(daemon.pid)
    tick = int(time.time())  # a fresh stats blob: a real rewrite, as a node agent makes
    puts = (fleet.noop(k, tick) for k in range(n))
    started, written, last, _ = await offer(client, chunks(puts, args.batch), None, args.inflight)
    result: dict[str, Any] = {
        "events": n,
        "batch": args.batch,
        "write_per_s": n / (written - started),
    }
    if not args.no_noop:
        async with asyncio.timeout(args.timeout):
            done = await daemon.caught_up(last, None)
        result["noop_per_s"] = n / (done - started)
        result["writer_bound"] = done - written < WRITER_BOUND_SECONDS
        result["daemon_cpu_per_event_ms"] = (cpu_seconds(daemon.pid) - cpu_before) / n * 1e3
        progress(
            f"no-op intake {result['noop_per_s']:.0f}/s "
            f"(written at {result['write_per_s']:.0f}/s, writer-bound: {result['writer_bound']})"
        )
    if not args.no_watch:
        runs = [
            await _replay(client, fleet.layout.containers, first, last) for _ in range(args.repeat)
        ]
        result["replay_rates"] = [rate for rate, _ in runs]
        result["replay_per_s"] = statistics.median(result["replay_rates"])
        result["replay_cpu_per_event_ms"] = statistics.median(cpu for _, cpu in runs)
        progress(f"watch replay events/s: {', '.join(f'{r:.0f}' for r in result['replay_rates'])}")
    if not (args.no_noop or args.no_watch):
        result["stopped"] = await _stopped_replay(daemon, args)
    return result


async def _stopped_replay(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """No-op intake by replay: the daemon is stopped (SIGSTOP) while N no-ops are written,
    then resumed (SIGCONT) and timed until it has seen the last one; beside it, the same
    revisions replayed from etcd's history by EtcdClient.watch in this process (the ceiling)."""
    fleet, client, n = daemon.fleet, daemon.client, args.count
    await daemon.settle()
    first = await client.revision() + 1
    tick = int(time.time()) + 1
    puts = (fleet.noop(k, tick) for k in range(n))
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        _, _, last, _ = await offer(client, chunks(puts, REPLAY_BATCH), None, args.inflight)
    finally:
        resumed = time.perf_counter()
        os.kill(daemon.pid, signal.SIGCONT)
    daemon.poll, poll = REPLAY_POLL_SECONDS, daemon.poll
    try:
        async with asyncio.timeout(args.timeout):
            done = await daemon.caught_up(last, None)
    finally:
        daemon.poll = poll
    runs = [await _replay(client, fleet.layout.containers, first, last) for _ in range(args.repeat)]
    result = {
        "events": n,
        "batch": REPLAY_BATCH,
        "daemon_per_s": n / (done - resumed),
        "ceiling_rates": [rate for rate, _ in runs],
        "ceiling_per_s": statistics.median(rate for rate, _ in runs),
    }
    progress(
        f"replay after a stop: daemon {result['daemon_per_s']:.0f}/s, "
        f"etcd watch {result['ceiling_per_s']:.0f}/s"
    )
    return result


async def _replay(client: EtcdClient, prefix: str, first: int, last: int) -> tuple[float, float]:
    """(events per second, CPU milliseconds per event) of one EtcdClient.watch replaying
    revisions first..last from etcd's history into this process."""
    events = 0
    started, cpu_before = time.perf_counter(), time.process_time()
    stream = client.watch({prefix: first}, progress_every=60.0)
    try:
        async for batch in stream:
            events += len(batch.events)
            if batch.events and batch.revision >= last:  # not a progress answer
                break
    finally:
        await stream.aclose()
    cpu = (time.process_time() - cpu_before) / events * 1e3
    return events / (time.perf_counter() - started), cpu


async def phase_steps(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """Offer state-changing updates at rising rates until the daemon no longer keeps up."""
    await daemon.settle()
    toggler = Toggler(daemon.fleet, await daemon.model_states())
    steps: list[dict[str, Any]] = []
    for rate in args.rates:
        n = max(1, round(rate * args.seconds))
        updates = toggler.take(n)
        cpu_before = cpu_seconds(daemon.pid)
        started, written, last, _ = await offer(
            daemon.client, ([put] for _, put in updates), rate, args.inflight
        )
        done: float | None = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                done = await daemon.caught_up(last, toggler.expected)
        achieved = n / (written - started)
        step: dict[str, Any] = {
            "offered_per_s": rate,
            "achieved_per_s": achieved,
            "events": n,
            "writer_limited": achieved < 0.9 * rate,
            "lag_s": None if done is None else done - written,
            "drain_per_s": None if done is None else n / (done - started),
            "daemon_cpu_per_event_ms": (cpu_seconds(daemon.pid) - cpu_before) / n * 1e3,
        }
        step["kept_up"] = step["lag_s"] is not None and step["lag_s"] <= args.lag
        steps.append(step)
        lag = "never" if done is None else f"{step['lag_s']:.2f} s"
        progress(f"changes at {rate}/s (achieved {achieved:.0f}/s): caught up after {lag}")
        toggler.expected.clear()
        if not step["kept_up"] or step["writer_limited"]:
            break
    kept = [s for s in steps if s["kept_up"] and not s["writer_limited"]]
    return {
        "steps": steps,
        "sustained_per_s": max((s["achieved_per_s"] for s in kept), default=0.0),
        "drain_per_s": steps[-1]["drain_per_s"],
    }


class _Arrivals:
    """When each update's container put returned and its model state arrived on a watch, on
    this process's clock, and each put's own commit time."""

    def __init__(self, fleet: Fleet, updates: list[tuple[int, Put]], expected: dict[bytes, bytes]):
        self.fleet, self.updates, self.expected = fleet, updates, expected
        self.put_at: dict[bytes, float] = {}
        self.seen_at: dict[bytes, float] = {}
        self.commits: list[float] = []  # each container put's send to answer (ms)
        self.created = asyncio.Event()  # so the watch's creation is not counted as latency

    def on_put(self, i: int, sent: float, at: float) -> None:
        """`offer`'s callback: update i's put, sent at `sent`, was answered at `at`."""
        self.put_at[self.fleet.model_state_key(self.updates[i][0])] = at
        self.commits.append((at - sent) * 1e3)

    async def watch(self, stream: AsyncGenerator[WatchBatch, None]) -> None:
        """Note each expected state's first arrival; returns once all of them arrived."""
        async for batch in stream:
            at = time.perf_counter()
            self.created.set()
            for ev in batch.events:
                if ev.value is not None and self.expected.get(ev.key) == ev.value:
                    self.seen_at.setdefault(ev.key, at)
            if len(self.seen_at) == len(self.updates):
                return

    def summary(self, rate: float) -> dict[str, Any]:
        """Latency percentiles beside etcd's own commit times; raises when nothing arrived."""
        seen, put = self.seen_at, self.put_at
        latencies = [(seen[k] - put[k]) * 1e3 for k in seen if k in put]
        if not latencies:
            raise RuntimeError("no model state change arrived")
        return {
            "rate": rate,
            "samples": len(latencies),
            "missing": len(self.updates) - len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "max_ms": max(latencies),
            # etcd's own commit time under the same load: the daemon's write is one such
            # commit, so these bound from below what the latency can be on this etcd.
            "commit_p50_ms": percentile(self.commits, 50),
            "commit_p99_ms": percentile(self.commits, 99),
            "commit_max_ms": max(self.commits),
        }


async def phase_latency(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """Container put returned → the model state it changes arrives on a watch, per model."""
    fleet, client = daemon.fleet, daemon.client
    await daemon.settle()
    toggler = Toggler(fleet, await daemon.model_states())
    n = min(round(args.rate * args.seconds), fleet.models)  # each model changes once
    updates = toggler.take(n)
    arrivals = _Arrivals(fleet, updates, toggler.expected)
    stream = client.watch({fleet.layout.model_states: await client.revision() + 1}, 60.0)
    watcher = asyncio.create_task(arrivals.watch(stream))
    try:
        await asyncio.wait_for(arrivals.created.wait(), args.timeout)
        puts = ([put] for _, put in updates)
        await offer(client, puts, args.rate, args.inflight, arrivals.on_put)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                await watcher  # ends once every expected state arrived
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await stream.aclose()
    result = arrivals.summary(args.rate)
    progress(
        f"latency at {args.rate}/s: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
        f" (etcd's own commits: p99 {result['commit_p99_ms']:.1f} ms)"
    )
    return result


async def phase_cost(daemon: Daemon, args: argparse.Namespace) -> dict[str, Any]:
    """Daemon CPU milliseconds per event, for changes and for no-ops, at one fixed offered
    rate; each measured --repeat times, the median reported."""
    fleet = daemon.fleet
    await daemon.settle()
    toggler = Toggler(fleet, await daemon.model_states())
    n = max(1, round(args.rate * args.seconds))
    ticks = count(int(time.time()))
    changes, noops = [], []
    for _ in range(args.repeat):
        puts = [put for _, put in toggler.take(n)]
        changes.append(await _cpu_per_event(daemon, puts, toggler.expected, args))
        tick = next(ticks)
        noops.append(
            await _cpu_per_event(daemon, [fleet.noop(k, tick) for k in range(n)], None, args)
        )
    result = {
        "events": n,
        "rate": args.rate,
        "change_cpu_per_event_ms": statistics.median(changes),
        "noop_cpu_per_event_ms": statistics.median(noops),
        "change_runs": changes,
        "noop_runs": noops,
    }
    progress(
        f"{fleet.packages} packages: {result['change_cpu_per_event_ms']:.3f} ms CPU per change, "
        f"{result['noop_cpu_per_event_ms']:.3f} ms per no-op"
    )
    return result


async def _cpu_per_event(
    daemon: Daemon, puts: list[Put], expected: dict[bytes, bytes] | None, args: argparse.Namespace
) -> float:
    cpu_before = cpu_seconds(daemon.pid)
    _, _, last, _ = await offer(daemon.client, ([p] for p in puts), args.rate, args.inflight)
    async with asyncio.timeout(args.timeout):
        await daemon.caught_up(last, expected)
    return (cpu_seconds(daemon.pid) - cpu_before) / len(puts) * 1e3


PHASES: dict[str, Callable[[Daemon, argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "load": phase_load,
    "txn": phase_txn,
    "intake": phase_intake,
    "steps": phase_steps,
    "latency": phase_latency,
    "cost": phase_cost,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m statemanager.devtools.benchload")
    parser.add_argument("phase", choices=PHASES)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--metrics", default="", help="the daemon's /metrics URL")
    parser.add_argument("--pid", type=int, default=0, help="the daemon's process id")
    parser.add_argument("--containers", type=int, required=True)
    parser.add_argument("--models", type=int, required=True)
    parser.add_argument("--packages", type=int, required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="no-op puts per transaction")
    parser.add_argument("--inflight", type=int, default=8)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], default=[])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--lag", type=float, default=1.0, help="catch-up limit after a step")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--no-noop", action="store_true")
    parser.add_argument("--no-watch", action="store_true")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="catch-up poll seconds")
    return parser


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    fleet = Fleet(args.containers, args.models, args.packages)
    client = EtcdClient([args.endpoint], timeout=30.0)
    try:
        return await PHASES[args.phase](
            Daemon(client, fleet, args.metrics, args.pid, args.poll), args
        )
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the phase `argv` names and print its result as one JSON line; 0 when it ran."""
    args = _parser().parse_args(argv)
    print(json.dumps(asyncio.run(_main(args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
