"""The HTTP server's thread: it sleeps until a connection comes, never on a timer, and a stop
ends it at once."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

from statemanager.app import web
from statemanager.app.webconfig import WebConfig


def _switches(thread: threading.Thread) -> int:
    """How often the kernel has switched `thread` out so far (it slept or was preempted)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    fields = dict(line.split(":\t") for line in status.splitlines() if ":\t" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def test_the_server_sleeps_until_asked_and_stops_at_once() -> None:
    """A request is answered; idle for 2.5 s after it, the server's thread is not woken
    (socketserver's default polled every 0.5 s: five wake-ups); `shutdown()` returns and
    ends the thread within a second."""
    routes = {"/ping": lambda _query: web.Response(200, b"pong")}
    server = web.serve("127.0.0.1:0", routes, WebConfig)
    port = server.server_address[1]
    (thread,) = [t for t in threading.enumerate() if t.name == "http"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as resp:
        assert resp.read() == b"pong"
    before = _switches(thread)
    time.sleep(2.5)  # deliberately idle: what is measured is what happens meanwhile
    assert _switches(thread) - before <= 1  # the request's accept loop going back to sleep
    started = time.monotonic()
    stopper = threading.Thread(target=server.shutdown)
    stopper.start()
    stopper.join(5)
    thread.join(5)
    assert not stopper.is_alive() and not thread.is_alive()
    assert time.monotonic() - started < 1.0
    server.server_close()
