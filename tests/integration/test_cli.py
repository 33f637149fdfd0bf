"""The command line as a user runs it: exit codes and output of evaluate, status, bad config."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from statemanager.keys import KeyLayout

from conftest import Daemon, Etcd, cli, daemon_env, states_are


async def test_evaluate_reports_differences_then_agreement(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout, daemon_factory: Callable[[], Daemon]
) -> None:
    """`evaluate` exits 1 and names each differing state, writes nothing; exits 0 once synced."""
    await etcd.package("payment_service", ["a", "b", "c"])
    await etcd.container("c1", "running", "a")
    await etcd.container("c2", "running", "b")
    await etcd.container("c3", "dead", "c")
    result = cli(["evaluate"], etcd_endpoint, layout)
    assert result.returncode == 1, result.stderr
    assert (
        "package payment_service: written (none), derived Degraded (P3, 1 of 3 models Failed)"
        in (result.stdout)
    )
    assert "model c: written (none), derived Failed (M2, 1 of 1 containers dead)" in result.stdout
    assert await etcd.states() == {}  # nothing written

    d = daemon_factory()
    d.start()
    await d.wait_synced()
    await states_are(etcd, {"pkg:payment_service": "Degraded"})
    result = cli(["evaluate"], etcd_endpoint, layout)
    assert result.returncode == 0, result.stdout
    assert "all states agree" in result.stdout


async def test_status_explains_each_state(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """`status` prints packages → models → containers with the rule that decided each state."""
    await etcd.package("shop", ["web", "db"])
    await etcd.container("w1", "running", "web")
    await etcd.container("d1", "exited", "db", ExitCode=1)
    result = cli(["status"], etcd_endpoint, layout)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "package shop: Degraded (P3, 1 of 2 models Failed)  [etcd says nothing]" in lines
    assert (
        "  model web: Running (M5, 1 of 1 containers running or unknown)  [etcd says nothing]"
        in (lines)
    )
    assert "    container d1: exited (dead)" in lines


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"STATEMANAGER_METRICS_ADDRESS": "nonsense"}, "STATEMANAGER_METRICS_ADDRESS"),
        ({"STATEMANAGER_ETCD_ENDPOINTS": "ftp://x:1"}, "STATEMANAGER_ETCD_ENDPOINTS"),
        ({"STATEMANAGER_LOG_FORMAT": "xml"}, "STATEMANAGER_LOG_FORMAT"),
        (
            {"STATEMANAGER_ACTIONCONTROLLER_CA_FILE": "/nonexistent/ca.pem"},
            "STATEMANAGER_ACTIONCONTROLLER_CA_FILE",
        ),
        (
            {"STATEMANAGER_ACTIONCONTROLLER_ADDRESS": "host"},
            "STATEMANAGER_ACTIONCONTROLLER_ADDRESS",
        ),
    ],
)
def test_invalid_config_exits_2_naming_the_key(
    env: dict[str, str], named: str, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """A bad setting stops every command with exit 2 and one line naming the setting, an error
    in the configured log format (JSON here, as under systemd; auto when the format is the bad
    setting, which off a terminal is JSON too)."""
    for command in ("run", "evaluate", "status"):
        result = cli([command], etcd_endpoint, layout, **env)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], result.stderr
        record = json.loads(lines[0])
        assert (record["level"], record["event"]) == ("error", "invalid_config"), record


def test_config_file_is_read_and_flags_win(
    tmp_path: Path, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """A TOML file's bad key is named with the file; a valid flag overrides the environment."""
    config = tmp_path / "sm.toml"
    config.write_text('[log]\nlevel = "loud"\n')
    env = daemon_env(etcd_endpoint, layout, 1)
    env.pop("STATEMANAGER_LOG_LEVEL")
    result = subprocess.run(
        [sys.executable, "-m", "statemanager", "status", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "log.level in " + str(config) in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "statemanager", "status", "--config", str(config), "--log-level", "info"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [[], ["run"], ["evaluate"], ["status"]])
def test_help(command: list[str]) -> None:
    """`--help` works for the program and each command and lists the settings' flags."""
    result = subprocess.run(
        [sys.executable, "-m", "statemanager", *command, "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert "usage: statemanager" in result.stdout
    if command:
        assert (
            "--etcd-endpoints" in result.stdout and "STATEMANAGER_ETCD_ENDPOINTS" in result.stdout
        )


def test_unreachable_etcd_is_a_clear_error(layout: KeyLayout) -> None:
    """`status` against an etcd that is not there fails with exit 3 and a one-line reason."""
    result = cli(["status"], "http://127.0.0.1:9", layout, STATEMANAGER_ETCD_TIMEOUT_SECONDS="1")
    assert result.returncode == 3
    assert "etcd" in result.stderr and "Traceback" not in result.stderr


def test_run_under_systemd_without_endpoints_is_a_config_error(layout: KeyLayout) -> None:
    """Under systemd, `run` with no etcd endpoints exits 2 instead of starting a dev etcd."""
    result = cli(["run"], "", layout, INVOCATION_ID="0123456789abcdef")
    assert result.returncode == 2
    assert "etcd.endpoints is not set" in result.stderr
