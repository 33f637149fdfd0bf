"""`statemanager watch` against a real etcd: the transitions committed after it starts, of the
type and names asked for, one line each (text, or statemanager.watch/v1 JSON), in commit
order; `--after-revision` replays from etcd's history; exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from statemanager.core.keys import KeyLayout, Resource
from statemanager.devtools.localetcd import free_port

from conftest import Etcd, cli, daemon_env
from historyrecords import record


async def watching(endpoint: str, layout: KeyLayout, *args: str) -> asyncio.subprocess.Process:
    """`statemanager watch ARGS` running, once it has said from which revision it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statemanager",
        "watch",
        *args,
        "--config",
        os.devnull,
        env=daemon_env(endpoint, layout, 1),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        first = (await process.stderr.readline()).decode()
    assert first.startswith("# transitions committed after etcd revision "), first
    return process


async def output(process: asyncio.subprocess.Process) -> list[str]:
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().splitlines()


async def test_watch_prints_the_transitions_asked_for_as_json_lines(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    process = await watching(
        etcd_endpoint, etcd.layout, "--type", "package", "shop", "--output", "json", "--count", "2"
    )
    first = await record(etcd, Resource.PACKAGE, "shop", 1, "Running")
    await record(etcd, Resource.MODEL, "shop", 1, "Running")  # another type
    await record(etcd, Resource.PACKAGE, "cart", 1, "Running")  # another name
    second = await record(etcd, Resource.PACKAGE, "shop", 2, "Degraded", "Running")
    lines = [json.loads(line) for line in await output(process)]
    assert [(d["revision"], d["from"], d["to"]) for d in lines] == [
        (first, None, "Running"),
        (second, "Running", "Degraded"),
    ]
    doc = lines[1]
    assert doc["schema"] == "statemanager.watch/v1"
    assert (doc["type"], doc["name"], doc["rule"]) == ("package", "shop", "test")
    assert doc["transition_id"] == "t-shop-2" and doc["timestamp"].endswith("Z")
    assert set(doc) == {
        "schema", "revision", "type", "name", "from", "to", "rule", "reason", "transition_id",
        "timestamp", "timestamp_ns", "cause_revision", "caused_by", "source",
    }  # fmt: skip


async def test_watch_replays_after_a_revision_in_text(etcd: Etcd, etcd_endpoint: str) -> None:
    before = await record(etcd, Resource.MODEL, "web", 1, "Running")
    missed = await record(etcd, Resource.MODEL, "web", 2, "Failed", "Running")
    process = await watching(
        etcd_endpoint, etcd.layout, "web", "--after-revision", str(before), "--count", "2"
    )
    live = await record(etcd, Resource.MODEL, "web", 3, None, "Failed")
    lines = await output(process)
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"model web: Running → Failed (test: written by the test, generation 2) at revision {missed}",
        f"model web: Failed → (deleted) (test: written by the test, generation 3) at revision {live}",
    ]


def test_watch_exit_codes(etcd: Etcd, etcd_endpoint: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    down = cli(["watch", "--etcd-timeout-seconds", "1"], nobody, etcd.layout)
    assert down.returncode == 3 and "statemanager:" in down.stderr
    bad = cli(["watch", "a/b"], etcd_endpoint, etcd.layout)
    assert bad.returncode == 2 and "'a/b'" in bad.stderr
