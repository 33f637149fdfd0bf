"""The command line as a user runs it: exit codes and output of evaluate, status, bad config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from statemanager.core.keys import KeyLayout

from conftest import DaemonMaker, Etcd, cli, daemon_env, eventually, states_are


async def test_evaluate_reports_differences_then_agreement(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout, daemon_factory: DaemonMaker
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


@pytest.mark.parametrize("command", [[], ["run"], ["evaluate"], ["status"], ["triggers"]])
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
    if not command:
        assert all(name in result.stdout for name in ("run", "evaluate", "status", "triggers"))
    if command == ["triggers"]:
        assert "{list,redeliver,drop}" in result.stdout


def test_evaluate_help_lists_every_exit_code() -> None:
    """`evaluate --help` documents exit codes 0, 1, 2 and 3."""
    result = subprocess.run(
        [sys.executable, "-m", "statemanager", "evaluate", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    text = " ".join(result.stdout.split())
    for code in ("exit 0: all agree", "1: something differs", "2: invalid configuration",
                 "3: etcd cannot be read"):  # fmt: skip
        assert code in text, text


@pytest.mark.parametrize("command", ["status", "evaluate"])
def test_no_endpoint_says_which_etcd_it_reads(command: str, layout: KeyLayout) -> None:
    """Without etcd.endpoints, status/evaluate say that they read the development etcd, and
    where, whether or not one answers there."""
    result = cli([command], "", layout, STATEMANAGER_ETCD_TIMEOUT_SECONDS="1")
    first = result.stderr.splitlines()[0]
    assert first == (
        "statemanager: etcd.endpoints is not set: reading the development etcd at "
        "http://127.0.0.1:23790"
    ), result.stderr


@pytest.mark.parametrize("command", ["evaluate", "status"])
def test_read_only_commands_show_only_their_flags(command: str) -> None:
    """`evaluate`/`status --help` list etcd, prefix, log and input flags, not the daemon's;
    `run --help` lists those too, and a daemon flag given to `status` is a usage error."""

    def help_text(cmd: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "statemanager", cmd, "--help"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip

    shown, run = help_text(command), help_text("run")
    for flag in ("--grpc-enabled", "--metrics-address", "--ha-node-name",
                 "--actioncontroller-address", "--etcd-watch-silence-seconds"):  # fmt: skip
        assert flag not in shown and flag in run, flag
    for flag in ("--etcd-endpoints", "--etcd-ca-file", "--prefixes-own", "--log-level",
                 "--inputs-max-value-bytes", "--output"):  # fmt: skip
        assert flag in shown, flag
    refused = subprocess.run(
        [sys.executable, "-m", "statemanager", command, "--grpc-enabled", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "unrecognized arguments: --grpc-enabled" in refused.stderr


async def _shop_and_billing(etcd: Etcd) -> None:
    await etcd.package("shop", ["web", "db"])
    await etcd.package("billing", ["ledger"])
    await etcd.container("w1", "running", "web")
    await etcd.container("d1", "exited", "db", ExitCode=1)
    await etcd.container("l1", "running", "ledger")
    await etcd.container("s1", "running", "stray")  # a model in no package


async def test_status_filters_by_package_or_model_name(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """`status NAME…` shows a named package with all its models, a named model under each
    package listing it; a name matching nothing is named on stderr with exit 1."""
    await _shop_and_billing(etcd)
    everything = cli(["status"], etcd_endpoint, layout)
    assert everything.returncode == 0, everything.stderr
    assert "package billing: Running" in everything.stdout
    assert "  model stray: Running" in everything.stdout

    shop = cli(["status", "shop"], etcd_endpoint, layout)
    assert shop.returncode == 0, shop.stderr
    lines = shop.stdout.splitlines()
    assert any(line.startswith("package shop: Degraded (P3") for line in lines)
    assert any(line.startswith("  model web: Running") for line in lines)
    assert any(line.startswith("  model db: Failed") for line in lines)
    assert "billing" not in shop.stdout and "ledger" not in shop.stdout
    assert "stray" not in shop.stdout

    models = cli(["status", "db", "stray"], etcd_endpoint, layout)
    assert models.returncode == 0, models.stderr
    lines = models.stdout.splitlines()
    assert any(line.startswith("package shop: Degraded") for line in lines)
    assert any(line.startswith("  model db: Failed") for line in lines)
    assert "model web" not in models.stdout and "billing" not in models.stdout
    assert lines[lines.index("models in no package:") + 1].startswith("  model stray: Running")

    missing = cli(["status", "shop", "nope"], etcd_endpoint, layout)
    assert missing.returncode == 1
    assert "package shop: Degraded" in missing.stdout
    assert missing.stderr.strip() == "statemanager: no package or model named 'nope'"


async def test_status_json_follows_its_schema(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout, daemon_factory: DaemonMaker
) -> None:
    """`status --output json` is one JSON document, schema statemanager.status/v1: packages
    with the models shown, models with state, rule, reason, written value, when it was
    written and containers."""
    await _shop_and_billing(etcd)
    d = daemon_factory()
    d.env["STATEMANAGER_HA_NODE_NAME"] = "node-json"
    d.start()
    await d.wait_synced()
    await states_are(etcd, {"pkg:shop": "Degraded", "db": "Failed"})
    result = cli(["status", "--output", "json", "shop"], etcd_endpoint, layout)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "statemanager.status/v1"
    assert doc["leader"] == "node-json"
    assert isinstance(doc["revision"], int) and doc["revision"] > 0
    written_at = {p.pop("changed_at") for p in doc["packages"]}  # the state write's moment
    assert doc["packages"] == [
        {"name": "shop", "state": "Degraded", "rule": "P3", "reason": "1 of 2 models Failed",
         "written": "Degraded", "models": ["web", "db"]},
    ]  # fmt: skip
    assert [m["name"] for m in doc["models"]] == ["db", "web"]
    db = doc["models"][0]
    written_at.add(db.pop("changed_at"))
    assert db == {
        "name": "db", "state": "Failed", "rule": "M2", "reason": "1 of 1 containers dead",
        "written": "Failed", "packages": ["shop"],
        "containers": [{"id": "d1", "status": "exited", "class": "dead"}],
    }  # fmt: skip
    assert len(written_at) == 1 and written_at.pop().endswith("Z")  # one transaction
    assert doc["not_found"] == [] and doc["problems"] == []

    await etcd.put(layout.containers + "junk", "{not json")
    whole = cli(["status", "--output", "json", "ghost"], etcd_endpoint, layout)
    assert whole.returncode == 1
    assert json.loads(whole.stdout)["not_found"] == ["ghost"]
    unfiltered = json.loads(cli(["status", "--output", "json"], etcd_endpoint, layout).stdout)
    assert {p["name"] for p in unfiltered["packages"]} == {"shop", "billing"}
    assert "stray" in {m["name"] for m in unfiltered["models"]}
    assert [(p["key"], p["kind"], p["rejected"]) for p in unfiltered["problems"]] == [
        (layout.containers + "junk", "invalid_json", True)
    ]


async def test_evaluate_json_follows_its_schema(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """`evaluate --output json` (schema statemanager.evaluate/v1) lists each change with the
    written and derived value and the rule; exit 1 while they differ, 0 with `agree` true."""
    await etcd.package("shop", ["web"])
    await etcd.container("w1", "dead", "web")
    await etcd.put(f"{layout.model_states}web/state", "Running")
    result = cli(["evaluate", "--output", "json"], etcd_endpoint, layout)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "statemanager.evaluate/v1"
    assert doc["agree"] is False
    assert doc["changes"] == [
        {"resource": "package", "name": "shop", "written": None, "derived": "Error",
         "rule": "P2", "reason": "all 1 models Failed"},
        {"resource": "model", "name": "web", "written": "Running", "derived": "Failed",
         "rule": "M2", "reason": "1 of 1 containers dead"},
    ]  # fmt: skip
    await etcd.put(f"{layout.model_states}web/state", "Failed")
    await etcd.put(f"{layout.package_states}shop/state", "Error")
    agreed = cli(["evaluate", "--output", "json"], etcd_endpoint, layout)
    assert agreed.returncode == 0, agreed.stderr
    assert json.loads(agreed.stdout) | {"revision": 0} == {
        "schema": "statemanager.evaluate/v1", "revision": 0, "agree": True, "changes": [],
        "problems": [],
    }  # fmt: skip


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


def test_a_file_value_of_the_wrong_type_exits_2_naming_key_file_and_type(
    tmp_path: Path, etcd_endpoint: str, layout: KeyLayout
) -> None:
    """A quoted number in the file stops every command with exit 2 and one line naming the
    key, the file and the type expected; the same text from the environment is parsed."""
    config = tmp_path / "sm.toml"
    config.write_text('[etcd]\ntimeout_seconds = "5"\n')
    env = daemon_env(etcd_endpoint, layout, 1)
    for command in (["run"], ["evaluate"], ["status"], ["triggers", "list"]):
        result = subprocess.run(
            [sys.executable, "-m", "statemanager", *command, "--config", str(config)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert json.loads(line)["error"] == (
            f"etcd.timeout_seconds in {config}: expected a number, not a string"
        )
    result = cli(["status"], etcd_endpoint, layout, STATEMANAGER_ETCD_TIMEOUT_SECONDS="5")
    assert result.returncode == 0, result.stderr


async def test_reload_of_a_wrongly_typed_file_keeps_the_settings(
    tmp_path: Path, daemon_factory: DaemonMaker
) -> None:
    """SIGHUP with a file value of the wrong type logs `reload_failed` naming it and changes
    nothing: the next valid file is compared with the settings from before."""
    config = tmp_path / "sm.toml"
    config.write_text('[log]\nlevel = "info"\n')
    d = daemon_factory()
    del d.env["STATEMANAGER_LOG_LEVEL"]
    # The command line with this file: argparse takes the last --config given.
    d.program = [
        "-c",
        "import sys\nfrom statemanager.app.cli import main\n"
        f"raise SystemExit(main([*sys.argv[1:], '--config', {str(config)!r}]))",
    ]
    d.start()
    await d.wait_synced()
    assert d.process is not None

    config.write_text('[log]\nlevel = "debug"\n[ha]\nlease_ttl_seconds = "30"\n')
    d.process.send_signal(signal.SIGHUP)

    async def failed() -> bool:
        return bool(d.events("reload_failed"))

    await eventually(failed, 10, "the reload to fail")
    assert d.events("reload_failed")[-1]["error"] == (
        f"ha.lease_ttl_seconds in {config}: expected a whole number, not a string"
    )
    config.write_text('[log]\nlevel = "debug"\n')
    d.process.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:
        return bool(d.events("reloaded"))

    await eventually(reloaded, 10, "the valid file to be applied")
    assert d.events("reloaded")[-1]["changed"] == {"log.level": ["info", "debug"]}


# Runs the command line as `python -m statemanager` does and, as the process exits, logs the
# package's modules it had loaded.
_REPORT_MODULES = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps({"event": "modules_loaded",
    "modules": sorted(m for m in sys.modules if m.startswith("statemanager"))}), flush=True))
from statemanager.app.cli import main
raise SystemExit(main())
"""


async def test_the_running_daemon_never_loads_devtools(daemon_factory: DaemonMaker) -> None:
    """`run` with etcd endpoints, built by the composition root, synced and stopped, has loaded
    no module of `statemanager.devtools` (its sys.modules as it exits)."""
    d = daemon_factory()
    d.program = ["-c", _REPORT_MODULES]
    d.start()
    await d.wait_synced()
    assert d.stop() == 0
    [report] = d.events("modules_loaded")
    assert "statemanager.app.daemon" in report["modules"]
    assert "statemanager.runtime.writer" in report["modules"]
    assert [m for m in report["modules"] if m.startswith("statemanager.devtools")] == []
