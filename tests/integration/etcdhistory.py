"""A real etcd's history read back, and replaced under a running client as an operator does it:
a snapshot saved, then the member wiped or restored from it on the same ports
(tests/integration)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import aetcd

from statemanager.devtools.localetcd import LocalEtcd, find_etcd


def etcd_tool(name: str) -> str:
    """An etcd companion binary (etcdctl, etcdutl) installed beside the etcd the tests run."""
    return str(Path(find_etcd()).with_name(name))


def save_snapshot(server: LocalEtcd, snapshot: Path) -> None:
    """`etcdctl snapshot save` of `server` into `snapshot`."""
    subprocess.run(
        [etcd_tool("etcdctl"), "--endpoints", server.endpoint, "snapshot", "save", str(snapshot)],
        check=True, capture_output=True, env={"ETCDCTL_API": "3"},
    )  # fmt: skip


def replace_history(server: LocalEtcd, how: str, snapshot: Path) -> None:
    """Stop etcd and give it a data dir with an older history: none at all ("wiped") or the
    `snapshot` taken earlier ("restored"); start it again on the same ports."""
    server.stop()
    shutil.rmtree(server.data_dir)
    if how == "restored":
        restore = "etcdutl" if Path(etcd_tool("etcdutl")).exists() else "etcdctl"
        subprocess.run(
            [etcd_tool(restore), "snapshot", "restore", str(snapshot),
             "--data-dir", str(server.data_dir), "--name", server.name,
             "--initial-cluster", server.initial_cluster,
             "--initial-advertise-peer-urls", server.peer_url],
            check=True, capture_output=True,
        )  # fmt: skip
    server.start()


async def values_written(
    client: aetcd.Client, prefixes: list[str], suffix: str
) -> dict[str, list[str | None]]:
    """Every value each key under `prefixes` ending in `suffix` held, oldest first (None:
    deleted), from etcd's own history (a watch from revision 1, which needs that history
    uncompacted): what was written, not what a reader happened to see."""
    root = os.path.commonpath(prefixes)
    mark = f"{root}/~history-read".encode()  # under no prefix a daemon watches
    await client.put(mark, b"")  # the watch ends at this event, after everything before it
    values: dict[str, list[str | None]] = {}
    watch = await client.watch_prefix(root.encode(), start_revision=1)
    async for event in watch:
        if event.kv.key == mark:
            break
        key = event.kv.key.decode()
        if key.endswith(suffix) and key.startswith(tuple(prefixes)):
            value = event.kv.value.decode() if event.kind == "PUT" else None
            values.setdefault(key, []).append(value)
    await watch.cancel()
    await client.delete(mark)
    return values
