"""What operators see: /metrics scraped over HTTP, /healthz and /readyz, JSON logs, and a real
Prometheus server scraping the daemon."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from statemanager import __version__
from statemanager.devtools.localetcd import LocalEtcd

from conftest import Daemon, DaemonMaker, Etcd, eventually, http_get, promql, scrape_job, states_are


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
    assert dict(build[0][1])["version"] == __version__
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


README = Path(__file__).resolve().parents[2] / "README.md"
# Labels whose values are not a fixed list in the README: gRPC's status code names, and the
# version strings of the build.
OPEN_LABELS = {"code": {c.name for c in grpc.StatusCode}, "version": None, "python": None}


def readme_metrics() -> dict[str, tuple[str, list[str], str]]:
    """The README's metrics table: exported name -> (type, label names, the whole row)."""
    section = README.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = (cells[1], re.findall(r"`([^`]+)`", cells[2]), line)
    return rows


def test_readme_metrics_table_matches_a_live_scrape(daemon: Daemon) -> None:
    """Every family the running daemon serves is a row of the README's metrics table with its
    type and label names, every label value it serves is named in that row, and every row is
    served."""
    documented = readme_metrics()
    served = set()
    for family in text_string_to_metric_families(daemon.scrape()):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        base = name.removesuffix("_created")
        if base != name and ({base, f"{base}_total"} & documented.keys()):
            continue  # the creation time prometheus_client adds to counters and histograms
        served.add(name)
        assert name in documented, f"{name} is served but not in the README's metrics table"
        kind, labels, row = documented[name]
        assert kind == family.type, (name, kind, family.type)
        for sample in family.samples:
            got = {k: v for k, v in sample.labels.items() if k != "le"}
            assert sorted(got) == sorted(labels), (name, got, labels)
            for label, v in got.items():
                if label in OPEN_LABELS:
                    allowed = OPEN_LABELS[label]
                    assert allowed is None or v in allowed, (name, label, v)
                else:
                    assert f"`{v}`" in row, f"{name}: {label}={v!r} not named in its README row"
    assert served == documented.keys(), f"documented, not served: {documented.keys() - served}"


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
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker
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
    etcd: Etcd, daemon_factory: DaemonMaker
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


async def test_etcd_outage_is_one_line_each_way(
    server: LocalEtcd, private: Etcd, make_daemon: DaemonMaker
) -> None:
    """etcd down for several retries: one `etcd_unreachable` warning with the reason, retries
    only at debug level, the demotion says why, and one `etcd_reachable` with the duration."""
    d = make_daemon(STATEMANAGER_ETCD_TIMEOUT_SECONDS="1", STATEMANAGER_HA_LEASE_TTL_SECONDS="2")
    d.start()
    await d.wait_synced()
    server.kill()

    async def retried() -> bool:  # outage lasts for several retries of each loop
        return len(d.events("election_retry")) >= 6 and len(d.events("watch_broken")) >= 3

    await eventually(retried, 60, "several retries")
    await asyncio.to_thread(server.start)

    async def back() -> bool:
        return bool(d.events("etcd_reachable"))

    await eventually(back, 30, "the etcd_reachable line")
    (down,) = d.events("etcd_unreachable")
    # The reason as gRPC gave it: UNAVAILABLE, or INTERNAL for a watch stream the dying
    # server reset (RST_STREAM), which a loaded machine sometimes sees first.
    assert down["level"] == "warning", down
    assert "UNAVAILABLE" in down["error"] or "INTERNAL" in down["error"], down
    (up,) = d.events("etcd_reachable")
    assert up["down_for_seconds"] > 1 and up["failed_requests"] >= 6, up
    assert all(e["level"] == "debug" for e in d.events("election_retry"))
    assert all(e["level"] == "debug" for e in d.events("watch_broken"))
    follower = [e for e in d.events("follower") if "unreachable" in e["why"]]
    assert follower, d.events("follower")
    await d.wait_synced()

    async def leads_again() -> bool:
        return value(d.scrape(), "statemanager_leader") == 1

    await eventually(leads_again, 30, "leadership back")
    assert value(d.scrape(), "statemanager_leader_changes_total") == 3  # lead, lose, lead


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
    etcd: Etcd, daemon_factory: DaemonMaker
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
