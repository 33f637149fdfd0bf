"""The systemd unit (issue 6): `systemd-analyze verify` and `security`, then the real unit run by a
real systemd user manager (no PID 1 needed: a mount namespace with /run/systemd on a tmpfs).

The unit under test is statemanager.service itself, with ExecStart pointed at this venv and a
drop-in holding only what a test host needs; each relaxed setting says why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from statemanager.localetcd import LocalEtcd, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "statemanager.service"
STATEMANAGER = Path(sys.executable).parent / "statemanager"


def rendered_unit() -> str:
    """The committed unit with ExecStart pointing at this checkout's venv (nothing else)."""
    text = UNIT.read_text()
    exec_start = f"ExecStart={STATEMANAGER} run"
    rendered, n = re.subn(r"^ExecStart=.*$", exec_start, text, flags=re.MULTILINE)
    assert n == 1
    return rendered


@pytest.fixture
def systemd_analyze(debian_tool: Callable[[str, str], str]) -> str:
    return debian_tool("systemd-analyze", "systemd")


def test_unit_verifies_without_a_single_warning(tmp_path: Path, systemd_analyze: str) -> None:
    """`systemd-analyze verify` exits 0 on unknown keys, so any output at all is a failure."""
    unit = tmp_path / "statemanager.service"
    unit.write_text(rendered_unit())
    result = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""


def test_unit_exposure_is_at_most_1_5(tmp_path: Path, systemd_analyze: str) -> None:
    """`systemd-analyze security --offline=true` rates the unit 1.5 or better."""
    unit = tmp_path / "statemanager.service"
    unit.write_text(rendered_unit())
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--threshold=15", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for statemanager.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"\nexposure {match.group(1)}")
    assert float(match.group(1)) <= 1.5
    assert result.returncode == 0


@dataclass
class UserManager:
    """A `systemd --user` in its own mount namespace, driven with `systemctl --user`."""

    pid: int
    runtime: Path
    config: Path

    def systemctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "--", "systemctl", "--user", *args],
            env={**os.environ, "XDG_RUNTIME_DIR": str(self.runtime)},
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"systemctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    def show(self, *props: str) -> dict[str, str]:
        out = self.systemctl("show", "statemanager.service", *(f"-p{p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, check: Callable[[dict[str, str]], bool], *props: str,
                 timeout: float = 30.0) -> dict[str, str]:  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            state = self.show(*props)
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {state}")
            time.sleep(0.1)


@pytest.fixture
def user_manager(tmp_path: Path, debian_tool: Callable[[str, str], str]) -> Iterator[UserManager]:
    debian_tool("systemctl", "systemd")
    if os.geteuid() != 0:
        pytest.fail("running a systemd user manager in a mount namespace needs root")
    systemd = next((p for p in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd")
                    if Path(p).exists()), None)  # fmt: skip
    assert systemd, "systemd binary not found"
    runtime, config = tmp_path / "run", tmp_path / "config"
    runtime.mkdir(mode=0o700)
    (config / "systemd" / "user").mkdir(parents=True)
    script = (
        "mount --make-rprivate / && mount -t tmpfs tmpfs /run/systemd && "
        f"mkdir -p /run/systemd/system && exec {systemd} --user"
    )
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(config)}
    proc = subprocess.Popen(["unshare", "--mount", "sh", "-c", script], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    manager = UserManager(proc.pid, runtime, config)
    deadline = time.monotonic() + 30
    while manager.systemctl("is-system-running", check=False).strip() not in (
        "running",
        "degraded",
    ):
        assert proc.poll() is None, "systemd --user exited"
        assert time.monotonic() < deadline, "systemd --user did not come up"
        time.sleep(0.1)
    try:
        yield manager
    finally:
        manager.systemctl("stop", "statemanager.service", check=False)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def install(manager: UserManager, tmp_path: Path, etcd: LocalEtcd, log: Path) -> None:
    units = manager.config / "systemd" / "user"
    (units / "statemanager.service").write_text(rendered_unit())
    dropin = units / "statemanager.service.d"
    dropin.mkdir()
    (dropin / "test.conf").write_text(
        "[Service]\n"
        "# A user manager cannot allocate dynamic users (system manager only).\n"
        "DynamicUser=no\n"
        "# CI's venv lives under /tmp, which a private /tmp would hide.\n"
        "PrivateTmp=no\n"
        "# This sandboxed test host refuses these mounts to a user manager (exit 226).\n"
        "ProtectHome=no\nProtectKernelTunables=no\nProtectKernelLogs=no\n"
        "# No journald here: logs to a file the test reads.\n"
        f"StandardOutput=append:{log}\nStandardError=append:{log}\n"
        "# Short enough for a test to watch it fire.\n"
        "WatchdogSec=3s\nRestartSec=1s\n"
        f"Environment=STATEMANAGER_ETCD_ENDPOINTS={etcd.endpoint}\n"
        f"Environment=STATEMANAGER_METRICS_ADDRESS=127.0.0.1:{free_port()}\n"
        "Environment=STATEMANAGER_ETCD_TIMEOUT_SECONDS=1 STATEMANAGER_LOG_FORMAT=json\n"
        "Environment=STATEMANAGER_TEST_HOOKS=1\n"
    )
    manager.systemctl("daemon-reload")


def events(log: Path, name: str) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("event") == name:
            out.append(record)
    return out


def test_unit_lifecycle_under_real_systemd(user_manager: UserManager, tmp_path: Path) -> None:
    """Active only after the first sync; STATUS says what it does; a wedged loop is killed by the
    watchdog and restarted; `systemctl stop` ends it within a second with exit 0."""
    assert shutil.which("nsenter") and shutil.which("unshare")
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    log = tmp_path / "daemon.log"
    install(user_manager, tmp_path, etcd, log)
    try:
        # etcd is not running yet: the daemon starts but cannot sync, so it is not ready.
        user_manager.systemctl("start", "--no-block", "statemanager.service")
        state = user_manager.wait_for(
            "an unreachable etcd reported in STATUS",
            lambda s: "etcd unreachable" in s["StatusText"], "ActiveState", "StatusText",
        )  # fmt: skip
        assert state["ActiveState"] == "activating"
        assert not events(log, "synced")

        etcd.start()
        state = user_manager.wait_for(
            "active", lambda s: s["ActiveState"] == "active", "ActiveState", "StatusText", "MainPID"
        )
        assert events(log, "synced"), "READY=1 must come after the first full sync"
        assert state["StatusText"].startswith("watching etcd at revision")
        first_pid = int(state["MainPID"])

        # Wedge the event loop (test hook): no more watchdog pings, so systemd kills and restarts.
        os.kill(first_pid, signal.SIGUSR2)
        state = user_manager.wait_for(
            "a watchdog restart",
            lambda s: int(s["NRestarts"]) >= 1 and s["ActiveState"] == "active"
            and int(s["MainPID"]) not in (0, first_pid),
            "NRestarts", "ActiveState", "MainPID", timeout=30,
        )  # fmt: skip
        print(f"\nwatchdog restart: NRestarts={state['NRestarts']}")

        started = time.monotonic()
        user_manager.systemctl("stop", "statemanager.service")
        took = time.monotonic() - started
        state = user_manager.show("ActiveState", "Result", "ExecMainStatus")
        print(f"systemctl stop took {took:.2f} s")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
        assert took < 1.0
    finally:
        etcd.stop()
