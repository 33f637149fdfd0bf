"""Fault harness (issue 3): random container churn while etcd or the daemon is killed, paused or
compacted; afterwards the written states must equal an oracle computed from the final keys.

The oracle is independent of the daemon's index: it groups containers by their model
annotation itself and applies only the rule table (statemanager.rules), which the unit tests
pin row by row.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import yaml

from statemanager.localetcd import LocalEtcd
from statemanager.rules import model_verdict, package_verdict
from statemanager.states import ContainerClass, classify, parse_status

from conftest import Daemon, Etcd, eventually

MODELS = [f"m{i:02d}" for i in range(60)]
PACKAGES = [f"p{i:02d}" for i in range(15)]
CONTAINERS = [f"c{i:03d}" for i in range(300)]
STATUSES = [
    {"Status": "running"},
    {"Status": "running"},
    {"Status": "exited", "ExitCode": "0"},
    {"Status": "exited", "ExitCode": "137"},
    {"Status": "dead"},
    {"Status": "paused"},
    {"Status": "created"},
    {"Status": "running", "OOMKilled": "true"},
]


class Churn:
    """Random puts and deletes of containers (and a few package rewrites) until stopped.
    Errors while etcd is down are absorbed: what counts is what etcd holds at the end."""

    def __init__(self, etcd: Etcd, seed: int) -> None:
        self.etcd = etcd
        self.rng = random.Random(seed)
        self.ops = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        for p in PACKAGES:
            await self.etcd.package(p, self.rng.sample(MODELS[:50], 6))  # m50..m59 unlisted
        for c in CONTAINERS:
            await self.put_container(c)

    async def put_container(self, cid: str) -> None:
        model = MODELS[int(cid[1:]) % len(MODELS)]
        doc = {
            "id": cid,
            "names": [f"{model}_{cid}"],
            "state": self.rng.choice(STATUSES),
            "annotation": {"io.pullpiri.annotations.model": model},
            "stats": {"cpu": self.rng.random()},
        }
        await self.etcd.put(self.etcd.layout.containers + cid, json.dumps(doc))

    async def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.02:
            await self.etcd.package(self.rng.choice(PACKAGES), self.rng.sample(MODELS[:50], 6))
        elif roll < 0.2:
            await self.etcd.delete(self.etcd.layout.containers + self.rng.choice(CONTAINERS))
        else:
            await self.put_container(self.rng.choice(CONTAINERS))
        self.ops += 1

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.step()
            except Exception:  # etcd down or restarting: keep trying
                await asyncio.sleep(0.1)
            await asyncio.sleep(0)

    def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def oracle(etcd: Etcd) -> dict[str, str]:
    """Expected state keys and values, from the container and package keys alone."""
    counts: dict[str, Counter[ContainerClass]] = {}
    for kv in await etcd.client.get_prefix(etcd.layout.containers.encode()):
        doc = json.loads(kv.value)
        state = doc["state"]
        cls = classify(
            parse_status(state["Status"]), state.get("ExitCode"), state.get("OOMKilled") == "true"
        )
        model = doc["annotation"]["io.pullpiri.annotations.model"]
        counts.setdefault(model, Counter())[cls] += 1
    packages: dict[str, list[str]] = {}
    for kv in await etcd.client.get_prefix(etcd.layout.packages.encode()):
        spec = yaml.safe_load(kv.value)
        packages[spec["metadata"]["name"]] = [m["name"] for m in spec["spec"]["models"]]
    models = set(counts) | {m for ms in packages.values() for m in ms}
    model_states = {m: model_verdict(counts.get(m, Counter())).state for m in models}
    expected = {f"{etcd.layout.model_states}{m}/state": s for m, s in model_states.items()}
    for p, ms in packages.items():
        verdict = package_verdict(model_states[m] for m in ms)
        expected[f"{etcd.layout.package_states}{p}/state"] = verdict.state
    return expected


async def converged(etcd: Etcd, timeout: float = 60.0) -> float:
    """Wait until etcd's state keys equal the oracle exactly; return the seconds it took."""
    started = time.monotonic()
    last: dict[str, object] = {}

    async def check() -> bool:
        try:
            want, have = await oracle(etcd), await etcd.states()
        except Exception:  # etcd may still be coming back
            return False
        last["diff"] = {k: (want.get(k), have.get(k)) for k in want.keys() | have.keys()
                        if want.get(k) != have.get(k)}  # fmt: skip
        return want == have

    try:
        await eventually(check, timeout, "states equal to the oracle")
    except AssertionError:
        raise AssertionError(f"differences (oracle, etcd): {last.get('diff')}") from None
    return time.monotonic() - started


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_etcd_killed_and_restarted_during_churn(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """SIGKILL etcd five times during churn: the daemon resumes and ends with zero differences."""
    churn = Churn(private, seed=1)
    await churn.setup()
    daemon = make_daemon()
    daemon.start()
    await daemon.wait_synced()
    churn.start()
    recoveries = []
    for _ in range(5):
        await asyncio.sleep(1.0)
        server.kill()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        await asyncio.sleep(1.0)
    await churn.stop()
    recoveries.append(await converged(private))
    print(
        f"\netcd restarts: {churn.ops} churn ops; states right {recoveries[0]:.2f} s after churn stopped"
    )
    assert daemon.events("watch_broken"), "the test should have broken the watch"


async def test_daemon_paused_while_history_is_compacted(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """SIGSTOP the daemon, churn with deletions, compact past its revision and restart etcd so
    its watch must resume from a compacted revision; SIGCONT: it relists and diffs."""
    churn = Churn(private, seed=2)
    await churn.setup()
    daemon = make_daemon()
    daemon.start()
    await daemon.wait_synced()
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGSTOP)
    for _ in range(400):
        await churn.step()
    for cid in CONTAINERS[:40]:  # deletions the daemon must notice by diffing
        await private.delete(private.layout.containers + cid)
    revision = await private.put(private.layout.containers + "c000", '{"state": {}}')
    await private.delete(private.layout.containers + "c000")
    await private.client.compact(revision)
    server.kill()  # the daemon's stream breaks; resuming it needs the compacted history
    await asyncio.to_thread(server.start)
    daemon.process.send_signal(signal.SIGCONT)
    took = await converged(private)
    print(f"\ncompaction: states right {took:.2f} s after SIGCONT")

    async def relisted() -> bool:
        return bool(daemon.events("watch_compacted"))

    await eventually(relisted, 10, "the compaction to be noticed")


async def test_daemon_killed_repeatedly_during_churn(
    private: Etcd, make_daemon: type[Daemon]
) -> None:
    """SIGKILL the daemon five times during churn and restart it: zero differences at the end."""
    churn = Churn(private, seed=3)
    await churn.setup()
    churn.start()
    for _ in range(5):
        daemon = make_daemon()
        daemon.start()
        await asyncio.sleep(1.5)
        daemon.kill()
    final = make_daemon()
    final.start()
    await final.wait_synced()
    await churn.stop()
    took = await converged(private)
    print(f"\ndaemon kills: {churn.ops} churn ops; states right {took:.2f} s after churn stopped")


async def test_silent_watch_is_detected(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """etcd frozen (SIGSTOP) past the silence limit: the daemon notices, resumes, converges."""
    churn = Churn(private, seed=4)
    await churn.setup()
    daemon = make_daemon(STATEMANAGER_ETCD_WATCH_SILENCE_SECONDS="2")
    daemon.start()
    await daemon.wait_synced()
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)

    async def silent() -> bool:
        return any(e.get("reason") == "silent" for e in daemon.events("watch_broken"))

    try:
        await eventually(silent, 15, "a silent-watch restart")
    finally:
        server.process.send_signal(signal.SIGCONT)
    for _ in range(300):
        await churn.step()
    took = await converged(private)
    print(f"\nsilent watch: states right {took:.2f} s after etcd resumed")


async def test_etcd_down_costs_almost_no_cpu(
    private: Etcd, server: LocalEtcd, make_daemon: type[Daemon]
) -> None:
    """With etcd down for 30 s the daemon uses under 1 s of CPU, then catches up."""
    churn = Churn(private, seed=5)
    await churn.setup()
    daemon = make_daemon()
    daemon.start()
    await daemon.wait_synced()
    assert daemon.process is not None
    server.kill()
    before = cpu_seconds(daemon.process.pid)
    await asyncio.sleep(30)
    used = cpu_seconds(daemon.process.pid) - before
    print(f"\netcd down 30 s: daemon used {used:.3f} s CPU")
    assert used < 1.0
    await asyncio.to_thread(server.start)
    for _ in range(200):
        await churn.step()
    took = await converged(private)
    print(f"etcd back: states right {took:.2f} s after the churn that followed")


async def test_periodic_resync_writes_nothing_when_all_is_right(
    private: Etcd, make_daemon: type[Daemon]
) -> None:
    """The backstop relist runs on its interval, finds no drift and writes no transition."""
    churn = Churn(private, seed=6)
    await churn.setup()
    daemon = make_daemon(STATEMANAGER_ETCD_RESYNC_INTERVAL_SECONDS="1")
    daemon.start()
    await daemon.wait_synced()
    await converged(private)
    written = len(daemon.events("transition"))

    async def resynced_twice() -> bool:
        return len(daemon.events("resync_due")) >= 3

    await eventually(resynced_twice, 15, "three periodic resyncs")
    assert len(daemon.events("transition")) == written
    assert not daemon.events("resync_drift")
    # The backstop still corrects what it finds: a state key changed behind its back.
    key = f"{private.layout.package_states}{PACKAGES[0]}/state"
    await private.put(key, "Bogus")
    await converged(private)
