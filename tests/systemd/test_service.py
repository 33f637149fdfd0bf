"""The systemd unit: `systemd-analyze verify` and `security`, then the real unit run by a
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
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from statemanager.devtools.localetcd import LocalEtcd, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
UNIT = ROOT / "statemanager.service"
STATEMANAGER = Path(sys.executable).parent / "statemanager"


def rendered_unit(args: str = "") -> str:
    """The committed unit with ExecStart pointing at this checkout's venv (plus `args`)."""
    text = UNIT.read_text()
    exec_start = f"ExecStart={STATEMANAGER} run{args}"
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
    # The runtime directory is a shared mount: systemd mounts a unit's credentials
    # (LoadCredential=) there from a child mount namespace, which a private one never sees.
    script = (
        f"mount --make-rprivate / && mount --bind {runtime} {runtime} && "
        f"mount --make-shared {runtime} && mount -t tmpfs tmpfs /run/systemd && "
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


def install(
    manager: UserManager, etcd: LocalEtcd, log: Path, args: str = "", extra: str = ""
) -> int:
    """Install the unit with a test drop-in (`extra` appended to it); returns the metrics port."""
    units = manager.config / "systemd" / "user"
    (units / "statemanager.service").write_text(rendered_unit(args))
    port = free_port()
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
        f"Environment=STATEMANAGER_METRICS_ADDRESS=127.0.0.1:{port}\n"
        "Environment=STATEMANAGER_ETCD_TIMEOUT_SECONDS=1 STATEMANAGER_LOG_FORMAT=json\n"
        "Environment=STATEMANAGER_TEST_HOOKS=1\n" + extra
    )
    manager.systemctl("daemon-reload")
    return port


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


