"""What operators see: /metrics scraped over HTTP, /healthz and /readyz, JSON logs, and a real
Prometheus server scraping the daemon (issue 5)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from statemanager.localetcd import LocalEtcd

from conftest import Daemon, Etcd, eventually, http_get, promql, scrape_job, states_are


def samples(scrape: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed by prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(scrape):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scrape: str, name: str, **labels: str) -> float:
    return samples(scrape).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_transitions(etcd: Etcd, daemon: Daemon) -> None:
    """Counters, gauges and histograms on the live /metrics follow what the daemon does."""
    before = daemon.scrape()
    assert value(before, "statemanager_synced") == 1
    assert value(before, "statemanager_leader") == 1
    build = [k for k in samples(before) if k[0] == "statemanager_build_info"]
    assert len(build) == 1
    assert dict(build[0][1])["version"] == "0.1.0"
    await etcd.package("p", ["a", "b"])
    await etcd.container("c1", "running", "a")
    await etcd.container("c2", "dead", "b")
    await states_are(etcd, {"a": "Running", "b": "Failed", "pkg:p": "Degraded"})

    async def counted() -> bool:
        scrape = daemon.scrape()
        return value(scrape, "statemanager_packages", state="Degraded") == 1

    await eventually(counted, 10, "the package gauge to follow")
    after = daemon.scrape()
    assert value(after, "statemanager_transitions_total", resource="model", state="Failed") == 1
    assert value(after, "statemanager_transitions_total", resource="package", state="Degraded") == 1
    assert value(after, "statemanager_models", state="Running") == 1
    assert value(after, "statemanager_containers", status="dead") == 1
    assert value(after, "statemanager_event_to_write_seconds_count") >= 2
    assert value(after, "statemanager_etcd_request_seconds_count", operation="txn") >= 2
    assert value(after, "statemanager_workqueue_adds_total") > value(
        before, "statemanager_workqueue_adds_total"
    )
    assert value(after, "statemanager_last_seen_revision") > value(
        before, "statemanager_last_seen_revision"
    )
    assert value(after, "statemanager_ready") == 1


def test_promtool_accepts_a_real_scrape(
    daemon: Daemon, debian_tool: Callable[[str, str], str]
) -> None:
    """`promtool check metrics` finds no problem in what /metrics serves."""
    promtool = debian_tool("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=daemon.scrape(), capture_output=True, text=True,
        check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


async def test_health_endpoints_follow_sync_and_etcd(
    server: LocalEtcd, private: Etcd, make_daemon: type[Daemon]
) -> None:
    """/healthz stays 200 while alive; /readyz is 503 before the first sync and while etcd is
    down, 200 once synced and watching."""
    server.kill()
    d = make_daemon(STATEMANAGER_ETCD_TIMEOUT_SECONDS="1")
    d.start()

    async def serving() -> bool:
        try:
            return http_get(d.metrics_port, "/healthz")[0] == 200
        except OSError:
            return False

    await eventually(serving, 15, "/healthz")
    code, body = http_get(d.metrics_port, "/readyz")
    assert code == 503
    assert "first sync" in body
    assert http_get(d.metrics_port, "/nope")[0] == 404

    await asyncio.to_thread(server.start)
    await d.wait_synced()

    async def ready() -> bool:
        return http_get(d.metrics_port, "/readyz")[0] == 200

    await eventually(ready, 15, "/readyz 200 after sync")
    server.kill()

    async def unready() -> bool:
        return http_get(d.metrics_port, "/readyz")[0] == 503

    await eventually(unready, 15, "/readyz 503 with etcd down")
    assert "etcd unreachable" in http_get(d.metrics_port, "/readyz")[1]
    assert http_get(d.metrics_port, "/healthz")[0] == 200
    await asyncio.to_thread(server.start)
    await eventually(ready, 20, "/readyz 200 again")


async def test_logs_are_json_lines_with_event_level_timestamp(etcd: Etcd, daemon: Daemon) -> None:
    """Off a terminal every log line is a JSON object with event, level and timestamp."""
    await etcd.package("p", ["m"])
    await etcd.put(etcd.layout.containers + "bad", "{")
    await states_are(etcd, {"pkg:p": "Paused"})

    async def logged() -> bool:
        return bool(daemon.events("invalid_input"))

    await eventually(logged, 10, "the invalid input line")
    lines = daemon.log_path.read_text().splitlines()
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"event", "level", "timestamp"} <= record.keys(), line
    bad = daemon.events("invalid_input")[0]
    assert bad["level"] == "warning"
    assert {"key", "kind", "error", "revision"} <= bad.keys()


async def test_journal_stream_lines_carry_their_priority(
    etcd: Etcd, daemon_factory: Callable[[], Daemon]
) -> None:
    """With stderr being the journal's stream (JOURNAL_STREAM names it), every line starts with
    the sd-daemon priority of its level, so `journalctl -p warning` finds the warnings."""
    d = daemon_factory()
    d.log_path.touch()
    st = d.log_path.stat()
    d.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    d.start()
    await etcd.put(etcd.layout.containers + "bad", "{")

    def records() -> list[tuple[int, dict[str, Any]]]:
        out = []
        for line in d.log_path.read_text().splitlines():
            match = re.fullmatch(r"<([0-7])>(\{.*\})", line)
            assert match, line
            out.append((int(match.group(1)), json.loads(match.group(2))))
        return out

    async def warned() -> bool:
        return any(r["event"] == "invalid_input" for _, r in records())

    await eventually(warned, 20, "the invalid input line")
    priority = {"debug": 7, "info": 6, "warning": 4, "error": 3}
    for n, record in records():
        assert n == priority[record["level"]], record


async def test_real_prometheus_scrapes_the_daemon(
    etcd: Etcd, daemon: Daemon, prometheus_server: Callable[[list[dict[str, Any]]], int]
) -> None:
    """A real Prometheus scraping the daemon answers a PromQL query for a transition counter."""
    await etcd.package("p", ["m"])
    await etcd.container("c", "dead", "m")
    await states_are(etcd, {"pkg:p": "Error"})
    port = prometheus_server([scrape_job("statemanager", daemon.metrics_port)])
    query = 'statemanager_transitions_total{resource="package",state="Error"}'

    async def answered() -> bool:
        return bool(await asyncio.to_thread(promql, port, query))

    await eventually(answered, 60, "Prometheus to have scraped the transition counter")
    result = promql(port, query)
    assert result[0]["value"][1] == "1"  # type: ignore[index]
    up = promql(port, 'up{job="statemanager"}')
    assert up[0]["value"][1] == "1"  # type: ignore[index]


async def test_healthz_fails_when_the_event_loop_is_wedged(
    etcd: Etcd, daemon_factory: Callable[[], Daemon]
) -> None:
    """A blocked event loop (test hook: SIGUSR2) turns /healthz to 503 within about 10 s while
    the HTTP thread keeps answering; /status, which reads the index on the loop, answers 503
    instead of hanging or reading it from the wrong thread."""
    d = daemon_factory()
    d.env["STATEMANAGER_TEST_HOOKS"] = "1"
    d.start()
    await d.wait_synced()
    assert http_get(d.metrics_port, "/healthz")[0] == 200
    assert d.process is not None
    d.process.send_signal(signal.SIGUSR2)

    async def stuck() -> bool:
        return http_get(d.metrics_port, "/healthz")[0] == 503

    await eventually(stuck, 20, "/healthz 503")
    assert "event loop stuck" in http_get(d.metrics_port, "/healthz")[1]
    assert http_get(d.metrics_port, "/readyz")[0] == 503
    code, body = http_get(d.metrics_port, "/status")
    assert code == 503 and "event loop did not answer" in body
    d.kill()  # a wedged loop cannot handle SIGTERM; that is what the watchdog is for
