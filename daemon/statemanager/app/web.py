"""The daemon's HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status` and a landing page at
`/`, over plain HTTP or TLS and with or without basic auth, as the web configuration file says
(webconfig.py).

It runs in threads of its own, one per connection, so neither a slow client nor bcrypt nor a
TLS handshake ever holds up the event loop; a route that needs the loop's data asks the loop
for it (statuspage.py). The handshake happens in the connection's thread, not in the accepting
one, so a client that connects and says nothing delays nobody else.
"""

from __future__ import annotations

import contextlib
import html
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from statemanager import __version__
from statemanager.app.webconfig import WebConfig
from statemanager.runtime.health import Health
from statemanager.runtime.metrics import EXPOSITION_TYPE, Metrics

log = structlog.get_logger("statemanager.web")

CONNECTION_TIMEOUT = 10.0  # seconds a connection may take for its handshake or sit idle
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
# Pages are plain server-rendered HTML: forbid scripts, frames and remote loads outright, so a
# value from etcd that escaping somehow missed still cannot run anything.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT


Query = Mapping[str, list[str]]
Route = Callable[[Query], Response]  # query parameters → response; runs in an HTTP thread


def health_routes(metrics: Metrics, health: Health) -> dict[str, Route]:
    """/metrics; /healthz (process alive, loop not stuck) and /readyz (first sync done, watch
    healthy): 200 when true, 503 with the reason otherwise. Also makes `statemanager_ready`
    follow /readyz."""
    metrics.follow_readiness(health)

    def probe(check: Callable[[], tuple[bool, str]]) -> Route:
        def route(_: Query) -> Response:
            ok, why = check()
            return Response(200 if ok else 503, f"{why}\n".encode())

        return route

    return {
        "/metrics": lambda _: Response(200, metrics.exposition(), EXPOSITION_TYPE),
        "/healthz": probe(health.liveness),
        "/readyz": probe(health.readiness),
    }


def page(title: str, body: str) -> bytes:
    """A complete HTML page around `body` (already escaped), readable on a phone."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; padding: 0.8em; max-width: 60em;
  line-height: 1.4; overflow-wrap: anywhere; }}
h1 {{ font-size: 1.3em; }} h2 {{ font-size: 1.1em; margin-top: 1.4em; }}
ul {{ padding-left: 1.1em; }} li {{ margin: 0.15em 0; }}
.tree {{ list-style: none; padding-left: 0; }} .d1 {{ margin-left: 1.2em; }}
.d2 {{ margin-left: 2.4em; font-size: 0.95em; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 0.8em; }}
dt {{ font-weight: 600; }} dd {{ margin: 0; }}
code {{ font-family: monospace, monospace; font-size: 0.95em; }}
.s {{ font-weight: 600; padding: 0 0.3em; border-radius: 0.3em; background: #eee; }}
.Running, .Succeeded, .running {{ background: #d7f5d7; }}
.Failed, .Error, .dead {{ background: #ffd5d5; }}
.Degraded {{ background: #ffe6bf; }}
.why, .note {{ color: #555; }} .differs {{ color: #a00; }}
</style></head><body>
{body}
</body></html>
""".encode()


def _landing(routes: Mapping[str, Route]) -> Route:
    links = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(path)}</a></li>' for path in sorted(routes)
    )
    body = page(
        "statemanager",
        f"<h1>statemanager</h1><p>Version {html.escape(__version__)}: keeps Pullpiri model "
        f"and package states in etcd true to container states.</p><ul>{links}</ul>",
    )
    return lambda _: Response(200, body, HTML)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        routes: Mapping[str, Route],
        config: Callable[[], WebConfig],
    ) -> None:
        self.routes = {**routes, "/": _landing(routes)}
        self.config = config
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Handler)

    def shutdown(self) -> None:
        """Stop `serve_forever`, which waits for connections without a timeout (socketserver's
        default polls twice a second, the idle daemon's most frequent wake-up): shutting the
        listening socket down wakes it, and it then sees the stop request."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that failed (refused handshake, client gone): debug level, since any
        port scanner would otherwise fill the log; the client got its answer or an alert."""
        log.debug("http_connection_failed", client=str(client_address[0]), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = CONNECTION_TIMEOUT

    def setup(self) -> None:
        # One configuration for the whole connection, even if a reload swaps it meanwhile.
        self.config = self.server.config()
        tls = self.config.tls
        if tls is not None:
            self.request.settimeout(self.timeout)
            conn = tls.wrap_socket(self.request, server_side=True, do_handshake_on_connect=False)
            self.request = conn
            try:
                conn.do_handshake()
            except OSError:
                _close_gently(conn)
                raise
        super().setup()

    def do_GET(self) -> None:
        auth = self.config.auth
        if auth is not None and not auth.check(self.headers.get("Authorization")):
            challenge = {"WWW-Authenticate": 'Basic realm="statemanager", charset="UTF-8"'}
            self._reply(Response(401, b"Unauthorized\n"), challenge)
            return
        url = urlsplit(self.path)
        route = self.server.routes.get(url.path)
        if route is None:
            paths = ", ".join(sorted(self.server.routes))
            self._reply(Response(404, f"not found; try {paths}\n".encode()))
            return
        try:
            response = route(parse_qs(url.query))
        except Exception:
            log.exception("http_route_failed", path=url.path)
            response = Response(500, b"internal error; see the daemon's log\n")
        self._reply(response)

    def _reply(self, response: Response, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(response.status)
        all_headers = {**_HEADERS, **(headers or {}), "Content-Type": response.content_type}
        for name, value in all_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        return  # scrapes every few seconds would drown the daemon's own logs


def _close_gently(conn: ssl.SSLSocket) -> None:
    """Half-close a refused connection and read what the client already sent before closing:
    closing with unread data sends a TCP reset, which can overtake the TLS alert just sent
    (say, "certificate required"), and the client would report a bare EOF instead of why."""
    deadline = time.monotonic() + 1.0
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)  # also drops the TLS layer: recv below reads raw bytes
        conn.settimeout(0.2)
        while time.monotonic() < deadline and conn.recv(4096):
            pass
    conn.close()


def serve(
    address: str, routes: Mapping[str, Route], config: Callable[[], WebConfig]
) -> ThreadingHTTPServer:
    """Serve `routes` (and the landing page at /) on host:port from a daemon thread, each new
    connection as `config()` says then; raises OSError when the address cannot be bound.
    `shutdown()` the result to stop."""
    host, _, port = address.rpartition(":")
    server = _Server((host.strip("[]"), int(port)), routes, config)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": None}, name="http", daemon=True
    ).start()
    return server
