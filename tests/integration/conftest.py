"""Integration fixtures: a real etcd (started here, or ETCD_ENDPOINTS), the real daemon as a
subprocess, and an independent etcd client (aetcd's high-level API, not our adapter) to put
keys and read what the daemon wrote.

Tests share one etcd and isolate themselves by prefix: each test gets its own key layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlencode, urlsplit
from urllib.request import urlopen

import aetcd
import grpc
import pytest

from statemanager.app.config import OPTIONS
from statemanager.core.keys import KeyLayout
from statemanager.devtools.localetcd import LocalEtcd, free_port
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from support import documents

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ETCD_ENDPOINTS when set (first URL), else an etcd process on loopback for the session."""
    external = os.environ.get("ETCD_ENDPOINTS")
    if external:
        yield external.split(",")[0].strip()
        return
    server = LocalEtcd(tmp_path_factory.mktemp("etcd") / "data", free_port(), free_port())
    server.start()
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalEtcd]:
    """A private etcd these tests may kill, pause and compact."""
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    etcd.start()
    try:
        yield etcd
    finally:
        etcd.stop()


@pytest.fixture
async def private(server: LocalEtcd, layout: KeyLayout) -> AsyncIterator[Etcd]:
    client = aetcd.Client(host="127.0.0.1", port=server.client_port, timeout=5)
    await client.connect()
    try:
        yield Etcd(client, layout)
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@pytest.fixture
def layout() -> KeyLayout:
    """A key layout no other test uses (the default layout under a unique root)."""
    root = f"/it{os.getpid()}-{next(_counter)}"
    base = KeyLayout()
    return KeyLayout(
        containers=f"{root}{base.containers}",
        packages=f"{root}/{base.packages}",
        models=f"{root}/{base.models}",
        scenarios=f"{root}/{base.scenarios}",
        model_states=f"{root}{base.model_states}",
        package_states=f"{root}{base.package_states}",
        scenario_states=f"{root}{base.scenario_states}",
        own=f"{root}{base.own}",
    )


class Etcd:
    """Test-side etcd access through aetcd's own client, independent of the daemon's adapter."""

    def __init__(self, client: aetcd.Client, layout: KeyLayout) -> None:
        self.client = client
        self.layout = layout

    async def put(self, key: str, value: str | bytes) -> int:
        data = value.encode() if isinstance(value, str) else value
        return int((await self.client.put(key.encode(), data)).header.revision)

    async def delete(self, key: str) -> None:
        await self.client.delete(key.encode())

    async def get(self, key: str) -> str | None:
        got = await self.client.get(key.encode())
        return None if got is None else got.value.decode()

    async def mod_revision(self, key: str) -> int:
        got = await self.client.get(key.encode())
        return 0 if got is None else int(got.mod_revision)

    async def container(self, cid: str, status: str, model: str | None = None, **extra: Any) -> int:
        """`extra`: more state fields (ExitCode, OOMKilled)."""
        state = {"Status": status, **{k: str(v) for k, v in extra.items()}}
        return await self.put(self.layout.containers + cid, documents.container(cid, state, model))

    async def package(self, name: str, models: list[str]) -> int:
        return await self.put(self.layout.packages + name, documents.package(name, models))

    async def model_spec(self, name: str, containers: list[str]) -> int:
        return await self.put(self.layout.models + name, documents.model(name, containers))

    async def scenario(self, name: str, target: str) -> int:
        return await self.put(self.layout.scenarios + name, documents.scenario(name, target))

    async def model_state(self, model: str) -> str | None:
        return await self.get(f"{self.layout.model_states}{model}/state")

    async def package_state(self, package: str) -> str | None:
        return await self.get(f"{self.layout.package_states}{package}/state")

    async def states(self) -> dict[str, str]:
        """Every state key the daemon wrote, by key."""
        result: dict[str, str] = {}
        for prefix in (self.layout.model_states, self.layout.package_states):
            for kv in await self.client.get_prefix(prefix.encode()):
                result[kv.key.decode()] = kv.value.decode()
        return result


@pytest.fixture
async def etcd(etcd_endpoint: str, layout: KeyLayout) -> AsyncIterator[Etcd]:
    url = urlsplit(etcd_endpoint)
    client = aetcd.Client(host=url.hostname or "127.0.0.1", port=url.port or 2379, timeout=10)
    await client.connect()
    try:
        yield Etcd(client, layout)
    finally:
        await client.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds or the deadline passes (never a bare sleep). The default
    deadline is generous: a condition that holds costs no wait, and a CI machine busier than
    this one must not fail a test that is only slow."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def states_are(etcd: Etcd, expected: dict[str, str | None], timeout: float = 30.0) -> None:
    """Wait until every listed model/package state key holds the value (None: absent)."""

    async def check() -> bool:
        for name, want in expected.items():
            if name.startswith("pkg:"):
                got = await etcd.package_state(name[4:])
            else:
                got = await etcd.model_state(name)
            if got != want:
                return False
        return True

    try:
        await eventually(check, timeout, f"states {expected}")
    except AssertionError:
        raise AssertionError(f"wanted {expected}, etcd has {await etcd.states()}") from None


