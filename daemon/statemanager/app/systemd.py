"""systemd's notify protocol (sd_notify): READY, STATUS, WATCHDOG and STOPPING messages.

Our own twenty lines rather than a library: the protocol is one datagram to $NOTIFY_SOCKET,
the maintained binding (python-systemd) needs libsystemd headers and a compiler at install
time, and the small pure-Python packages on PyPI are unmaintained. Outside systemd (no
$NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("statemanager.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # an abstract socket name
            address = "\0" + address[1:]
        self._address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None
        self._failed = False
        usec = env.get("WATCHDOG_USEC", "")
        for_us = env.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # Ping at half the deadline, as sd_watchdog_enabled(3) advises; None: no watchdog.
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and for_us else None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failed:  # say it once; systemd will judge us by missing pings
                log.error("sd_notify_failed", socket=self._address, error=str(exc))
            self._failed = True
