"""Reconcile triggers against a real grpc.aio ActionController in the test process (docs/contract.md, Reconcile delivery)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from subprocess import CompletedProcess

import grpc
import pytest

from statemanager.core.keys import KeyLayout
from statemanager.devtools.localetcd import LocalEtcd, free_port
from statemanager.proto import actioncontroller_pb2 as pb

from conftest import Certs, Daemon, DaemonMaker, Etcd, cli, eventually, states_are
from fakeactioncontroller import FakeActionController, fake_controller
from faultproxy import FaultProxy

# What Pullpiri's own ActionController answers a Reconcile with current = FAILED (its
# manager.rs, reconcile_do), with gRPC code INTERNAL, every time.
PULLPIRI_REFUSAL = "Invalid current status: Failed. Cannot reconcile from this state"


@pytest.fixture
async def controller() -> AsyncIterator[FakeActionController]:
    async with fake_controller() as fake:
        yield fake


MAX_REFUSALS = 4  # the daemons of these tests give a trigger up after this many refusals


@pytest.fixture
def start_daemon(
    daemon_factory: DaemonMaker, controller: FakeActionController
) -> Callable[[], Daemon]:
    def start() -> Daemon:
        d = daemon_factory()
        d.env["STATEMANAGER_ACTIONCONTROLLER_ADDRESS"] = f"127.0.0.1:{controller.port}"
        d.env["STATEMANAGER_ACTIONCONTROLLER_MAX_BACKOFF_SECONDS"] = "1"
        d.env["STATEMANAGER_ACTIONCONTROLLER_MAX_REFUSALS"] = str(MAX_REFUSALS)
        d.start()
        return d

    return start


async def trigger_keys(etcd: Etcd) -> list[str]:
    got = await etcd.client.get_prefix(f"{etcd.layout.own}triggers/".encode())
    return sorted(kv.key.decode() for kv in got)


async def calls(controller: FakeActionController, n: int, timeout: float = 30.0) -> None:
    async def enough() -> bool:
        return len(controller.requests) >= n

    await eventually(enough, timeout, f"{n} Reconcile calls (have {controller.scenarios()})")


async def running_package(etcd: Etcd, package: str = "pay") -> None:
    await etcd.package(package, ["m"])
    await etcd.container("c", "running", "m")
    await states_are(etcd, {f"pkg:{package}": "Running"})


async def daemon_then_error(etcd: Etcd, start_daemon: Callable[[], Daemon]) -> Daemon:
    """A synced daemon; package `pay` Running; then its only container dies (→ Error)."""
    d = start_daemon()
    await d.wait_synced()
    await running_package(etcd)
    await etcd.container("c", "dead", "m")
    return d


async def test_error_sends_one_reconcile_per_scenario(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Running → Error: one Reconcile per targeting scenario, sorted, FAILED → RUNNING."""
    await controller.start()
    await etcd.scenario("zeta_recovery", "pay")
    await etcd.scenario("alpha_recovery", "pay")
    await etcd.scenario("other", "elsewhere")
    d = await daemon_then_error(etcd, start_daemon)
    await calls(controller, 2)
    assert controller.scenarios() == ["alpha_recovery", "zeta_recovery"]
    for request in controller.requests:
        assert request.current == pb.PodStatus.FAILED
        assert request.desired == pb.PodStatus.RUNNING

    async def removed() -> bool:
        return await trigger_keys(etcd) == []

    await eventually(removed, 10, "acknowledged triggers removed")
    await asyncio.sleep(1.5)  # longer than the retry backoff: a duplicate would show now
    assert len(controller.requests) == 2
    delivered = d.events("reconcile_delivered")
    assert {e["trigger"].split("@")[0] for e in delivered} == {
        "pay/alpha_recovery",
        "pay/zeta_recovery",
    }
    assert all(e["revision"] == delivered[0]["revision"] > 0 for e in delivered)


