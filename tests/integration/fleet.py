"""Random fleet churn and an oracle for fault and HA tests.

The oracle is independent of the daemon's index: it groups containers by their model
annotation itself and applies only the rule table (statemanager.core.rules), which the unit tests
pin row by row.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import yaml

from statemanager.core.rules import model_verdict, package_verdict
from statemanager.core.states import ContainerClass, classify, parse_status

from conftest import Etcd, eventually
from support import documents

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
        state = self.rng.choice(STATUSES)
        doc = documents.container(cid, state, model, stats={"cpu": self.rng.random()})
        await self.etcd.put(self.etcd.layout.containers + cid, doc)

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

    async def progressed(self, ops: int, timeout: float = 60.0) -> None:
        """Wait until the running churn has made `ops` more operations."""
        target = self.ops + ops

        async def done() -> bool:
            return self.ops >= target

        await eventually(done, timeout, f"{ops} churn operations")

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
        model = doc["annotation"][documents.MODEL_ANNOTATION]
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
