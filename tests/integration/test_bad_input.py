"""Bad input never stops the daemon: each bad key is logged and counted once, and every valid
key still gets its state (SPEC §7)."""

from __future__ import annotations

import json

from conftest import Daemon, Etcd, eventually, states_are


def counter(scrape: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text scrape (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in scrape.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def test_bad_values_are_reported_once_and_skipped(etcd: Etcd, daemon: Daemon) -> None:
    """Invalid JSON/YAML, wrong types, an unassigned container and a 1 MiB value: all reported,
    the daemon keeps running, and the valid keys beside them get their states."""
    c = etcd.layout.containers
    bad = {
        c + "broken-json": "{not json",
        c + "wrong-type": json.dumps({"state": "running"}),
        c + "huge": json.dumps({"state": {"Status": "running"}, "pad": "x" * (1024 * 1024)}),
        etcd.layout.packages + "bad-yaml": "kind: Package\nspec: [unclosed",
        etcd.layout.packages + "wrong-kind": "kind: Model\nspec: {models: []}",
        etcd.layout.models + "typed": "kind: Model\nspec: {containers: 7}",
    }
    for key, value in bad.items():
        await etcd.put(key, value)
    await etcd.put(c + "orphan", json.dumps({"names": ["nobody"], "state": {"Status": "running"}}))
    await etcd.package("fine", ["ok_model"])
    await etcd.container("ok", "running", "ok_model")
    await states_are(etcd, {"ok_model": "Running", "pkg:fine": "Running"})

    async def all_reported() -> bool:
        return {e["key"] for e in daemon.events("invalid_input")} >= set(bad)

    await eventually(all_reported, 10, "every bad key reported")
    reports = daemon.events("invalid_input")
    assert sorted(e["key"] for e in reports) == sorted(bad)  # once each
    kinds = {e["key"]: e["kind"] for e in reports}
    assert kinds[c + "broken-json"] == "invalid_json"
    assert kinds[c + "wrong-type"] == "wrong_type"
    assert kinds[c + "huge"] == "oversized"
    assert kinds[etcd.layout.packages + "bad-yaml"] == "invalid_yaml"
    assert kinds[etcd.layout.packages + "wrong-kind"] == "wrong_kind"
    assert [e["key"] for e in daemon.events("unassigned_container")] == [c + "orphan"]
    assert await etcd.package_state("bad-yaml") is None  # treated as absent: no state

    scrape = daemon.scrape()
    assert counter(scrape, "statemanager_invalid_inputs_total", kind="invalid_json") == 1
    assert counter(scrape, "statemanager_invalid_inputs_total", kind="oversized") == 1
    assert counter(scrape, "statemanager_unassigned_containers") == 1
    assert daemon.process is not None and daemon.process.poll() is None


async def test_value_turning_bad_counts_as_absent(etcd: Etcd, daemon: Daemon) -> None:
    """A container whose value becomes unparsable stops counting for its model."""
    await etcd.package("p", ["m"])
    await etcd.container("c", "dead", "m")
    await states_are(etcd, {"m": "Failed", "pkg:p": "Error"})
    await etcd.put(etcd.layout.containers + "c", "garbage")
    await states_are(etcd, {"m": "Pending", "pkg:p": "Paused"})
    await etcd.container("c", "running", "m")
    await states_are(etcd, {"m": "Running", "pkg:p": "Running"})
