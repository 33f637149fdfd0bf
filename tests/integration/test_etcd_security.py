"""Production etcd: TLS with server verification and mutual TLS, auth with short-lived
tokens, failover between members, and no secret in logs (a real three-member cluster under
faults: test_etcd_cluster.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import aetcd
import pytest
from structlog.testing import capture_logs

from statemanager.adapters.etcd import EtcdClient
from statemanager.adapters.tls import ServerTls, TlsFiles
from statemanager.core.errors import EtcdUnavailable
from statemanager.core.keys import KeyLayout
from statemanager.core.ports import Put
from statemanager.devtools.localetcd import LocalEtcd, free_port

from conftest import Certs, Daemon, DaemonMaker, Etcd, cli, eventually
from fleet import Churn, converged

PASSWORD = "s3cret-Pa55word-for-tests"


def tls_daemon(tmp_path: Path, layout: KeyLayout, endpoints: str, **env: str) -> Daemon:
    return DaemonMaker(endpoints, layout, tmp_path)(**env)


@pytest.fixture
def tls_etcd(tmp_path: Path, certs: Certs, request: pytest.FixtureRequest) -> Iterator[LocalEtcd]:
    """etcd serving TLS; with the `mutual` marker parameter it also requires client certs."""
    mutual = getattr(request, "param", False)
    server = LocalEtcd(
        tmp_path / "etcd", free_port(), free_port(),
        tls=ServerTls(certs.server_cert, certs.server_key, certs.ca if mutual else None),
        client_tls=_client_tls(certs, mutual),
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _client_tls(certs: Certs, mutual: bool) -> TlsFiles:
    if mutual:
        return TlsFiles(certs.ca, certs.client_cert, certs.client_key)
    return TlsFiles(certs.ca)


@pytest.mark.parametrize("tls_etcd", [False, True], ids=["server-tls", "mutual-tls"], indirect=True)
async def test_daemon_over_tls(
    tls_etcd: LocalEtcd, certs: Certs, layout: KeyLayout, tmp_path: Path
) -> None:
    """With https endpoints and the CA (and a client pair for mutual TLS) the daemon syncs and
    writes states; `status` reads them over the same TLS."""
    mutual = tls_etcd.tls is not None and tls_etcd.tls.client_ca is not None
    env = {"STATEMANAGER_ETCD_CA_FILE": str(certs.ca)}
    if mutual:
        env |= {"STATEMANAGER_ETCD_CERT_FILE": str(certs.client_cert),
                "STATEMANAGER_ETCD_KEY_FILE": str(certs.client_key)}  # fmt: skip
    d = tls_daemon(tmp_path, layout, tls_etcd.endpoint, **env)
    d.start()
    try:
        await d.wait_synced()
        await _put_failing_package(tls_etcd, certs, layout, mutual)

        async def written() -> bool:
            result = cli(["status"], tls_etcd.endpoint, layout, **env)
            # "Error for 2s": the state's age, read from its history over TLS too
            found = re.search(
                r"package pay: Error for \d+s \(P2, all 1 models Failed\)", result.stdout
            )
            return found is not None

        await eventually(written, 15, "the Error state, read back over TLS")
    finally:
        assert d.stop() == 0


async def _put_failing_package(
    server: LocalEtcd, certs: Certs, layout: KeyLayout, mutual: bool
) -> None:
    """Write through our adapter (aetcd's client has no TLS): a package with a dead container."""
    client = EtcdClient([server.endpoint], 5, tls=_client_tls(certs, mutual))
    try:
        spec = b"kind: Package\nspec:\n  models: [{name: m}]\n"
        info = (b'{"state": {"Status": "dead"}, '
                b'"annotation": {"io.pullpiri.annotations.model": "m"}}')  # fmt: skip
        await client.txn([], [Put(f"{layout.packages}pay".encode(), spec),
                              Put(f"{layout.containers}c1".encode(), info)])  # fmt: skip
    finally:
        await client.close()


@pytest.mark.parametrize("tls_etcd", [True], ids=["mutual-tls"], indirect=True)
def test_tls_misconfiguration_is_a_clear_error(
    tls_etcd: LocalEtcd, certs: Certs, layout: KeyLayout
) -> None:
    """A CA that did not sign the server, a key that does not match its certificate, and an
    unreadable file each stop the command with a message that names the problem."""
    wrong_ca = cli(["status"], tls_etcd.endpoint, layout,
                   STATEMANAGER_ETCD_CA_FILE=str(certs.other_ca),
                   STATEMANAGER_ETCD_CERT_FILE=str(certs.client_cert),
                   STATEMANAGER_ETCD_KEY_FILE=str(certs.client_key),
                   STATEMANAGER_ETCD_TIMEOUT_SECONDS="2")  # fmt: skip
    assert wrong_ca.returncode == 3
    assert "CERTIFICATE_VERIFY_FAILED" in wrong_ca.stderr or "handshake" in wrong_ca.stderr.lower()
    mismatched = cli(["status"], tls_etcd.endpoint, layout,
                     STATEMANAGER_ETCD_CA_FILE=str(certs.ca),
                     STATEMANAGER_ETCD_CERT_FILE=str(certs.client_cert),
                     STATEMANAGER_ETCD_KEY_FILE=str(certs.server_key))  # fmt: skip
    assert mismatched.returncode == 2
    assert "etcd.cert_file" in mismatched.stderr
    assert "do not load as a pair" in mismatched.stderr
    missing = cli(["status"], tls_etcd.endpoint, layout, STATEMANAGER_ETCD_CA_FILE="/nope/ca.pem")
    assert missing.returncode == 2
    assert "STATEMANAGER_ETCD_CA_FILE" in missing.stderr


async def _root_client(server: LocalEtcd, old: aetcd.Client | None = None) -> aetcd.Client:
    if old is not None:
        await old.close()
    client = aetcd.Client(host="127.0.0.1", port=server.client_port, username="root",
                          password=PASSWORD, timeout=5)  # fmt: skip
    await client.connect()
    return client


async def test_auth_tokens_expire_and_are_renewed(tmp_path: Path, layout: KeyLayout) -> None:
    """Auth on with 1 s tokens and an etcd restart (which forgets every token): the daemon keeps
    writing, its watch included, and its log never shows the password."""
    server = LocalEtcd(tmp_path / "auth-etcd", free_port(), free_port(),
                       extra_args=("--auth-token", "simple", "--auth-token-ttl", "1"))  # fmt: skip
    await asyncio.to_thread(server.start)
    try:
        server.etcdctl("user", "add", f"root:{PASSWORD}")
        server.etcdctl("auth", "enable")
        # aetcd never renews its token, so the test side reconnects after every idle spell.
        etcd = Etcd(await _root_client(server), layout)
        churn = Churn(etcd, seed=21)
        await churn.setup()
        d = tls_daemon(tmp_path, layout, server.endpoint, STATEMANAGER_ETCD_USERNAME="root",
                       STATEMANAGER_ETCD_PASSWORD=PASSWORD)  # fmt: skip
        d.start()
        try:
            await d.wait_synced()
            await asyncio.sleep(3)  # idle past the token TTL
            etcd.client = await _root_client(server, etcd.client)
            await converged(etcd)
            for _ in range(100):
                await churn.step()
            await converged(etcd)
            server.kill()  # a restarted etcd has forgotten every token
            await asyncio.to_thread(server.start)
            etcd.client = await _root_client(server, etcd.client)
            for _ in range(100):
                await churn.step()
            await converged(etcd)
            assert len(d.events("etcd_authenticated")) >= 2
        finally:
            assert d.stop() == 0
            await etcd.client.close()
        log_text = d.log_path.read_text()
        assert PASSWORD not in log_text
        status = cli(["status"], server.endpoint, layout, STATEMANAGER_ETCD_USERNAME="root",
                     STATEMANAGER_ETCD_PASSWORD=PASSWORD)  # fmt: skip
        assert status.returncode == 0, status.stderr
        wrong = cli(["status"], server.endpoint, layout, STATEMANAGER_ETCD_USERNAME="root",
                    STATEMANAGER_ETCD_PASSWORD="not-" + PASSWORD)  # fmt: skip
        assert wrong.returncode == 3
        assert "authentication" in wrong.stderr
        for output in (status.stdout, status.stderr, wrong.stdout, wrong.stderr):
            assert PASSWORD not in output
    finally:
        server.stop()


async def test_failover_warns_once_per_outage_not_per_hop(server: LocalEtcd) -> None:
    """Moving off a member that answered before is a warning; hopping on through members that
    are all down (an outage, reported by the outage lines) is debug until one answers again."""
    dead1, dead2 = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([dead1, dead2, server.endpoint], timeout=1)
    try:
        with capture_logs() as logged:
            # A request fails over and is retried once on the next member: each failed call
            # below tries two members.
            with pytest.raises(EtcdUnavailable):
                await client.revision()
            await client.revision()  # the third member answers
            server.kill()
            for _ in range(2):
                with pytest.raises(EtcdUnavailable):
                    await client.revision()
    finally:
        await client.close()
    hops = [(e["log_level"], e["unreachable"]) for e in logged if e["event"] == "etcd_failover"]
    assert hops == [
        ("warning", dead1), ("debug", dead2),
        ("warning", server.endpoint), ("debug", dead1), ("debug", dead2), ("debug", server.endpoint),
    ]  # fmt: skip
