"""Helpers for tests that run several daemons against one etcd and call their gRPC service
as Pullpiri's components do."""

from __future__ import annotations

import json

from statemanager.devtools.localetcd import free_port
from statemanager.proto import statemanager_pb2 as pb

from conftest import Daemon, Etcd, eventually

TTL = 4  # seconds; short so the tests are quick, long enough for a loaded CI machine


def is_leader(d: Daemon) -> bool:
    """What the daemon's own /metrics says (statemanager_leader)."""
    try:
        scrape = d.scrape()
    except OSError:
        return False
    return "\nstatemanager_leader 1.0" in scrape


async def the_leader(daemons: list[Daemon], timeout: float = 20.0) -> Daemon:
    """Wait until exactly one running daemon says it leads; return it."""
    found: list[Daemon] = []

    async def one() -> bool:
        running = [d for d in daemons if d.process is not None and d.process.poll() is None]
        found[:] = [d for d in running if is_leader(d)]
        return len(found) == 1

    await eventually(one, timeout, "exactly one leader")
    return found[0]


def serving(d: Daemon, node: str = "node-a") -> int:
    port = free_port()
    d.env.update(
        STATEMANAGER_GRPC_ENABLED="true",
        STATEMANAGER_GRPC_ADDRESS=f"127.0.0.1:{port}",
        STATEMANAGER_HA_NODE_NAME=node,
    )
    return port


def container(cid: str, status: str, model: str, exit_code: str = "0") -> pb.ContainerInfo:
    return pb.ContainerInfo(
        id=cid,
        names=[f"{model}_{cid}"],
        image="registry/app:1",
        state={"Status": status, "ExitCode": exit_code},
        annotation={"io.pullpiri.annotations.model": model},
        stats={"cpu": "0.5"},
    )


async def listed(etcd: Etcd, node: str) -> set[str]:
    """Ids in `node`'s current list as etcd holds it (docs/contract.md, Node lists); only the
    current generation is left."""
    base = f"{etcd.layout.node_lists}{node}/"
    pointer = json.loads(await etcd.get(base + "list") or "null")
    if pointer is None:
        return set()
    chunks = await etcd.client.get_prefix(f"{base}gen/".encode())
    assert {kv.key.decode().split("/")[-2] for kv in chunks} <= {pointer["generation"]}
    assert len(chunks) == pointer["chunks"]
    return {line.split(b"\t")[0].decode() for kv in chunks for line in kv.value.split(b"\n")}
