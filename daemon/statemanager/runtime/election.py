"""Leader election on an etcd lease, after etcd's `client/v3/concurrency` Election.

Every daemon campaigns by creating `{own}leader/{lease id}` bound to a lease of its own, its
value `{"format": 2, "node": "<its node name>"}` (format 1, written by earlier releases and read
still, was the bare node name; a later format is left alone and reported, see
runtime/records.py); the key with the lowest create revision leads. The leader's key and create
revision form the `Fence` every state write and trigger record carries: when the lease lapses
etcd deletes the key, and every write the deposed leader still attempts fails atomically.

Nobody polls, as in etcd's `Campaign`: a follower reads the candidates, then waits on a watch
for the deletion of the key just before its own (its predecessor, by create revision) and of
the leader's key (so it knows who leads), from the revision after the one it read them at, so a
deletion in between is not missed; then it reads again. A leader watches its own key only.
Besides that, each daemon renews its lease every third of the TTL.

Locally a leader also stops trusting itself once the last successful renewal is older than the
TTL minus a margin, so a paused (SIGSTOP) leader stops writing before it even asks etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Protocol

import structlog

from statemanager.core.errors import Compacted, EtcdError, EtcdUnavailable
from statemanager.core.ports import Candidate, Candidates, Fence, KeyValue, WatchBatch
from statemanager.core.records import LEADER_KEY, LaterFormat, LaterFormatReporter, format_of
from statemanager.runtime.backoff import Backoff, wait_woken

RESIGN_SECONDS = 2.0

log = structlog.get_logger("statemanager.election")

# A broken stream raises at once, and an etcd that stops answering fails the next lease
# renewal, which starts the watch again. A stream that only goes silent (a half-open
# connection while renewals still succeed) would leave a follower waiting forever for a dead
# leader's key to go: progress notifications are asked for, and silence past the limit counts
# as a broken watch (the candidates are read again). A progress answer costs the daemon about
# 1 ms of CPU (docs/design.md, Periodic wake-ups): every 10 s, a silent stream is found within
# 30 s, in a fault that renewals on the same connection survive.
WATCH_PROGRESS_SECONDS = 10.0
WATCH_SILENCE_SECONDS = 3 * WATCH_PROGRESS_SECONDS


class ElectionClient(Protocol):
    async def grant_lease(self, ttl: int) -> int: ...
    async def keep_alive(self, lease_id: int) -> int: ...
    async def revoke_lease(self, lease_id: int) -> None: ...
    async def create_if_absent(self, key: bytes, value: bytes, lease_id: int) -> int: ...
    async def candidates(self, prefix: str) -> Candidates: ...
    async def list_prefix(self, prefix: str) -> list[KeyValue]: ...
    async def delete(self, key: bytes) -> None: ...
    def watch(
        self, starts: Mapping[str, int], progress_every: float
    ) -> AsyncGenerator[WatchBatch, None]: ...


class Leadership(Protocol):
    """What a writer needs from the election: wait to lead (getting the fence to write with),
    whether it still leads under that fence, and report a write that was fenced off."""

    async def wait_leader(self) -> Fence: ...
    def fence(self) -> Fence | None: ...
    def lost(self) -> None: ...


class Reachability(Protocol):
    """Told how each of the election's requests went: they are the daemon's probe of etcd."""

    def failed(self, error: str) -> None: ...
    def succeeded(self) -> None: ...


class LeaseLost(EtcdUnavailable):
    """Our lease expired (etcd says its TTL is 0): campaign again with a new one."""


def election_prefix(own_prefix: str) -> str:
    return f"{own_prefix}leader/"


LEADER_KEY_FORMAT = 2


def candidate_value(node: str) -> bytes:
    """The value of a candidate key of `node` (format 2)."""
    return json.dumps({"format": LEADER_KEY_FORMAT, "node": node}, sort_keys=True).encode()


def candidate_node(value: bytes) -> str | LaterFormat:
    """The node name a candidate key's value holds, in format 1 (the bare name) or 2, or
    LaterFormat for a newer daemon's. A value that is neither reads as a bare name: any bytes
    were a valid format-1 value, and a name is only shown, never trusted."""
    try:
        body = json.loads(value) if value.startswith(b"{") else None
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        version = format_of(body, 0)
        if version is not None and version > LEADER_KEY_FORMAT:
            return LaterFormat(LEADER_KEY, version)
        node = body.get("node")
        if version == LEADER_KEY_FORMAT and isinstance(node, str):
            return node
    return value.decode("utf-8", "replace")


class Election:
    def __init__(
        self,
        *,
        client: ElectionClient,
        own_prefix: str,
        node: str,
        ttl: int,
        on_change: Callable[[bool, Fence | None, int], None],
        on_other_leader: Callable[[int], None],
        reachability: Reachability,
        later_formats: LaterFormatReporter,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_change` is told when this daemon starts or stops leading: whether it leads,
        under which leader key, and the revision etcd answered the read that placed it at (0
        when it stops). `on_other_leader` is told when this daemon, following, finds another
        daemon's key leading (once per such key), and the revision it found it at: that
        daemon may write meanwhile, even if this one later leads again under the same key (a
        restore can bring back a key older than ours, which then leads while ours stays: the
        simulation's swarm seed 17044339)."""
        self._client = client
        self._prefix = election_prefix(own_prefix)
        self._node = node
        self._value = candidate_value(node)
        self._later_formats = later_formats
        self._ttl = ttl
        self._on_change = on_change
        self._on_other_leader = on_other_leader
        self._other_leader: bytes | None = None  # the last other leader key told of
        self._reachability = reachability
        self._clock = clock
        self._leading = False
        self._announced = False  # a leader or follower line has been logged
        self._valid_until = 0.0
        self._fence: Fence | None = None
        self._lease = 0
        self._writable = asyncio.Event()  # set whenever `fence()` may have become valid
        self._wake = asyncio.Event()  # a watched key went, a watch broke, a write was fenced
        self._decided = False
        self._leader_name: str | None = None
        self._renew_every = ttl / 3
        self._margin = min(1.0, ttl / 5)

    def leader_name(self) -> str | None:
        """The node name of the current leader, as of the last look (None before the first)."""
        return self._leader_name

    @property
    def decided(self) -> bool:
        """True once a campaign has seen where this daemon stands (leader or follower)."""
        return self._decided

    def fence(self) -> Fence | None:
        """The guard for a write, or None when this daemon must not write now."""
        if self._leading and self._clock() < self._valid_until:
            return self._fence
        return None

    async def wait_leader(self) -> Fence:
        """Wait until this daemon leads; returns the fence to write with."""
        while True:
            fence = self.fence()
            if fence is not None:
                return fence
            self._writable.clear()
            await self._writable.wait()

    def lost(self) -> None:
        """A write was fenced off: stop writing now; the campaign loop finds out where we stand."""
        self._set(False, None, "a write was fenced off: our leader key is gone or replaced")
        self._wake.set()

    async def run(self) -> None:
        """Campaign and hold leadership until cancelled; etcd outages and refusals (a lease
        grant under the space quota alarm, a permission missing) mean follower meanwhile."""
        backoff = Backoff(initial=0.2, cap=2.0)
        earlier_self_forgotten = False
        while True:
            try:
                if not earlier_self_forgotten:
                    await self._forget_earlier_self()
                    earlier_self_forgotten = True
                await self._campaign_and_hold(backoff)
            except (EtcdUnavailable, EtcdError) as exc:
                await self._retry_after(exc, backoff)

    async def resign(self, within: float = RESIGN_SECONDS) -> None:
        """Give up leadership now (SIGTERM) so another daemon takes over without waiting;
        bounded by `within` seconds so a dead etcd cannot hold up the exit."""
        self._set(False, None, "resigned: the daemon is stopping")
        if self._lease:
            try:
                async with asyncio.timeout(within):
                    await self._client.revoke_lease(self._lease)  # deletes our key with it
            except (EtcdUnavailable, TimeoutError) as exc:
                log.warning("resign_failed", error=str(exc) or "no answer in time")
            self._lease = 0

    async def _campaign_and_hold(self, backoff: Backoff) -> None:
        """Create our candidate key on a new lease, then hold it until the lease is lost
        (LeaseLost): renew the lease every third of the TTL and, in between, wait on a watch for
        who leads to change. A failed request only makes us stop writing until the next one
        succeeds: our key keeps its place in line while the lease lives."""
        renewed = self._clock()
        self._lease = lease = await self._client.grant_lease(self._ttl)
        key = f"{self._prefix}{lease:016x}".encode()
        created = await self._client.create_if_absent(key, self._value, lease)
        fence = Fence(key, created)
        self._valid_until = renewed + self._ttl - self._margin
        log.info("campaigning", node=self._node, key=key.decode(), lease=f"{lease:x}")
        watch: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    # One deadline, compared and subtracted alike: `clock - renewed < every`
                    # with `renewed + every - clock <= 0` (float rounding) made a zero wait
                    # that never renewed, a busy loop that froze a virtual clock.
                    if self._clock() >= renewed + self._renew_every:
                        renewed = await self._renew(lease)
                    if watch is None:
                        watch = await self._place(fence, backoff)
                    await wait_woken(self._wake, renewed + self._renew_every - self._clock())
                    if self._wake.is_set():
                        self._wake.clear()
                        woken, watch = watch, None
                        if woken.done():
                            woken.result()  # raises what broke the watch
                        woken.cancel()
                except LeaseLost:
                    raise
                except EtcdUnavailable as exc:
                    if watch is not None:
                        watch.cancel()
                        watch = None
                    await self._retry_after(exc, backoff)
        finally:
            if watch is not None:
                watch.cancel()

    async def _renew(self, lease: int) -> float:
        """Renew the lease once; returns when the request was sent, the start of the new
        validity window (a leader trusts itself until TTL minus the margin after it)."""
        sent = self._clock()
        if await self._client.keep_alive(lease) <= 0:
            raise LeaseLost("our lease expired; campaigning again")
        self._valid_until = sent + self._ttl - self._margin
        self._reachability.succeeded()
        if self._leading:
            self._writable.set()
        return sent

    async def _place(self, fence: Fence, backoff: Backoff) -> asyncio.Task[None]:
        """Read the candidates, take our place (leader or follower), and start the watch that
        wakes us when it may change: for a leader, its own key deleted from outside; for a
        follower, its predecessor's key (its turn may have come) or the leader's (another
        daemon may lead now)."""
        revision, candidates = await self._client.candidates(self._prefix)
        self._reachability.succeeded()
        if Candidate(fence.key, self._value, fence.create_revision) not in candidates:
            raise LeaseLost("our candidate key is gone; campaigning again")
        leader = candidates[0]
        self._leader_name = self._node_of(leader.key, leader.value)
        leading = leader.key == fence.key
        why = "our candidate key is the oldest" if leading else f"{self._leader_name} leads"
        self._set(leading, fence, why, revision)
        if leading:
            self._other_leader = None
        elif leader.key != self._other_leader:
            self._other_leader = leader.key
            self._on_other_leader(revision)
        self._decided = True
        backoff.reset()
        if leading:
            watched = {fence.key}
        else:
            predecessor = [c for c in candidates if c.create_revision < fence.create_revision][-1]
            watched = {predecessor.key, leader.key}
        watch = asyncio.create_task(self._until_deleted(watched, revision + 1), name="election")
        watch.add_done_callback(self._watch_ended)
        return watch

    def _watch_ended(self, watch: asyncio.Task[None]) -> None:
        if not watch.cancelled():  # we cancel it only when we no longer wait on it
            self._wake.set()

    async def _until_deleted(self, keys: set[bytes], start: int) -> None:
        """Return once one of `keys` is deleted at revision `start` or later, once that
        history is compacted away, or once the stream stays silent past the limit (the caller
        reads again in each case). Raises EtcdUnavailable when the watch breaks."""
        starts = {key.decode(): start for key in keys}  # a prefix that is the whole key
        with contextlib.suppress(Compacted, TimeoutError):
            async with contextlib.aclosing(
                self._client.watch(starts, WATCH_PROGRESS_SECONDS)
            ) as batches:
                while True:
                    async with asyncio.timeout(WATCH_SILENCE_SECONDS):
                        batch = await anext(batches, None)
                    if batch is None or any(
                        e.value is None and e.key in keys for e in batch.events
                    ):
                        return

    async def _forget_earlier_self(self) -> None:
        """A key under our node name is an earlier run of this daemon (killed before its lease
        lapsed): remove it rather than wait a TTL behind ourselves. Node names must be unique."""
        for kv in await self._client.list_prefix(self._prefix):
            if self._node_of(kv.key, kv.value) == self._node:
                await self._client.delete(kv.key)
                log.info("removed_earlier_candidate", key=kv.key.decode("utf-8", "replace"))

    def _node_of(self, key: bytes, value: bytes) -> str:
        """The node a candidate key names; a newer daemon's format is reported, and named so
        (its key keeps its place in line all the same: the order is by create revision)."""
        node = candidate_node(value)
        if isinstance(node, LaterFormat):
            self._later_formats.report(key, node)
            return f"unknown (a newer statemanager's key {key.decode('utf-8', 'replace')})"
        return node

    async def _retry_after(self, exc: EtcdUnavailable | EtcdError, backoff: Backoff) -> None:
        """A request failed: stop writing, report it, wait a backoff. The outage itself is
        logged once by `reachability`; each retry only at debug level."""
        if isinstance(exc, LeaseLost):
            self._set(False, None, str(exc))
        else:
            self._reachability.failed(str(exc))
            self._set(False, None, "etcd unreachable or refusing: cannot tell who leads")
        delay = backoff.next()
        log.debug("election_retry", error=str(exc), retry_in=round(delay, 2))
        await asyncio.sleep(delay)

    def _set(self, leading: bool, fence: Fence | None, why: str, revision: int = 0) -> None:
        """Record where this daemon stands (found at `revision`); log it (with why) when that
        changes, and once at the first placement, so every daemon's log says whether it
        leads."""
        self._fence = fence
        changed = leading != self._leading
        if not changed and self._announced:
            return
        self._announced = True
        self._leading = leading
        log.info("leader" if leading else "follower", node=self._node, why=why)
        if leading:
            self._writable.set()
        if changed:
            self._on_change(leading, fence, revision)
