"""The HTTP server as operators secure it (an exporter-toolkit web config file: TLS, client
certificates, basic auth) and scrape it (a real Prometheus), and its landing page."""

from __future__ import annotations

import base64
import json
import re
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from statemanager import __version__
from statemanager.app import webconfig
from statemanager.core.keys import KeyLayout

from conftest import (
    Certs,
    Daemon,
    DaemonMaker,
    cli,
    eventually,
    http_get,
    promql,
    scrape_job,
    scrape_targets,
)

PASSWORD = "correct horse"


def web_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "web-config.yml"
    path.write_text(text)
    return path


def text(path: Path) -> str:
    return path.read_text()


def secured(tmp_path: Path, certs: Certs) -> Path:
    """TLS 1.3 only, client certificates signed by the test CA required, one bcrypt user (in
    htpasswd's $2y$ spelling)."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    return web_config(
        tmp_path,
        f"""tls_server_config:
  cert_file: {certs.server_cert}
  key_file: {certs.server_key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {certs.ca}
  min_version: TLS13
basic_auth_users:
  prometheus: {hashed.replace("$2b$", "$2y$")}
""",
    )


def https_get(
    port: int,
    path: str,
    certs: Certs,
    *,
    client_cert: bool = True,
    password: str | None = PASSWORD,
    max_version: ssl.TLSVersion | None = None,
) -> tuple[int, dict[str, str], str]:
    """GET over TLS (verifying the server against the test CA): status, headers, body."""
    context = ssl.create_default_context(cafile=certs.ca)
    if client_cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    if max_version is not None:
        context.maximum_version = max_version
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
    if password is not None:
        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
async def secured_daemon(daemon_factory: DaemonMaker, certs: Certs, tmp_path: Path) -> Daemon:
    d = daemon_factory()
    d.env["STATEMANAGER_METRICS_WEB_CONFIG_FILE"] = str(secured(tmp_path, certs))
    d.start()
    await d.wait_synced()
    return d


async def test_real_prometheus_scrapes_over_tls_with_basic_auth(
    secured_daemon: Daemon,
    certs: Certs,
    prometheus_server: Callable[[list[dict[str, Any]]], int],
) -> None:
    """Prometheus with the right CA, client certificate and password scrapes the daemon; the same
    job with a wrong password gets 401, and without a client certificate the handshake fails."""
    port = secured_daemon.metrics_port
    tls = {"ca_file": str(certs.ca), "cert_file": str(certs.client_cert),
           "key_file": str(certs.client_key)}  # fmt: skip
    right = {"username": "prometheus", "password": PASSWORD}
    wrong = {"username": "prometheus", "password": "wrong"}
    prometheus = prometheus_server(
        [
            scrape_job("good", port, scheme="https", tls_config=tls, basic_auth=right),
            scrape_job("wrong_password", port, scheme="https", tls_config=tls, basic_auth=wrong),
            scrape_job(
                "no_client_cert",
                port,
                scheme="https",
                tls_config={"ca_file": str(certs.ca)},
                basic_auth=right,
            ),
        ]
    )

    async def all_scraped() -> bool:
        targets = scrape_targets(prometheus)
        return len(targets) == 3 and all(t["lastScrape"][:4] != "0001" for t in targets.values())

    await eventually(all_scraped, 60, "Prometheus to scrape every job once")
    targets = scrape_targets(prometheus)
    assert targets["good"]["health"] == "up", targets["good"]
    assert targets["wrong_password"]["health"] == "down"
    assert "401" in targets["wrong_password"]["lastError"], targets["wrong_password"]
    assert targets["no_client_cert"]["health"] == "down"
    assert "certificate" in targets["no_client_cert"]["lastError"], targets["no_client_cert"]

    async def synced_series() -> bool:
        return bool(promql(prometheus, 'statemanager_synced{job="good"} == 1'))

    await eventually(synced_series, 30, "a daemon metric in Prometheus, scraped over TLS")


async def test_refused_without_password_or_client_certificate(
    secured_daemon: Daemon, certs: Certs
) -> None:
    """Every path needs the password (401 with a Basic challenge otherwise) and a client
    certificate from the configured CA; TLS 1.2 is refused when min_version is TLS13."""
    port = secured_daemon.metrics_port
    status, _, body = https_get(port, "/metrics", certs)
    assert status == 200 and "statemanager_synced 1.0" in body
    for path in ("/metrics", "/healthz", "/status", "/"):
        status, headers, _ = https_get(port, path, certs, password="wrong")
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Basic realm="), headers
        assert https_get(port, path, certs, password=None)[0] == 401, path
    with pytest.raises(OSError, match="certificate"):
        https_get(port, "/metrics", certs, client_cert=False)
    with pytest.raises(OSError, match=r"(?i)version|protocol"):
        https_get(port, "/metrics", certs, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(OSError, match=r"(?i)reset|closed|disconnected"):  # plain HTTP on TLS
        http_get(port, "/metrics")
    # The server is still there for a good client after all that.
    assert https_get(port, "/healthz", certs)[0] == 200


async def test_landing_page_links_every_endpoint(secured_daemon: Daemon, certs: Certs) -> None:
    """`/` is an HTML page with the version and links to /metrics, /healthz, /readyz, /status."""
    status, headers, body = https_get(secured_daemon.metrics_port, "/", certs)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert f"Version {__version__}" in body
    for path in ("/metrics", "/healthz", "/readyz", "/status"):
        assert f'<a href="{path}">' in body


BAD_FILES = [
    ("http_server_config: {http2: false}\n", "unknown key http_server_config"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: [x]}\n",
     "unknown key tls_server_config.cipher_suites"),
    ("tls_server_config: {cert_file: missing.pem, key_file: KEY}\n",
     "tls_server_config.cert_file DIR/missing.pem: no such file"),
    ("tls_server_config: {cert_file: CERT}\n", "needs both cert_file and key_file"),
    ("tls_server_config: {cert_file: CERT, key_file: OTHER_KEY}\n", "do not load as a pair"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: Sometimes}\n",
     "client_auth_type 'Sometimes' is not one of NoClientCert"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: RequireAnyClientCert}\n",
     "RequireAnyClientCert (a certificate nobody verifies) is not supported"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY,"
     " client_auth_type: RequireAndVerifyClientCert}\n", "needs client_ca_file"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, client_ca_file: CA}\n",
     "client_ca_file is set but client_auth_type NoClientCert does not verify"),
    ("tls_server_config: {cert_file: CERT, key_file: KEY, min_version: TLS11}\n",
     "min_version 'TLS11' is not one of TLS12, TLS13"),
    ("basic_auth_users: {prometheus: plaintext}\n", "basic_auth_users.prometheus: not a bcrypt hash"),
    ("basic_auth_users: [prometheus]\n", "basic_auth_users must be a mapping"),
    ("tls_server_config: [\n", "not YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_web_config_stops_the_start(
    text: str, message: str, certs: Certs, etcd_endpoint: str, layout: KeyLayout, tmp_path: Path
) -> None:
    """`run` with a web config file it cannot honour exits 2 naming the key and the problem."""
    for name, path in (("OTHER_KEY", certs.client_key), ("CERT", certs.server_cert),
                       ("KEY", certs.server_key), ("CA", certs.ca)):  # fmt: skip
        text = text.replace(name, str(path))
    path = web_config(tmp_path, text)
    result = cli(["run"], etcd_endpoint, layout, STATEMANAGER_METRICS_WEB_CONFIG_FILE=str(path))
    assert result.returncode == 2, result.stderr
    record = json.loads(result.stderr)  # one line, in the configured log format
    assert record["event"] == "invalid_config"
    assert record["error"].startswith(f"metrics.web_config_file {path}: "), record
    assert message.replace("DIR", str(tmp_path)) in record["error"]


def test_missing_web_config_file_stops_the_start(etcd_endpoint: str, layout: KeyLayout) -> None:
    """A web config file that does not exist is named, exit 2."""
    result = cli(["run"], etcd_endpoint, layout, STATEMANAGER_METRICS_WEB_CONFIG_FILE="/nope.yml")
    assert result.returncode == 2
    error = json.loads(result.stderr)["error"]
    assert error.startswith("STATEMANAGER_METRICS_WEB_CONFIG_FILE: cannot read '/nope.yml'")


def test_deploy_example_web_config_loads(certs: Certs, tmp_path: Path) -> None:
    """deploy/web-config.yml, its paths pointed at test certificates, asks for what it says:
    TLS 1.3, verified client certificates, and the documented example password."""
    text = (Path(__file__).parents[2] / "deploy" / "web-config.yml").read_text()
    for example, real in (("/etc/statemanager/web.pem", certs.server_cert),
                          ("/etc/statemanager/web.key", certs.server_key),
                          ("/etc/statemanager/prometheus-ca.pem", certs.ca)):  # fmt: skip
        assert example in text
        text = text.replace(example, str(real))
    config = webconfig.load(web_config(tmp_path, text))
    assert config.tls is not None and config.auth is not None
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    token = base64.b64encode(b"prometheus:example-password").decode()
    assert config.auth.check(f"Basic {token}")


async def test_sighup_rereads_the_web_config(secured_daemon: Daemon, certs: Certs) -> None:
    """After SIGHUP a new password (or certificate) applies to new connections without a
    restart; a file that became invalid is refused and the previous configuration stays."""
    port = secured_daemon.metrics_port
    path = Path(secured_daemon.env["STATEMANAGER_METRICS_WEB_CONFIG_FILE"])
    assert secured_daemon.process is not None
    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(4)).decode()
    web_config(path.parent, re.sub(r"prometheus: \S+", f"prometheus: '{new_hash}'", text(path)))
    secured_daemon.process.send_signal(signal.SIGHUP)

    async def rotated() -> bool:
        return https_get(port, "/healthz", certs, password="rotated")[0] == 200

    await eventually(rotated, 10, "the new password to be accepted")
    assert https_get(port, "/healthz", certs)[0] == 401  # the old one no longer
    reloaded = secured_daemon.events("reloaded")[-1]
    assert "metrics.web_config_file" in reloaded["changed"] and not reloaded["restart_needed"]

    web_config(path.parent, "tls_server_config: {cert_file: /nope.pem}\n")
    secured_daemon.process.send_signal(signal.SIGHUP)

    async def refused() -> bool:
        return bool(secured_daemon.events("reload_failed"))

    await eventually(refused, 10, "the invalid file to be refused")
    assert "/nope.pem: no such file" in secured_daemon.events("reload_failed")[-1]["error"]
    assert https_get(port, "/healthz", certs, password="rotated")[0] == 200