def gauge(port: int, name: str) -> float:
    """One unlabelled sample of the daemon's /metrics (`statemanager_ready` follows /readyz)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        scrape = resp.read().decode()
    return next(float(line.split()[1]) for line in scrape.splitlines() if line.split()[0] == name)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_unit_lifecycle_under_real_systemd(user_manager: UserManager, tmp_path: Path) -> None:
    """With etcd down at boot, `systemctl start` succeeds (active, STATUS says it waits for
    etcd, not ready) instead of timing out; it syncs when etcd comes; a wedged loop is killed
    by the watchdog, with every thread's stack in the log, and restarted; `systemctl stop`
    ends it within a second with exit 0."""
    assert shutil.which("nsenter") and shutil.which("unshare")
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    log = tmp_path / "daemon.log"
    port = install(user_manager, etcd, log)
    try:
        # etcd is not running yet: `enable --now` at boot must not block and fail.
        started = time.monotonic()
        user_manager.systemctl("start", "statemanager.service")
        print(f"\nsystemctl start with etcd down took {time.monotonic() - started:.2f} s")
        state = user_manager.wait_for(
            "an unreachable etcd reported in STATUS",
            lambda s: "etcd unreachable" in s["StatusText"], "ActiveState", "StatusText",
        )  # fmt: skip
        assert state["ActiveState"] == "active"
        assert state["StatusText"].startswith("waiting for etcd: "), state
        assert gauge(port, "statemanager_ready") == 0 and gauge(port, "statemanager_synced") == 0
        assert not events(log, "synced")

        etcd.start()
        state = user_manager.wait_for(
            "the first sync", lambda s: s["StatusText"].startswith("watching etcd at revision"),
            "ActiveState", "StatusText", "MainPID",
        )  # fmt: skip
        assert events(log, "synced")
        wait_until("ready (/readyz 200)", lambda: gauge(port, "statemanager_ready") == 1)
        first_pid = int(state["MainPID"])

        # Wedge the event loop (test hook): no more watchdog pings, so systemd kills and restarts.
        os.kill(first_pid, signal.SIGUSR2)
        state = user_manager.wait_for(
            "a watchdog restart",
            lambda s: int(s["NRestarts"]) >= 1 and s["ActiveState"] == "active"
            and int(s["MainPID"]) not in (0, first_pid),
            "NRestarts", "ActiveState", "MainPID", timeout=30,
        )  # fmt: skip
        print(f"watchdog restart: NRestarts={state['NRestarts']}")
        # faulthandler: the watchdog's SIGABRT printed where every thread was.
        text = log.read_text()
        assert "Fatal Python error: Aborted" in text
        assert "Current thread" in text and "most recent call first" in text
        assert "metrics-http" in text or text.count("Thread 0x") >= 2

        started = time.monotonic()
        user_manager.systemctl("stop", "statemanager.service")
        took = time.monotonic() - started
        state = user_manager.show("ActiveState", "Result", "ExecMainStatus")
        print(f"systemctl stop took {took:.2f} s")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
        assert took < 1.0
    finally:
        etcd.stop()


def test_reload_and_unexpected_signals(user_manager: UserManager, tmp_path: Path) -> None:
    """`systemctl reload` applies a new log level and names settings that need a restart; a
    bad file on reload changes nothing; SIGUSR1 no longer ends the daemon silently: it logs,
    exits 138 and systemd restarts it."""
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    etcd.start()
    log = tmp_path / "daemon.log"
    config = tmp_path / "sm.toml"
    config.write_text('[log]\nlevel = "info"\n')
    # The drop-in's variables would win over the file: leave the level to the file.
    install(user_manager, etcd, log, args=f" --config {config}")
    try:
        user_manager.systemctl("start", "statemanager.service")
        wait_until("the first sync", lambda: bool(events(log, "synced")))
        pid = user_manager.show("MainPID")["MainPID"]

        config.write_text('[log]\nlevel = "debug"\n[ha]\nlease_ttl_seconds = 7\n')
        user_manager.systemctl("reload", "statemanager.service")
        wait_until("the reload line", lambda: bool(events(log, "reloaded")))
        (reloaded,) = events(log, "reloaded")
        assert reloaded["changed"] == {"log.level": ["info", "debug"]}
        assert reloaded["restart_needed"] == ["ha.lease_ttl_seconds"]

        config.write_text('[log]\nlevel = "loud"\n')
        user_manager.systemctl("reload", "statemanager.service")
        wait_until("the failed reload line", lambda: bool(events(log, "reload_failed")))
        assert "log.level" in str(events(log, "reload_failed")[0]["error"])
        state = user_manager.show("ActiveState", "MainPID", "NRestarts")
        assert state == {"ActiveState": "active", "MainPID": pid, "NRestarts": "0"}

        config.write_text('[log]\nlevel = "info"\n')
        user_manager.systemctl("kill", "-s", "USR1", "statemanager.service")
        state = user_manager.wait_for(
            "a restart after SIGUSR1",
            lambda s: s["NRestarts"] == "1" and s["ActiveState"] == "active"
            and s["MainPID"] not in ("0", pid),
            "NRestarts", "ActiveState", "MainPID",
        )  # fmt: skip
        stopping = [e for e in events(log, "stopping") if e.get("signal") == "SIGUSR1"]
        assert stopping and stopping[0]["exit_code"] == 128 + signal.SIGUSR1, stopping
        assert stopping[0]["level"] == "warning"
    finally:
        etcd.stop()


def test_config_error_fails_the_unit_without_restarts(
    user_manager: UserManager, tmp_path: Path
) -> None:
    """Exit 2 (configuration error) is not restarted: the unit fails at once, and the error is
    a JSON line like every other."""
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    log = tmp_path / "daemon.log"
    install(user_manager, etcd, log, extra="Environment=STATEMANAGER_HA_LEASE_TTL_SECONDS=1\n")
    user_manager.systemctl("start", "statemanager.service", check=False)
    state = user_manager.wait_for(
        "the unit to fail", lambda s: s["ActiveState"] == "failed",
        "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts",
    )  # fmt: skip
    # A unit about to restart would be `activating`/`auto-restart`, not `failed`.
    assert state == {
        "ActiveState": "failed", "SubState": "failed", "Result": "exit-code",
        "ExecMainStatus": "2", "NRestarts": "0",
    }  # fmt: skip
    (error,) = events(log, "invalid_config")
    assert error["level"] == "error" and "STATEMANAGER_HA_LEASE_TTL_SECONDS" in str(error["error"])


def test_start_limit_stops_a_crash_loop(user_manager: UserManager, tmp_path: Path) -> None:
    """A daemon that fails at every start (its metrics port taken: exit 1) is restarted, but
    the start limit (5 starts in 60 s) leaves it failed rather than looping forever."""
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    log = tmp_path / "daemon.log"
    port = install(user_manager, etcd, log)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        user_manager.systemctl("start", "statemanager.service", check=False)
        # `failed`/`failed` is final: a unit that will be restarted shows `auto-restart`.
        state = user_manager.wait_for(
            "the start limit to leave it failed",
            lambda s: (s["ActiveState"], s["SubState"]) == ("failed", "failed")
            and int(s["NRestarts"]) > 0,
            "ActiveState", "SubState", "Result", "NRestarts", timeout=60,
        )  # fmt: skip
    print(f"\nstart limit: gave up after {state['NRestarts']} restarts ({state['Result']})")
    # StartLimitBurst=5 starts ran (the restart systemd then counted was refused), no more.
    assert len(events(log, "metrics_bind_failed")) == 5


def test_etcd_password_from_a_systemd_credential(user_manager: UserManager, tmp_path: Path) -> None:
    """`LoadCredential=etcd-password:FILE` (a 0600 file the service user could not read
    itself): the daemon authenticates to an etcd with auth enabled using it, and the password
    shows neither in the unit's environment (`systemctl show`) nor in the log."""
    password = f"credential-Pa55word-{os.getpid()}"
    etcd = LocalEtcd(tmp_path / "etcd", free_port(), free_port())
    etcd.start()
    log = tmp_path / "daemon.log"
    try:
        etcd.etcdctl("user", "add", f"root:{password}")
        etcd.etcdctl("auth", "enable")
        secret = tmp_path / "etcd-password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        extra = (
            f"LoadCredential=etcd-password:{secret}\nEnvironment=STATEMANAGER_ETCD_USERNAME=root\n"
        )
        install(user_manager, etcd, log, extra=extra)
        user_manager.systemctl("start", "statemanager.service")
        wait_until("the first sync", lambda: bool(events(log, "synced")), timeout=60)
        assert events(log, "etcd_authenticated")
        shown = user_manager.systemctl("show", "statemanager.service")
        assert password not in shown
        user_manager.systemctl("stop", "statemanager.service")
        assert user_manager.show("Result")["Result"] == "success"
    finally:
        etcd.stop()
    assert password not in log.read_text()
