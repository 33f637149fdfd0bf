"""A fault-injecting TCP proxy for tests: sits between the daemon and etcd and can make one
request's answer get lost.

gRPC sends request messages uncompressed in HTTP/2 DATA frames, so a request is recognised by
bytes it carries (a key it writes). Once armed with such a pattern, the proxy forwards the
client chunk that holds it, so etcd receives and applies the request, then swallows everything
etcd sends back on that connection until the test cuts it: to the client, the request's
outcome is unknown, exactly as when etcd restarts or the network resets after a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


@dataclass(eq=False)  # kept in a set by identity
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    swallowing: bool = False  # etcd's answers on this connection are dropped

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class FaultProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`; start it inside the event loop."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._pattern: bytes | None = None
        self.tripped = asyncio.Event()
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for connection in list(self._connections):
            connection.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def lose_answer_to(self, pattern: bytes) -> None:
        """Arm: the next request carrying `pattern` reaches etcd, its answer never comes back."""
        self._pattern = pattern
        self.tripped.clear()

    def cut(self) -> None:
        """Close the connections whose answers are being swallowed (the client reconnects)."""
        for connection in [c for c in self._connections if c.swallowing]:
            connection.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.transport.abort()
            return
        connection = _Connection(writer, up_writer)
        self._connections.add(connection)
        try:
            await asyncio.gather(
                self._pump_up(reader, connection), self._pump_down(up_reader, connection)
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            connection.abort()
            self._connections.discard(connection)

    async def _pump_up(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        tail = b""  # a pattern may straddle two reads
        while chunk := await reader.read(65536):
            pattern = self._pattern
            if pattern is not None and pattern in tail + chunk:
                self._pattern = None
                connection.swallowing = True
                self.tripped.set()
            connection.upstream.write(chunk)
            await connection.upstream.drain()
            tail = chunk[-len(pattern) :] if pattern else b""
        with contextlib.suppress(OSError):
            connection.upstream.write_eof()

    async def _pump_down(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        while chunk := await reader.read(65536):
            if connection.swallowing:
                continue
            connection.client.write(chunk)
            await connection.client.drain()
        with contextlib.suppress(OSError):
            connection.client.write_eof()
