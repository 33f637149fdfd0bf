"""A three-member etcd cluster on loopback for the integration tests: members started
together, found by their raft role, killed, paused and restarted on their own data dirs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from statemanager.devtools.localetcd import LocalEtcd, free_port

from conftest import eventually


class Cluster:
    """`size` members named m0, m1, … with their data under `root`; `start` returns when every
    member answers, `stop` ends those still running (paused ones resumed first)."""

    def __init__(self, root: Path, size: int = 3) -> None:
        ports = [(free_port(), free_port()) for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            LocalEtcd(root / f"m{i}", client, peer, name=f"m{i}", initial_cluster=initial)
            for i, (client, peer) in enumerate(ports)
        ]
        self.paused: set[int] = set()

    async def start(self) -> None:
        for m in self.members:
            m.start(wait=False)
        for m in self.members:
            await asyncio.to_thread(m.wait_ready)

    def stop(self) -> None:
        for m in self.members:
            m.stop()  # SIGCONT first: a paused member ends too

    def endpoints(self, *order: int) -> str:
        """The members' client URLs, comma-separated, in `order` (a daemon dials the first)."""
        return ",".join(self.members[i].endpoint for i in order)

    def pause(self, i: int) -> None:
        process = self.members[i].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        process = self.members[i].process
        assert process is not None
        process.send_signal(signal.SIGCONT)
        self.paused.discard(i)

    async def restart(self, i: int) -> None:
        """Stop member `i` (SIGTERM) and start it again on its data dir; returns when it answers."""
        self.members[i].stop()
        await asyncio.to_thread(self.members[i].start)

    async def status(self, i: int) -> dict[str, int] | None:
        """Member `i`'s own view: its id, the leader it follows, its raft term and revision
        (`etcdctl endpoint status`); None while it does not answer."""
        try:
            out = await asyncio.to_thread(
                self.members[i].etcdctl, "endpoint", "status", "-w", "json", "--command-timeout=1s"
            )
        except subprocess.CalledProcessError:
            return None
        got = json.loads(out)[0]["Status"]
        # etcd's JSON leaves out fields that are zero: `leader` while the member knows none.
        return {
            "id": got["header"]["member_id"],
            "leader": got.get("leader", 0),
            "term": got["raftTerm"],
            "revision": got["header"]["revision"],
        }

    async def leader(self, among: list[int] | None = None, timeout: float = 20.0) -> int:
        """Wait until the members in `among` (default: all not paused) that answer agree on one
        leader, itself among them and answering; return its index."""
        asked = among if among is not None else [i for i in range(len(self.members))
                                                 if i not in self.paused]  # fmt: skip
        found: list[int] = []

        async def agreed() -> bool:
            views = {i: await self.status(i) for i in asked if self.members[i].process}
            ids = {v["id"]: i for i, v in views.items() if v is not None}
            leaders = {v["leader"] for v in views.values() if v is not None}
            if len(leaders) != 1 or (leader := leaders.pop()) not in ids:
                return False
            found[:] = [ids[leader]]
            return True

        await eventually(agreed, timeout, f"one leader among members {asked}")
        return found[0]

    async def caught_up(self, i: int, with_member: int, timeout: float = 20.0) -> None:
        """Wait until member `i` has applied the revision `with_member` reports now."""
        ahead = await self.status(with_member)
        assert ahead is not None

        async def applied() -> bool:
            view = await self.status(i)
            return view is not None and view["revision"] >= ahead["revision"]

        await eventually(applied, timeout, f"member m{i} to catch up")