def daemon_env(endpoint: str, layout: KeyLayout, metrics_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEMANAGER_")}
    env.update(
        STATEMANAGER_ETCD_ENDPOINTS=endpoint,
        STATEMANAGER_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
        STATEMANAGER_LOG_FORMAT="json",
        STATEMANAGER_LOG_LEVEL="debug",
    )
    env.update({o.env: getattr(layout, o.key) for o in OPTIONS if o.section == "prefixes"})
    return env


def cli(
    args: list[str], endpoint: str, layout: KeyLayout, python: str = sys.executable, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a `statemanager` command against `endpoint` with this test's key layout (with
    `python`: another installation's, e.g. an earlier release's)."""
    full_env = daemon_env(endpoint, layout, 1)
    full_env.update(env)
    return subprocess.run(
        [python, "-m", "statemanager", *args, "--config", os.devnull],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Daemon:
    """`python -m statemanager run` as production runs it: a process, JSON logs, /metrics."""

    env: dict[str, str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)
    # What Python runs: the package, or a script that plants a fault first and then runs it.
    program: list[str] = field(default_factory=lambda: ["-m", "statemanager"])
    python: str = sys.executable  # or another installation's (an earlier release's)

    def start(self) -> None:
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.python, *self.program, "run", "--config", os.devnull],
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        self._log_file.close()
        return code

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
            self._log_file.close()

    def logs(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                lines.append({"event": "<non-json>", "text": line})
        return lines

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.logs() if line.get("event") == name]

    def scrape(self) -> str:
        with urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    async def wait_synced(self, timeout: float = 20.0) -> None:
        async def synced() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited with {self.process.returncode}: {self.tail()}")
            return bool(self.events("synced"))

        await eventually(synced, timeout, "the daemon's first sync")

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:])


class DaemonMaker:
    """Builds daemons against one etcd with this test's key layout; `maker(STATEMANAGER_X="v")`
    adds settings. `stop_all` ends the test: every daemon still running (resumed first, if
    paused) must stop on SIGTERM with exit code 0."""

    def __init__(self, endpoint: str, layout: KeyLayout, logs: Path) -> None:
        self._endpoint = endpoint
        self._layout = layout
        self._logs = logs
        self.made: list[Daemon] = []

    def __call__(self, **env: str) -> Daemon:
        port = free_port()
        full = daemon_env(self._endpoint, self._layout, port)
        full.update(env)
        d = Daemon(full, self._logs / f"daemon{len(self.made)}-{port}.log", port)
        self.made.append(d)
        return d

    def stop_all(self) -> None:
        for d in self.made:
            if d.process is not None:
                d.process.send_signal(signal.SIGCONT)
                code = d.stop()
                assert code == 0, f"daemon exit code {code} on SIGTERM: {d.tail()}"


@pytest.fixture
def daemon_factory(etcd_endpoint: str, layout: KeyLayout, tmp_path: Path) -> Iterator[DaemonMaker]:
    """Daemons against the session's shared etcd."""
    maker = DaemonMaker(etcd_endpoint, layout, tmp_path)
    yield maker
    maker.stop_all()


@pytest.fixture
async def daemon(daemon_factory: DaemonMaker) -> Daemon:
    """A running daemon that has finished its first sync."""
    d = daemon_factory()
    d.start()
    await d.wait_synced()
    return d


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed none of the above: verification against it must fail
    stranger_cert: Path  # a client pair signed by other_ca, not by ca
    stranger_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(
    tmp_path_factory: pytest.TempPathFactory, debian_tool: Callable[[str, str], str]
) -> Certs:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    debian_tool("openssl", "openssl")
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key",
                 "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", "san.ext", cwd=d)  # fmt: skip
    return Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key",
        d / "other-ca.pem", d / "stranger.pem", d / "stranger.key",
    )  # fmt: skip


def client_pair(certs: Certs, name: str) -> tuple[Path, Path]:
    """A client certificate and key for CN `name` (and DNS SAN `name`), signed by `certs.ca`."""
    d = certs.ca.parent
    if not (d / f"{name}.pem").exists():
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d / f"{name}.pem", d / f"{name}.key"


@pytest.fixture
def make_daemon(server: LocalEtcd, layout: KeyLayout, tmp_path: Path) -> Iterator[DaemonMaker]:
    """Daemons against the private `server`."""
    maker = DaemonMaker(server.endpoint, layout, tmp_path)
    yield maker
    maker.stop_all()


def scrape_job(name: str, port: int, **settings: Any) -> dict[str, Any]:
    """A Prometheus scrape job for 127.0.0.1:<port>, scraped every second."""
    return {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}], **settings}


@pytest.fixture
def prometheus_server(
    tmp_path: Path, debian_tool: Callable[[str, str], str]
) -> Iterator[Callable[[list[dict[str, Any]]], int]]:
    """Starts Debian's Prometheus with these scrape jobs (see scrape_job); returns its port."""
    binary = debian_tool("prometheus", "prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(jobs: list[dict[str, Any]]) -> int:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        settings = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        # JSON is YAML: no quoting of paths or passwords to get wrong.
        config.write_text(json.dumps({"global": settings, "scrape_configs": jobs}))
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return port

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def _prometheus_api(port: int, path: str) -> Any:
    try:
        with urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as resp:
            return json.loads(resp.read())["data"]
    except OSError:
        return None  # not up yet


def promql(port: int, query: str) -> list[dict[str, Any]]:
    """The result of an instant PromQL query ([] while Prometheus is not answering)."""
    data = _prometheus_api(port, "query?" + urlencode({"query": query}))
    return list(data["result"]) if data else []


def scrape_targets(port: int) -> dict[str, dict[str, Any]]:
    """Prometheus' active targets by job name: `health`, `lastError`, … of its last scrape."""
    data = _prometheus_api(port, "targets")
    return {t["labels"]["job"]: t for t in data["activeTargets"]} if data else {}


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:<port><path>: status and body (error statuses included)."""
    try:
        with urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
async def stub_for() -> AsyncIterator[Callable[[int], pb_grpc.StateManagerConnectionStub]]:
    """`stub_for(port)`: a StateManager client on its own channel to 127.0.0.1:port."""
    channels: list[grpc.aio.Channel] = []

    def make(port: int) -> pb_grpc.StateManagerConnectionStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]

    yield make
    for channel in channels:
        await channel.close()
