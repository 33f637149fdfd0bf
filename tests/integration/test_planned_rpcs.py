"""Wire compatibility with the RPCs Pullpiri's statemanager.proto plans and leaves commented out:
a client generated from Pullpiri's own text, with those lines uncommented, calls each of them
against a running daemon and gets meaningful answers (tests/fixtures/pullpiri/README.md)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from statemanager.core.keys import Resource
from statemanager.core.triggers import DeadLetter, Trigger, dead_letter_key, encode_dead_letter
from statemanager.devtools.localetcd import free_port
from statemanager.proto import statemanager_pb2 as ours

from cluster import serving
from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are
from historyrecords import record

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pullpiri"
CLIENT = Path(__file__).parent / "upstream_client.py"
PLANNED = (
    "GetResourceState",
    "GetResourceStateHistory",
    "ListResourcesByState",
    "ForceSynchronization",
    "GetRecoveryStatus",
    "SubscribeToStateChanges",
)
# The commented-out messages and enums those RPCs use, directly or through a field.
TYPES = (
    "ASILLevel",
    "ResourceStateRequest",
    "ResourceStateResponse",
    "ResourceState",
    "StateTransitionHistory",
    "HealthStatus",
    "HealthCheck",
    "ResourceStateHistoryRequest",
    "ResourceStateHistoryResponse",
    "ListResourcesByStateRequest",
    "ListResourcesByStateResponse",
    "ForceSynchronizationRequest",
    "RecoveryStatusRequest",
    "RecoveryStatusResponse",
    "RecoveryStatus",
    "RecoveryPhase",
    "RecoveryStep",
    "RecoveryStepStatus",
    "StateChangeSubscriptionRequest",
    "StateChangeEvent",
    "EventType",
    "Severity",
)


def uncommented(text: str) -> str:
    """Pullpiri's text with the planned RPCs' lines and the blocks of TYPES uncommented (the
    first `//` of each line taken out), everything else as it was."""
    out, block = [], False
    for line in text.splitlines():
        rpc = re.match(r"\s*//\s*rpc (\w+) ", line)
        start = re.match(r"//(message|enum) (\w+) \{", line)
        if start and start.group(2) in TYPES:
            block = True
        if block or (rpc and rpc.group(1) in PLANNED):
            out.append(line.replace("//", "", 1))
            block = block and line.strip() != "//}"
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def generate(tmp: Path, descriptor_set: Path | None = None) -> Path:
    """The uncommented file and its import, compiled to Python stubs under tmp/out."""
    source, out = tmp / "src", tmp / "out"
    source.mkdir()
    out.mkdir()
    shutil.copy(FIXTURES / "monitoringserver.proto", source)
    text = uncommented((FIXTURES / "statemanager.proto").read_text())
    (source / "statemanager.proto").write_text(text)
    args = ["grpc_tools.protoc", f"-I{source}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if descriptor_set is not None:
        args.append(f"--descriptor_set_out={descriptor_set}")
    assert protoc.main([*args, "statemanager.proto", "monitoringserver.proto"]) == 0
    return out


def test_uncommenting_finds_every_planned_rpc_and_type() -> None:
    text = uncommented((FIXTURES / "statemanager.proto").read_text())
    for rpc in PLANNED:
        assert re.search(rf"^\s*rpc {rpc} ", text, re.MULTILINE), rpc
    for name in TYPES:
        assert re.search(rf"^(message|enum) {name} \{{", text, re.MULTILINE), name


def _shape(message: descriptor_pb2.DescriptorProto) -> list[tuple[str, int, int, int, str]]:
    return sorted(
        (f.name, f.number, f.type, f.label, f.type_name.rsplit(".", 1)[-1]) for f in message.field
    )


def test_upstream_messages_are_ours_field_for_field(tmp_path: Path) -> None:
    """Names, numbers, types and labels of every planned message's fields, every planned enum's
    values, and the planned methods' request, answer and streaming are the daemon's own."""
    descriptors = tmp_path / "upstream.pb"
    generate(tmp_path, descriptors)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptors.read_bytes()).file
    upstream = next(f for f in files if f.name == "statemanager.proto")
    mine = descriptor_pb2.FileDescriptorProto()
    ours.DESCRIPTOR.CopyToProto(mine)
    for kind in ("message_type", "enum_type"):
        theirs_by_name = {m.name: m for m in getattr(upstream, kind)}
        mine_by_name = {m.name: m for m in getattr(mine, kind)}
        for name in TYPES:
            if name not in theirs_by_name:
                continue
            theirs, own = theirs_by_name[name], mine_by_name[name]
            if kind == "enum_type":
                assert [(v.name, v.number) for v in theirs.value] == [
                    (v.name, v.number) for v in own.value
                ], name
            else:
                assert _shape(theirs) == _shape(own), name
    methods = {m.name: m for m in mine.service[0].method}
    for method in upstream.service[0].method:
        if method.name in PLANNED:
            own_method = methods[method.name]
            assert method.input_type.rsplit(".", 1)[-1] == own_method.input_type.rsplit(".")[-1]
            assert method.output_type.rsplit(".", 1)[-1] == own_method.output_type.rsplit(".")[-1]
            assert method.server_streaming == own_method.server_streaming, method.name


async def _run_client(
    generated: Path, port: int, requests: dict[str, Any]
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CLIENT),
        str(generated),
        str(port),
        json.dumps(requests),
        stdout=asyncio.subprocess.PIPE,
    )


async def _line(client: asyncio.subprocess.Process) -> dict[str, Any]:
    assert client.stdout is not None
    async with asyncio.timeout(30):
        line = await client.stdout.readline()
    assert line, "the client ended early"
    parsed: dict[str, Any] = json.loads(line)
    return parsed


async def _seeded(etcd: Etcd, daemon_factory: DaemonMaker, now: int) -> tuple[Daemon, int]:
    """A daemon serving gRPC (and its port) over: package `pay` in Error with its Reconcile
    pending, a dead letter for `gone`, three recorded transitions of `hist` at now + 1..3."""
    # Package `pay` enters Error with ActionController down: its trigger stays pending.
    await etcd.package("pay", ["m"])
    await etcd.scenario("recover-pay", "pay")
    await etcd.container("c", "running", "m")
    # A dead letter for `gone`, and three recorded transitions of package `hist`.
    letter = DeadLetter(Trigger("gone", "t-gone", 7), "s-gone", "refused", 5, ("s-ok",), 1.5e9)
    await etcd.put(dead_letter_key(etcd.layout, "gone").decode(), encode_dead_letter(letter))
    for generation, (before, after) in enumerate(
        [(None, "Running"), ("Running", "Degraded"), ("Degraded", "Error")], start=1
    ):
        await record(etcd, Resource.PACKAGE, "hist", generation, after, before, now + generation)
    daemon = daemon_factory(STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{free_port()}")
    port = serving(daemon)
    daemon.start()
    await daemon.wait_synced()
    await etcd.container("c", "dead", "m")
    await states_are(etcd, {"pkg:pay": "Error"})
    pending = f"{etcd.layout.own}triggers/pay"
    await eventually(lambda: _has(etcd, pending), what="pay's trigger recorded")
    return daemon, port


async def test_a_client_built_from_pullpiris_file_calls_every_planned_rpc(
    tmp_path: Path, etcd: Etcd, daemon_factory: DaemonMaker
) -> None:
    generated = generate(tmp_path)
    now = time.time_ns()
    daemon, port = await _seeded(etcd, daemon_factory, now)
    package = "PACKAGE"  # protobuf's JSON names Pullpiri's enum values: RESOURCE_TYPE_PACKAGE
    requests = {
        "GetResourceState": [
            {"resourceType": f"RESOURCE_TYPE_{package}", "resourceName": "hist"},
            {"resourceType": f"RESOURCE_TYPE_{package}", "resourceName": "pay"},
            {"resourceType": "RESOURCE_TYPE_VOLUME", "resourceName": "v"},
        ],
        "GetResourceStateHistory": [
            {
                "resourceType": f"RESOURCE_TYPE_{package}",
                "resourceName": "hist",
                "startTimeNs": str(now + 2),
            }
        ],
        "ListResourcesByState": [
            {"resourceType": f"RESOURCE_TYPE_{package}", "state": "error"},
            {"state": "error", "labelSelector": {"team": "a"}},
        ],
        "ForceSynchronization": [{}],
        "GetRecoveryStatus": [
            {"resourceType": f"RESOURCE_TYPE_{package}", "resourceName": name}
            for name in ("pay", "gone", "calm")
        ],
        "SubscribeToStateChanges": {
            "request": {
                "resourceType": f"RESOURCE_TYPE_{package}",
                "filter": {"resource_name": "hist"},
            },
            "events": 1,
        },
    }
    client = await _run_client(generated, port, requests)
    answers = [await _line(client) for _ in range(10)]
    by_rpc: dict[str, list[dict[str, Any]]] = {}
    for line in answers:
        by_rpc.setdefault(line["rpc"], []).append(line["answer"])
    _check_queries(by_rpc, now)
    relisted = [e["revision"] for e in daemon.events("listed")]
    assert len(relisted) == 2  # ForceSynchronization relisted, at the revision it answered
    assert str(relisted[1]) in by_rpc["ForceSynchronization"][0]["message"]

    subscribed = await _line(client)
    assert subscribed["subscribed"] > 0
    await record(etcd, Resource.PACKAGE, "noise", 1, "Running")  # another name: not sent
    revision = await record(etcd, Resource.PACKAGE, "hist", 4, "Running", "Error")
    event = (await _line(client))["answer"]
    assert event["eventType"] == "EVENT_TYPE_STATE_CHANGE"
    change = event["stateChange"]
    assert (change["resourceType"], change["resourceName"]) == ("RESOURCE_TYPE_PACKAGE", "hist")
    assert (change["currentState"], change["targetState"]) == ("Error", "Running")
    assert event["metadata"]["revision"] == str(revision)
    async with asyncio.timeout(30):
        assert await client.wait() == 0


def _check_queries(by_rpc: dict[str, list[dict[str, Any]]], now: int) -> None:
    hist, pay, volume = by_rpc["GetResourceState"]
    assert hist["success"] is True
    state = hist["resourceState"]
    assert state["stateGeneration"] == "3"
    assert state["lastTransitionTimeNs"] == str(now + 3)
    assert [(h["fromState"], h["toState"]) for h in state["history"]] == [
        ("", "Running"),
        ("Running", "Degraded"),
        ("Degraded", "Error"),
    ]
    assert state["desiredState"] == "" and state["asilLevel"] == "ASIL_LEVEL_UNSPECIFIED"
    assert pay["resourceState"]["currentState"] == "Error"
    assert pay["resourceState"]["metadata"]["rule"]
    assert volume["success"] is False and "model, package and scenario" in volume["message"]

    (history,) = by_rpc["GetResourceStateHistory"]
    assert [h["toState"] for h in history["history"]] == ["Degraded", "Error"]

    errors, labelled = by_rpc["ListResourcesByState"]
    assert errors["totalCount"] == 1
    assert [r["resourceName"] for r in errors["resources"]] == ["pay"]
    assert labelled["success"] is False and "label" in labelled["message"]

    (sync,) = by_rpc["ForceSynchronization"]
    assert sync["errorCode"] == "ERROR_CODE_SUCCESS" and "relisted" in sync["message"]

    executing, failed, calm = by_rpc["GetRecoveryStatus"]
    assert executing["status"]["phase"] == "RECOVERY_PHASE_EXECUTING"
    assert [s["stepName"] for s in executing["status"]["steps"]] == ["reconcile recover-pay"]
    assert failed["status"]["phase"] == "RECOVERY_PHASE_FAILED"
    assert failed["status"]["retryCount"] == 5
    assert failed["status"]["recoveryId"] == "gone@7"
    assert calm["success"] is True and "status" not in calm  # neither: no status at all


async def _has(etcd: Etcd, key: str) -> bool:
    return await etcd.get(key) is not None
