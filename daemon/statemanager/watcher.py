"""Keeps the controller fed from etcd: list at one revision, then watch from the next one.

Thin on purpose (STYLE 4): on a broken stream it backs off and resumes each prefix from the
revision after its last fully delivered one; on compaction it relists and lets the controller
diff; it hands events over and does nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Protocol

import structlog

from statemanager.backoff import Backoff
from statemanager.controller import Controller
from statemanager.errors import Compacted, EtcdUnavailable
from statemanager.etcd import KeyValue, WatchBatch
from statemanager.metrics import Metrics

log = structlog.get_logger("statemanager.watcher")


class WatchClient(Protocol):
    async def snapshot(
        self, prefixes: Sequence[str], page_size: int = ...
    ) -> tuple[int, dict[str, list[KeyValue]]]: ...

    def watch(self, starts: Mapping[str, int]) -> AsyncIterator[WatchBatch]: ...


class Watcher:
    def __init__(
        self,
        client: WatchClient,
        controller: Controller,
        prefixes: Sequence[str],
        metrics: Metrics,
        on_listed: Callable[[int], None],
    ) -> None:
        self._client = client
        self._controller = controller
        self._prefixes = list(prefixes)
        self._metrics = metrics
        self._on_listed = on_listed
        self._backoff = Backoff(initial=0.2, cap=5.0)

    async def run(self) -> None:
        """Run until cancelled; only a permanent etcd error escapes."""
        starts: dict[str, int] | None = None
        while True:
            try:
                if starts is None:
                    revision, listing = await self._client.snapshot(self._prefixes)
                    self._controller.load(revision, listing)
                    log.info("listed", revision=revision)
                    self._on_listed(revision)
                    starts = dict.fromkeys(self._prefixes, revision + 1)
                async for batch in self._client.watch(starts):
                    self._controller.apply(batch)
                    if batch.events:
                        starts[batch.prefix] = batch.revision + 1
                    self._backoff.reset()
            except Compacted as exc:
                self._metrics.watch_restarts.labels("compacted").inc()
                log.warning("watch_compacted", compact_revision=exc.compact_revision)
                starts = None  # relist; the controller diffs, deletions included
            except EtcdUnavailable as exc:
                self._metrics.watch_restarts.labels("unavailable").inc()
                delay = self._backoff.next()
                log.warning("watch_broken", error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)