async def test_package_without_scenario_warns_and_sends_nothing(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Error with no scenario: a warning and a metric, no request; its trigger is removed."""
    await controller.start()
    d = start_daemon()
    await d.wait_synced()
    await running_package(etcd, "lonely")
    await etcd.container("c", "dead", "m")
    await states_are(etcd, {"pkg:lonely": "Error"})

    async def warned() -> bool:
        return bool(d.events("reconcile_no_scenario"))

    await eventually(warned, 10, "the no-scenario warning")
    assert "statemanager_reconcile_no_scenario_total 1.0" in d.scrape()

    async def removed() -> bool:
        return await trigger_keys(etcd) == []

    await eventually(removed, 10, "the trigger removed")
    assert controller.requests == []


async def test_delivered_once_actioncontroller_starts(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """ActionController down when the package enters Error, up once the daemon has retried
    more times than the refusal limit: delivered then; the state write did not wait for it, and
    unavailability is no refusal (never dead-lettered, however many attempts)."""
    await etcd.scenario("s", "pay")
    d = await daemon_then_error(etcd, start_daemon)
    await states_are(etcd, {"pkg:pay": "Error"}, timeout=3)
    assert len(await trigger_keys(etcd)) == 1

    async def retried_beyond_the_refusal_limit() -> bool:
        return len(d.events("reconcile_retry")) > MAX_REFUSALS

    await eventually(retried_beyond_the_refusal_limit, 30, "retries past the refusal limit")
    await controller.start()
    await calls(controller, 1)
    assert controller.scenarios() == ["s"]
    assert not d.events("reconcile_dead_lettered")


async def test_non_zero_status_is_retried_until_acknowledged(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Status 1 three times, then 0: four calls, then none."""
    controller.statuses = [1, 1, 1]
    await controller.start()
    await etcd.scenario("s", "pay")
    d = await daemon_then_error(etcd, start_daemon)
    await calls(controller, 4)
    await asyncio.sleep(2)  # deliberately: a fifth call would show within this time
    assert len(controller.requests) == 4
    assert await trigger_keys(etcd) == []
    assert 'statemanager_reconcile_requests_total{result="rejected"} 3.0' in d.scrape()


async def test_trigger_survives_a_daemon_crash(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Daemon SIGKILLed after the Error write, before delivery: delivered after restart."""
    await etcd.scenario("s", "pay")
    first = await daemon_then_error(etcd, start_daemon)
    await states_are(etcd, {"pkg:pay": "Error"})
    assert len(await trigger_keys(etcd)) == 1
    first.kill()
    await controller.start()
    second = start_daemon()
    await calls(controller, 1)
    assert controller.scenarios() == ["s"]
    assert second.events("reconcile_resumed")


async def test_trigger_dropped_when_package_recovers_first(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """The package leaves Error before ActionController is back: no call, trigger removed."""
    await etcd.scenario("s", "pay")
    d = await daemon_then_error(etcd, start_daemon)
    await states_are(etcd, {"pkg:pay": "Error"})
    await etcd.container("c", "running", "m")
    await states_are(etcd, {"pkg:pay": "Running"})

    async def removed() -> bool:
        return await trigger_keys(etcd) == []

    await eventually(removed, 10, "the stale trigger removed")
    await controller.start()
    await asyncio.sleep(2)  # deliberately: a call would show within this time
    assert controller.requests == []
    assert d.events("reconcile_dropped")


async def test_second_error_entry_is_a_second_trigger(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Error → Running → Error: a second trigger, a second call, with a newer revision."""
    await controller.start()
    await etcd.scenario("s", "pay")
    d = await daemon_then_error(etcd, start_daemon)
    await calls(controller, 1)
    await etcd.container("c", "running", "m")
    await states_are(etcd, {"pkg:pay": "Running"})
    await etcd.container("c", "dead", "m")
    await calls(controller, 2)
    revisions = [e["revision"] for e in d.events("reconcile_delivered")]
    assert len(revisions) == 2
    assert revisions[0] < revisions[1]


async def test_committed_stubs_match_the_proto() -> None:
    """`python -m statemanager.proto.generate --check` passes on the committed stubs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statemanager.proto.generate", "--check",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"match" in out


@pytest.mark.parametrize("trusted", [True, False], ids=["right-ca", "wrong-ca"])
async def test_mutual_tls(
    etcd: Etcd, certs: Certs, daemon_factory: DaemonMaker, trusted: bool
) -> None:
    """With ca/cert/key files the channel is mutual TLS; a CA that did not sign the server's
    certificate gets no request through, and the trigger stays pending."""
    fake = FakeActionController(free_port(), tls=certs)
    await fake.start()
    try:
        d = daemon_factory()
        d.env.update(
            STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{fake.port}",
            STATEMANAGER_ACTIONCONTROLLER_MAX_BACKOFF_SECONDS="1",
            STATEMANAGER_ACTIONCONTROLLER_CA_FILE=str(certs.ca if trusted else certs.other_ca),
            STATEMANAGER_ACTIONCONTROLLER_CERT_FILE=str(certs.client_cert),
            STATEMANAGER_ACTIONCONTROLLER_KEY_FILE=str(certs.client_key),
        )
        # Before the daemon starts: written just after its watch opens, the scenario could
        # reach it after the container's death (etcd orders events across watches only once
        # they have caught up), and then no trigger would be recorded.
        await etcd.scenario("s", "pay")
        d.start()
        await d.wait_synced()
        await running_package(etcd)
        await etcd.container("c", "dead", "m")
        if trusted:
            await calls(fake, 1)
            return

        async def retried() -> bool:
            return len(d.events("reconcile_retry")) >= 2

        await eventually(retried, 15, "failed TLS attempts")
        assert fake.requests == []
        assert len(await trigger_keys(etcd)) == 1
    finally:
        await fake.stop()


async def test_trigger_delivered_when_its_commit_answer_is_lost(
    private: Etcd, server: LocalEtcd, make_daemon: DaemonMaker
) -> None:
    """The transaction writing Error and its trigger commits, but etcd's answer is lost (a proxy
    swallows it and resets the connection): the writer's retry then finds its own write and logs
    its transitions (`answer_lost`), and the trigger still reaches ActionController, counted and
    logged as recorded."""
    proxy = FaultProxy(server.client_port)
    await proxy.start()
    fake = FakeActionController(free_port())
    try:
        d = make_daemon(
            STATEMANAGER_ETCD_ENDPOINTS=proxy.endpoint,
            STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{fake.port}",
            STATEMANAGER_ACTIONCONTROLLER_MAX_BACKOFF_SECONDS="1",
        )
        await private.scenario("s", "pay")  # before the start, as in test_mutual_tls
        d.start()
        await d.wait_synced()
        await running_package(private)
        proxy.lose_answer_to(f"{private.layout.own}triggers/pay".encode())
        await private.container("c", "dead", "m")
        await asyncio.wait_for(proxy.tripped.wait(), 15)

        async def committed() -> bool:
            return len(await trigger_keys(private)) == 1

        await eventually(committed, 10, "the Error write and its trigger committed")
        proxy.cut()
        await states_are(private, {"pkg:pay": "Error"})

        async def retried() -> bool:
            return bool(d.events("etcd_write_retry"))

        await eventually(retried, 10, "the writer to retry the transaction it got no answer to")

        async def pending() -> bool:
            return "statemanager_reconcile_pending_triggers 1.0" in d.scrape()

        await eventually(pending, 15, "the trigger counted as pending")
        await fake.start()
        await calls(fake, 1)
        assert fake.scenarios() == ["s"]

        async def removed() -> bool:
            return await trigger_keys(private) == []

        await eventually(removed, 10, "the delivered trigger removed")
        scrape = d.scrape()
        assert "statemanager_reconcile_pending_triggers 0.0" in scrape
        assert 'statemanager_reconcile_triggers_total{outcome="recorded"} 1.0' in scrape
        assert 'statemanager_reconcile_triggers_total{outcome="delivered"} 1.0' in scrape
        recorded = [(e["package"], e["revision"]) for e in d.events("reconcile_recorded")]
        delivered = [(e["package"], e["revision"]) for e in d.events("reconcile_delivered")]
        assert recorded == delivered and len(recorded) == 1
        # The transitions of the write whose answer was lost are logged all the same, at the
        # revision read back, the package's with the id its trigger carries.
        lost = {e["name"]: e for e in d.events("transition") if e.get("answer_lost")}
        assert set(lost) == {"m", "pay"}
        assert (lost["m"]["to_state"], lost["pay"]["to_state"]) == ("Failed", "Error")
        assert lost["pay"]["revision"] == lost["m"]["revision"] == recorded[0][1]
        [trigger] = d.events("reconcile_recorded")
        assert lost["pay"]["transition_id"] == trigger["transition_id"]
        assert 'statemanager_transitions_total{resource="package",state="Error"} 1.0' in scrape
    finally:
        await fake.stop()
        await proxy.stop()


async def test_package_with_130_scenarios_enters_error_whole(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """130 scenarios target a package that enters Error: model and package written together,
    one trigger record, 130 Reconcile calls, and the daemon keeps running."""
    await controller.start()
    names = [f"s{i:03}" for i in range(130)]  # more than etcd's --max-txn-ops (128)
    for name in names:
        await etcd.scenario(name, "p1")
    d = start_daemon()
    await d.wait_synced()
    await etcd.package("p1", ["m1"])
    await etcd.container("c1", "running", "m1")
    await states_are(etcd, {"m1": "Running", "pkg:p1": "Running"})
    await etcd.container("c1", "dead", "m1")
    await states_are(etcd, {"m1": "Failed", "pkg:p1": "Error"})
    assert await etcd.mod_revision(f"{etcd.layout.model_states}m1/state") == (
        await etcd.mod_revision(f"{etcd.layout.package_states}p1/state")
    ), "the model and its package were split across transactions"
    await calls(controller, 130, timeout=30)
    assert controller.scenarios() == names
    assert d.process is not None
    assert d.process.poll() is None, d.tail()
    assert not d.events("task_failed")


async def test_outside_write_to_error_state_is_a_correction(
    etcd: Etcd, controller: FakeActionController, start_daemon: Callable[[], Daemon]
) -> None:
    """Someone writes Running over an Error package's state: it is put back as a correction,
    with no new trigger and no second Reconcile."""
    await controller.start()
    await etcd.scenario("s", "pay")
    d = start_daemon()
    await d.wait_synced()
    await etcd.package("pay", ["m"])
    await etcd.container("c", "running", "m")
    await states_are(etcd, {"pkg:pay": "Running"})
    await etcd.container("c", "dead", "m")
    await states_are(etcd, {"pkg:pay": "Error"})
    await calls(controller, 1)

    state_key = f"{etcd.layout.package_states}pay/state"
    outside = await etcd.put(state_key, "Running")

    async def put_back() -> bool:
        return await etcd.mod_revision(state_key) > outside and (
            await etcd.package_state("pay") == "Error"
        )

    await eventually(put_back, 10, "the Error state put back")
    # A trigger recorded with the put-back would be delivered and removed by now or soon:
    # wait until none is left, then count the calls.
    triggers = f"{etcd.layout.own}triggers/"

    async def no_trigger_left() -> bool:
        return not await etcd.client.get_prefix(triggers.encode())

    await eventually(no_trigger_left, 10, "no trigger pending")

    async def correction_logged() -> bool:
        return bool(d.events("correction"))

    # The line follows the commit that etcd already shows.
    await eventually(correction_logged, 10, "the correction's log line")
    assert len(controller.requests) == 1, controller.scenarios()
    [correction] = d.events("correction")
    assert (correction["name"], correction["found"], correction["restored"]) == (
        "pay",
        "Running",
        "Error",
    )
    into_error = [t for t in d.events("transition") if t["to_state"] == "Error"]
    assert len(into_error) == 1, into_error
    assert 'statemanager_corrections_total{resource="package"} 1.0' in d.scrape()


async def dead_letter(etcd: Etcd, package: str = "pay") -> dict[str, object] | None:
    value = await etcd.get(f"{etcd.layout.own}deadletters/{package}")
    return None if value is None else dict(json.loads(value))


async def dead_lettered(etcd: Etcd, timeout: float = 30) -> dict[str, object]:
    async def there() -> bool:
        return await dead_letter(etcd) is not None

    await eventually(there, timeout, "the trigger moved to the dead letters")
    record = await dead_letter(etcd)
    assert record is not None
    return record


async def triggers_cli(
    etcd_endpoint: str, layout: KeyLayout, *args: str, python: str = sys.executable
) -> CompletedProcess[str]:
    """`statemanager triggers ARGS` (run by `python`'s installation)."""
    # In a thread: the fake ActionController answers from this test's event loop meanwhile.
    return await asyncio.to_thread(cli, ["triggers", *args], etcd_endpoint, layout, python)


async def test_refused_trigger_is_dead_lettered_then_redelivered(
    etcd: Etcd,
    etcd_endpoint: str,
    layout: KeyLayout,
    controller: FakeActionController,
    start_daemon: Callable[[], Daemon],
) -> None:
    """ActionController answers INTERNAL as Pullpiri's does: the trigger is refused
    max_refusals times, moved to the dead letters (kept in etcd, counted, listed by the CLI),
    and `triggers redeliver` puts it back: once ActionController accepts, it is delivered."""
    controller.refusal = (grpc.StatusCode.INTERNAL, PULLPIRI_REFUSAL)
    await controller.start()
    await etcd.scenario("s", "pay")
    d = await daemon_then_error(etcd, start_daemon)
    record = await dead_lettered(etcd)
    assert await trigger_keys(etcd) == []
    assert record["package"] == "pay" and record["scenario"] == "s"
    assert record["refusals"] == MAX_REFUSALS
    assert record["error"] == f"INTERNAL: {PULLPIRI_REFUSAL}"
    sent = len(controller.requests)  # more only if a call timed out on a loaded machine
    assert sent >= MAX_REFUSALS
    scrape = d.scrape()
    assert "statemanager_reconcile_dead_letters 1.0" in scrape
    assert 'statemanager_reconcile_triggers_total{outcome="dead_lettered"} 1.0' in scrape
    assert f'statemanager_reconcile_requests_total{{result="error"}} {MAX_REFUSALS}.0' in scrape
    (event,) = d.events("reconcile_dead_lettered")
    assert event["scenario"] == "s" and event["refusals"] == MAX_REFUSALS

    listed = await triggers_cli(etcd_endpoint, layout, "list")
    assert listed.returncode == 0, listed.stderr
    assert "dead-letter  pay  revision" in listed.stdout
    assert f"after {MAX_REFUSALS} refusals; last by scenario s: INTERNAL: {PULLPIRI_REFUSAL}" in (
        listed.stdout
    )
    as_json = await triggers_cli(etcd_endpoint, layout, "list", "--output", "json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["schema"] == "statemanager.triggers/v1"
    assert document["pending"] == [] and document["problems"] == []
    (letter,) = document["dead_letters"]
    assert (letter["package"], letter["scenario"], letter["refusals"]) == ("pay", "s", MAX_REFUSALS)
    assert letter["transition_id"] == record["transition_id"]
    assert len(controller.requests) == sent  # given up: nothing more was sent

    controller.refusal = None
    redelivered = await triggers_cli(etcd_endpoint, layout, "redeliver", "pay")
    assert redelivered.returncode == 0, redelivered.stderr
    assert "pay: redelivered (pending again)" in redelivered.stdout
    await calls(controller, sent + 1)

    async def delivered() -> bool:
        return await trigger_keys(etcd) == [] and "dead_letters 0.0" in d.scrape()

    await eventually(delivered, 10, "the redelivered trigger delivered and removed")
    assert await dead_letter(etcd) is None
    assert len(d.events("reconcile_delivered")) == 1
    again = await triggers_cli(etcd_endpoint, layout, "redeliver", "pay")
    assert again.returncode == 1
    assert "no dead letter for package 'pay'" in again.stderr


async def test_old_refused_trigger_is_dead_lettered_and_dropped(
    etcd: Etcd,
    etcd_endpoint: str,
    layout: KeyLayout,
    controller: FakeActionController,
    daemon_factory: DaemonMaker,
) -> None:
    """With a high refusal limit, the age limit gives the trigger up; `triggers drop` deletes
    the dead letter; usage errors exit 2, a package without a dead letter exits 1."""
    controller.refusal = (grpc.StatusCode.INVALID_ARGUMENT, "no such scenario")
    await controller.start()
    await etcd.scenario("s", "pay")
    d = daemon_factory()
    d.env.update(
        STATEMANAGER_ACTIONCONTROLLER_ADDRESS=f"127.0.0.1:{controller.port}",
        STATEMANAGER_ACTIONCONTROLLER_MAX_BACKOFF_SECONDS="1",
        STATEMANAGER_ACTIONCONTROLLER_MAX_REFUSALS="1000",
        STATEMANAGER_ACTIONCONTROLLER_MAX_TRIGGER_AGE_SECONDS="3",
    )
    d.start()
    await d.wait_synced()
    await running_package(etcd)
    await etcd.container("c", "dead", "m")
    record = await dead_lettered(etcd)
    refusals = record["refusals"]
    assert isinstance(refusals, int)
    assert 1 <= refusals <= len(controller.requests) < 1000  # the age gave it up, not the count

    usage = await triggers_cli(etcd_endpoint, layout, "drop")
    assert usage.returncode == 2
    assert "takes PACKAGE... or --all" in usage.stderr
    usage = await triggers_cli(etcd_endpoint, layout, "drop", "pay", "--output", "json")
    assert usage.returncode == 2
    dropped = await triggers_cli(etcd_endpoint, layout, "drop", "--all")
    assert dropped.returncode == 0, dropped.stderr
    assert "pay: dropped" in dropped.stdout
    assert await dead_letter(etcd) is None

    async def gauge_cleared() -> bool:
        return "statemanager_reconcile_dead_letters 0.0" in d.scrape()

    await eventually(gauge_cleared, 10, "the dead-letter gauge back to 0")
    listed = await triggers_cli(etcd_endpoint, layout, "list")
    assert listed.returncode == 0
    assert listed.stdout == "no pending triggers or dead letters\n"
    missing = await triggers_cli(etcd_endpoint, layout, "drop", "pay")
    assert missing.returncode == 1
