"""Pullpiri's StateManager gRPC service served by the daemon, driven by a grpc.aio
client exactly as NodeAgent and other Pullpiri components would call it."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from statemanager.core.keys import KeyLayout
from statemanager.proto import statemanager_pb2 as pb
from statemanager.proto import statemanager_pb2_grpc as pb_grpc

from cluster import container, listed, serving
from conftest import Certs, Daemon, DaemonMaker, Etcd, cli, client_pair, eventually, states_are


async def started(daemon_factory: DaemonMaker) -> tuple[Daemon, int]:
    """A daemon serving the gRPC service, synced; and the service's port."""
    d = daemon_factory()
    port = serving(d)
    d.start()
    await d.wait_synced()
    return d, port


def change(**fields: object) -> pb.StateChange:
    base: dict[str, object] = {
        "resource_type": pb.ResourceType.MODEL,
        "resource_name": "web",
        "current_state": "Running",
        "target_state": "Failed",
        "transition_id": "t-1",
        "timestamp_ns": time.time_ns(),
        "source": "nodeagent",
    }
    base.update(fields)
    return pb.StateChange(**base)  # type: ignore[arg-type]


async def test_state_change_answers_every_error_code(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """INVALID_REQUEST, RESOURCE_NOT_FOUND, INVALID_STATE_TRANSITION, SUCCESS with the cascade;
    a follower answers from its own index too, each answer naming the etcd revision it was
    judged at."""
    leader = daemon_factory()
    port = serving(leader, "node-a")
    leader.start()
    await leader.wait_synced()
    follower = daemon_factory()
    follower_port = serving(follower, "node-b")
    follower.start()
    await follower.wait_synced()
    await etcd.package("shop", ["web", "db"])
    await etcd.container("w1", "running", "web")
    await etcd.container("d1", "running", "db")
    await states_are(etcd, {"web": "Running", "pkg:shop": "Running"})
    stub = stub_for(port)

    invalid = [
        change(resource_name=""),
        change(transition_id=""),
        change(source=""),
        change(resource_type=0),
        change(resource_type=42),
        change(timestamp_ns=0),
        change(current_state="Failed"),
    ]
    for request in invalid:
        answer = await stub.SendStateChange(request)
        assert answer.error_code == pb.ErrorCode.INVALID_REQUEST, request
        assert answer.error_details
        assert answer.transition_id == request.transition_id

    missing = await stub.SendStateChange(change(resource_name="nope"))
    assert missing.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND
    assert "nope" in missing.error_details
    volume = await stub.SendStateChange(change(resource_type=pb.ResourceType.VOLUME))
    assert volume.error_code == pb.ErrorCode.RESOURCE_NOT_FOUND
    assert "not volume" in volume.error_details

    contradicts = await stub.SendStateChange(change(target_state="Failed"))
    assert contradicts.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "is Running by the rules (M5" in contradicts.error_details

    # The revision of the input that makes web Failed: a daemon confirming Failed has read it
    # (a follower may not have read the leader's state write yet).
    dead_at = await etcd.container("w1", "dead", "web")
    await states_are(etcd, {"web": "Failed", "pkg:shop": "Degraded"})
    for port_ in (port, follower_port):
        confirm = stub_for(port_).SendStateChange
        ok = await confirm(change(target_state="Failed"))

        async def caught_up() -> bool:  # a follower's index may lag the leader's write a little
            nonlocal ok
            ok = await confirm(change(target_state="Failed"))  # noqa: B023 - awaited right here
            return ok.error_code == pb.ErrorCode.SUCCESS

        await eventually(caught_up, what="the daemon's index to show web Failed")
        *cascade, at = ok.message.splitlines()
        assert cascade == [
            "model web: Failed (M2, 1 of 1 containers dead)",
            "package shop: Degraded (P3, 1 of 2 models Failed)",
        ]
        assert at.startswith("answered from this daemon's index at etcd revision ")
        assert int(at.rsplit(" ", 1)[1]) >= dead_at
        assert ok.timestamp_ns > 0
    behind = await stub_for(follower_port).SendStateChange(
        change(current_state="Failed", target_state="Running")
    )
    assert behind.error_code == pb.ErrorCode.INVALID_STATE_TRANSITION
    assert "at etcd revision" in behind.message


async def test_container_list_drives_states_and_deletes_dropped_containers(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """A node's container list is written where the watch reads it: a dead container cascades
    to the package; a container the node stops listing goes."""
    _, port = await started(daemon_factory)
    await etcd.package("pay", ["backend", "auth"])
    stub = stub_for(port)
    first = pb.ContainerList(
        node_name="node-1",
        containers=[container("b1", "running", "backend"), container("a1", "running", "auth")],
    )
    answer = await stub.SendChangedContainerList(first)
    assert answer.resp.startswith("stored 2 containers of node node-1 at revision ")
    assert answer.resp.endswith(", replacing its list of 0")
    await states_are(etcd, {"backend": "Running", "auth": "Running", "pkg:pay": "Running"})

    failed = pb.ContainerList(
        node_name="node-1",
        containers=[
            container("b1", "running", "backend"),
            container("a1", "exited", "auth", "137"),
        ],
    )
    await stub.SendChangedContainerList(failed)
    await states_are(etcd, {"auth": "Failed", "pkg:pay": "Degraded"})

    other_node = pb.ContainerList(
        node_name="node-2", containers=[container("x1", "running", "auth")]
    )
    await stub.SendChangedContainerList(other_node)
    dropped = pb.ContainerList(
        node_name="node-1", containers=[container("b1", "running", "backend")]
    )
    answer = await stub.SendChangedContainerList(dropped)
    assert answer.resp.endswith(", replacing its list of 2")
    assert await listed(etcd, "node-1") == {"b1"}
    assert await listed(etcd, "node-2") == {"x1"}  # another node's: kept
    await states_are(etcd, {"auth": "Running", "pkg:pay": "Running"})

    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.SendChangedContainerList(
            pb.ContainerList(node_name="node-1", containers=[container("a/b", "running", "m")])
        )
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "a/b" in (bad.value.details() or "")


async def test_back_to_back_lists_leave_no_stale_container(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """Lists sent back to back, faster than the watch feeds the daemon's index: each replaces
    the node's list whole, so afterwards etcd holds exactly the node's last list."""
    _, port = await started(daemon_factory)
    stub = stub_for(port)

    async def flood() -> None:  # other writers keep the daemon's watch busy, so it lags
        doc = '{"names": ["x"], "state": {"Status": "running"}}'
        for _ in range(40):
            puts = [etcd.put(f"{etcd.layout.containers}other-{i}", doc) for i in range(100)]
            await asyncio.gather(*puts)

    flooding = asyncio.create_task(flood())
    for n in range(15):
        full = [container(f"r{n}-{i}", "running", "m") for i in range(60)]
        await stub.SendChangedContainerList(pb.ContainerList(node_name="node-1", containers=full))
        await stub.SendChangedContainerList(
            pb.ContainerList(node_name="node-1", containers=full[:2])
        )
    await flooding
    assert await listed(etcd, "node-1") == {"r14-0", "r14-1"}


async def test_hostile_container_lists_get_clean_errors_and_store_nothing(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """Megabyte strings, empty and odd fields, a message over the limit: each answered with a
    gRPC error that says why and nothing of it stored, or stored cleanly (100,000 bare
    containers too); the daemon keeps serving."""
    d, port = await started(daemon_factory)
    stub = stub_for(port)
    megabyte = "x" * (1 << 20)

    def listing(*containers: pb.ContainerInfo, node: str = "node-1") -> pb.ContainerList:
        return pb.ContainerList(node_name=node, containers=containers)

    refused = {
        "value over max": (listing(pb.ContainerInfo(id="c1", image=megabyte)),
                           grpc.StatusCode.INVALID_ARGUMENT, "exceeds"),
        "megabyte node": (listing(container("c1", "running", "m"), node=megabyte),
                          grpc.StatusCode.INVALID_ARGUMENT, "longer than 253"),
        "megabyte id": (listing(pb.ContainerInfo(id=megabyte)),
                        grpc.StatusCode.INVALID_ARGUMENT, "longer than 253"),
        "empty request": (pb.ContainerList(), grpc.StatusCode.INVALID_ARGUMENT, "node_name"),
        "empty id": (listing(pb.ContainerInfo()), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        "same id twice": (listing(container("c1", "running", "m"), container("c1", "dead", "m")),
                          grpc.StatusCode.INVALID_ARGUMENT, "listed twice"),
        "model not a name": (listing(container("c1", "running", "a/b")),
                             grpc.StatusCode.INVALID_ARGUMENT, "c1"),
        "over the message limit": (listing(*(pb.ContainerInfo(id=f"c{i}", image=megabyte)
                                             for i in range(65))),
                                   grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    }  # fmt: skip
    for what, (request, code, says) in refused.items():
        sent = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.SendChangedContainerList(request)
        print(f"\n{what}: {code.name} in {time.perf_counter() - sent:.3f} s", end="")
        assert error.value.code() is code, (what, error.value.details())
        details = error.value.details() or ""
        assert says in details, (what, details)
        assert len(details) < 1000, what

    nested = b"\x4b" * 10_000 + b"\x4c" * 10_000  # an unknown group 10,000 levels deep
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for method in ("SendChangedContainerList", "SendStateChange"):
            call = channel.unary_unary(f"/statemanager.StateManagerConnection/{method}")
            for raw in (b"\xff" * 64, nested):  # no protobuf message at all
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call(raw)
                assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT, error.value
                assert "not a valid statemanager." in (error.value.details() or "")

    many = listing(*(pb.ContainerInfo(id=f"c{i}") for i in range(100_000)))  # ~1 MB, 9 chunks
    answer = await stub.SendChangedContainerList(many)
    assert answer.resp.startswith("stored 100000 containers of node node-1 at revision ")
    odd = pb.ContainerInfo(id="e1")  # every other field empty: a container of unknown status
    answer = await stub.SendChangedContainerList(listing(odd))
    assert answer.resp.endswith(", replacing its list of 100000")
    assert await listed(etcd, "node-1") == {"e1"}
    assert d.process is not None
    assert d.process.poll() is None
    assert "statemanager_synced 1.0" in d.scrape()


async def test_hostile_state_changes_get_clean_answers(
    daemon_factory: DaemonMaker,
    stub_for: Callable[[int], pb_grpc.StateManagerConnectionStub],
) -> None:
    """Megabyte strings and odd values in every field of a StateChange: INVALID_REQUEST with
    short details that echo no megabyte; the daemon keeps serving."""
    d, port = await started(daemon_factory)
    stub = stub_for(port)
    megabyte = "y" * (1 << 20)
    hostile = [
        pb.StateChange(),
        change(resource_name=megabyte),
        change(resource_name="a/b"),
        change(resource_name="bad\x00name"),
        change(transition_id=megabyte),
        change(source=megabyte),
        change(current_state=megabyte),
        change(target_state=megabyte),
        change(resource_type=2**31 - 1),
        change(timestamp_ns=-(2**63)),
    ]
    for request in hostile:
        answer = await stub.SendStateChange(request)
        assert answer.error_code == pb.ErrorCode.INVALID_REQUEST, request.resource_name[:20]
        assert 0 < len(answer.error_details) < 1000
        assert len(answer.transition_id) <= 1100
    assert d.process is not None
    assert d.process.poll() is None


def _tls_channel(port: int, ca: Path, pair: tuple[Path, Path] | None) -> grpc.aio.Channel:
    """A channel that verifies the server against `ca`, presenting `pair` (cert, key) if set."""
    cert, key = pair or (None, None)
    credentials = grpc.ssl_channel_credentials(
        ca.read_bytes(), key.read_bytes() if key else None, cert.read_bytes() if cert else None
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


async def _container_list(channel: grpc.aio.Channel, cid: str) -> pb.SendContainerListResponse:
    async with channel:
        stub = pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]
        # One node per call: a node's list replaces what that node listed before.
        request = pb.ContainerList(
            node_name=f"node-{cid}", containers=[container(cid, "running", "m")]
        )
        answer: pb.SendContainerListResponse = await stub.SendChangedContainerList(
            request, timeout=10
        )
        return answer


async def _refused(channel: grpc.aio.Channel, cid: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _container_list(channel, cid)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value


@pytest.mark.parametrize("mutual", [False, True], ids=["server-tls", "mutual-tls"])
async def test_service_over_tls(
    mutual: bool,
    etcd: Etcd,
    certs: Certs,
    daemon_factory: DaemonMaker,
    tmp_path: Path,
) -> None:
    """With a certificate the service speaks only TLS; with a client CA it serves only clients
    presenting a certificate that CA signed. Refused calls fail UNAVAILABLE and write nothing.
    (Mutual TLS takes its key from the `grpc-server-key` systemd credential.)"""
    d = daemon_factory()
    port = serving(d)
    d.env["STATEMANAGER_GRPC_TLS_CERT_FILE"] = str(certs.server_cert)
    if mutual:
        # The key as systemd passes a credential (LoadCredential=grpc-server-key:…).
        credentials = tmp_path / "credentials"
        credentials.mkdir()
        shutil.copy(certs.server_key, credentials / "grpc-server-key")
        d.env["CREDENTIALS_DIRECTORY"] = str(credentials)
        d.env["STATEMANAGER_GRPC_TLS_CLIENT_CA_FILE"] = str(certs.ca)
    else:
        d.env["STATEMANAGER_GRPC_TLS_KEY_FILE"] = str(certs.server_key)
    d.start()
    await d.wait_synced()
    assert d.events("grpc_serving")[0]["tls"] == ("mutual" if mutual else "server")

    client = (certs.client_cert, certs.client_key)
    answer = await _container_list(_tls_channel(port, certs.ca, client), "good")
    assert answer.resp.startswith("stored 1 containers of node node-good at revision ")
    assert await listed(etcd, "node-good") == {"good"}

    await _refused(grpc.aio.insecure_channel(f"127.0.0.1:{port}"), "plaintext")
    await _refused(_tls_channel(port, certs.other_ca, client), "unverified-server")
    without_cert = _tls_channel(port, certs.ca, None)
    stranger = _tls_channel(port, certs.ca, (certs.stranger_cert, certs.stranger_key))
    if mutual:
        await _refused(without_cert, "no-cert")
        await _refused(stranger, "stranger")
    else:
        await _container_list(without_cert, "no-cert")
        await _container_list(stranger, "stranger")
    expected = ["good"] if mutual else ["good", "no-cert", "stranger"]
    for cid in ("good", "no-cert", "stranger"):
        assert await listed(etcd, f"node-{cid}") == ({cid} if cid in expected else set())


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"CERT": "server_cert"}, "grpc.tls_cert_file and grpc.tls_key_file go together"),
        ({"CLIENT_CA": "ca"}, "grpc.tls_client_ca_file needs grpc.tls_cert_file"),
        ({"CERT": "client_cert", "KEY": "server_key"}, "do not load as a pair"),
        ({"CERT": "server_cert", "KEY": "server_key", "CLIENT_CA": "server_key"},
         "grpc.tls_client_ca_file"),
    ],
)  # fmt: skip
def test_grpc_tls_settings_checked_at_start(
    files: dict[str, str], named: str, certs: Certs, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """A lone certificate or CA, a certificate and key that do not match, or a client CA that is
    not a certificate stop `run` with exit 2 and a line naming the setting."""
    env = {f"STATEMANAGER_GRPC_TLS_{k}_FILE": str(getattr(certs, v)) for k, v in files.items()}
    result = cli(["run"], etcd_endpoint, layout, STATEMANAGER_GRPC_ENABLED="true", **env)
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_node_identity_needs_mutual_tls(etcd_endpoint: str, layout: KeyLayout) -> None:
    """Binding nodes to certificates without client certificates is a configuration error."""
    result = cli(
        ["run"], etcd_endpoint, layout, STATEMANAGER_GRPC_ENABLED="true",
        STATEMANAGER_GRPC_NODE_IDENTITY="true",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "grpc.node_identity needs grpc.tls_client_ca_file" in result.stderr


async def test_a_node_reports_only_for_itself(
    etcd: Etcd, certs: Certs, daemon_factory: DaemonMaker
) -> None:
    """With `grpc.node_identity` a list's node_name must be the client certificate's CN or a
    SAN: node-1 stores its own list, and its list under node-2's name is refused
    PERMISSION_DENIED, logged, counted, nothing stored; node-2's certificate still works."""
    d = daemon_factory()
    port = serving(d)
    d.env.update(
        STATEMANAGER_GRPC_TLS_CERT_FILE=str(certs.server_cert),
        STATEMANAGER_GRPC_TLS_KEY_FILE=str(certs.server_key),
        STATEMANAGER_GRPC_TLS_CLIENT_CA_FILE=str(certs.ca),
        STATEMANAGER_GRPC_NODE_IDENTITY="true",
    )
    d.start()
    await d.wait_synced()

    async def send(pair: tuple[Path, Path], node: str) -> pb.SendContainerListResponse:
        async with _tls_channel(port, certs.ca, pair) as channel:
            stub = pb_grpc.StateManagerConnectionStub(channel)  # type: ignore[no-untyped-call]
            request = pb.ContainerList(node_name=node, containers=[container("c", "running", "m")])
            answer: pb.SendContainerListResponse = await stub.SendChangedContainerList(request)
            return answer

    one, two = client_pair(certs, "node-1"), client_pair(certs, "node-2")
    await send(one, "node-1")
    assert await listed(etcd, "node-1") == {"c"}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send(one, "node-2")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "node-1" in (refused.value.details() or "")
    assert await listed(etcd, "node-2") == set()
    await send(two, "node-2")
    assert await listed(etcd, "node-2") == {"c"}
    assert 'statemanager_container_lists_total{result="not_this_node"} 1.0' in d.scrape()
    assert 'statemanager_container_lists_total{result="stored"} 2.0' in d.scrape()
    assert [e["code"] for e in d.events("container_list_refused")] == ["PERMISSION_DENIED"]
