"""deploy/prometheus: the alert rules and scrape config are valid and every alert is unit-tested."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
SCRAPE = PROMETHEUS / "scrape.yml"

# The alerts operators were promised (deploy/README.md lists each with its first steps).
EXPECTED_ALERTS = {
    "StateManagerDown": "critical",
    "StateManagerNotReady": "critical",
    "StateManagerWatchRestarting": "warning",
    "StateManagerWritesFailing": "warning",
    "StateManagerEtcdRefusingWrites": "critical",
    "StateManagerWritesRefused": "warning",
    "StateManagerReconcilePendingTooLong": "warning",
    "StateManagerReconcileDeadLetters": "warning",
    "StateManagerNoLeader": "critical",
    "StateManagerSeveralLeaders": "warning",
    "StateManagerDrift": "warning",
    "StateManagerKeyQuarantined": "warning",
    "StateManagerRecordsOfNewerFormat": "warning",
    "PackagesInError": "critical",
    "PackagesDegraded": "warning",
}


@pytest.fixture(scope="module")
def promtool(debian_tool: Callable[[str, str], str]) -> str:
    return debian_tool("promtool", "prometheus")


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    # cwd is the rules' directory: alerts_test.yml names alerts.yml relative to where it runs.
    return subprocess.run(
        [promtool, *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alert_cases() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS_TEST.read_text())
    return [case for test in doc["tests"] for case in test.get("alert_rule_test", [])]


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules alerts.yml` accepts the rules, duplicate-rule lint included."""
    result = _promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass(promtool: str) -> None:
    """`promtool test rules alerts_test.yml` passes: each alert fires and stays quiet as expected."""
    result = _promtool(promtool, "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_passes_promtool_check(promtool: str) -> None:
    """`promtool check config scrape.yml` accepts the config and the alerts.yml it loads."""
    result = _promtool(promtool, "check", "config", "scrape.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    assert "Checking alerts.yml" in result.stdout


def test_scrape_config_targets_the_daemon() -> None:
    """scrape.yml scrapes job `statemanager` at 127.0.0.1:9479 every 15s and loads alerts.yml."""
    doc = yaml.safe_load(SCRAPE.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in doc["scrape_configs"] if j["job_name"] == "statemanager"]
    assert job["scrape_interval"] == "15s"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9479"]}]


def test_alerts_are_the_documented_set_with_runbook_fields() -> None:
    """alerts.yml holds exactly the promised alerts, each with `for`, severity, summary, description."""
    rules = _rules()
    assert all("alert" in rule for rule in rules), "recording rules belong in another file"
    assert {rule["alert"]: rule["labels"]["severity"] for rule in rules} == EXPECTED_ALERTS
    assert len(rules) == len(EXPECTED_ALERTS), "an alert name is used twice"
    for rule in rules:
        assert "for" in rule, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """alerts_test.yml has, per alert, a case where it fires (annotations checked) and one where it does not."""
    cases = _alert_cases()
    for name in (rule["alert"] for rule in _rules()):
        mine = [case for case in cases if case["alertname"] == name]
        firing = [case for case in mine if case.get("exp_alerts")]
        quiet = [case for case in mine if not case.get("exp_alerts")]
        assert firing, f"{name}: no case where it fires"
        assert quiet, f"{name}: no case where it stays quiet"
        for case in firing:
            for alert in case["exp_alerts"]:
                assert alert["exp_labels"]["severity"] == EXPECTED_ALERTS[name], name
                assert {"summary", "description"} <= set(alert["exp_annotations"]), name
