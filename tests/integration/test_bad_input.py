"""Bad input never stops the daemon: each bad key is logged and counted once, and every valid
key still gets its state (docs/contract.md, Reliability)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import Daemon, DaemonMaker, Etcd, eventually, states_are


def counter(scrape: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text scrape (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in scrape.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


def _alias_bomb(levels: int) -> str:
    """Nine aliases per level: 9**levels nodes from a few hundred bytes of YAML."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nkind: *a{levels - 1}\n"


async def test_bad_values_are_reported_once_and_skipped(etcd: Etcd, daemon: Daemon) -> None:
    """Invalid JSON/YAML, wrong types, an unassigned container, a 1 MiB value, and hostile ones
    that used to stop the daemon (JSON nested 100,000 deep: RecursionError; an ExitCode of
    5,000 digits: ValueError; a 500-byte YAML alias bomb: minutes and GBs): all reported once,
    the daemon keeps running, and the valid keys beside them get their states."""
    c = etcd.layout.containers
    bad = {
        c + "broken-json": "{not json",
        c + "wrong-type": json.dumps({"state": "running"}),
        c + "huge": json.dumps({"state": {"Status": "running"}, "pad": "x" * (1024 * 1024)}),
        etcd.layout.packages + "bad-yaml": "kind: Package\nspec: [unclosed",
        etcd.layout.packages + "wrong-kind": "kind: Model\nspec: {models: []}",
        etcd.layout.models + "typed": "kind: Model\nspec: {containers: 7}",
        c + "deep": "[" * 100_000 + "]" * 100_000,
        c + "digits": '{"state": {"Status": "exited", "ExitCode": ' + "7" * 5000 + "}}",
        etcd.layout.packages + "bomb": _alias_bomb(10),
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
    assert kinds[c + "deep"] == kinds[c + "digits"] == "invalid_json"
    assert kinds[etcd.layout.packages + "bomb"] == "invalid_yaml"
    assert [e["key"] for e in daemon.events("unassigned_container")] == [c + "orphan"]
    assert await etcd.package_state("bad-yaml") is None  # treated as absent: no state

    scrape = daemon.scrape()
    assert counter(scrape, "statemanager_invalid_inputs_total", kind="invalid_json") == 3
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


async def test_a_bug_on_one_key_quarantines_it_and_the_rest_goes_on(
    etcd: Etcd, daemon_factory: DaemonMaker
) -> None:
    """The real daemon with bugs planted (planted_bug.py): one that raises while ingesting a
    container and one that raises while planning a model. Each key is quarantined (logged once
    per revision with the traceback, counted by stage), other keys keep being written, the
    daemon keeps running, and a quarantined key is retried when its value changes."""
    d = daemon_factory()
    d.program = [str(Path(__file__).with_name("planted_bug.py"))]
    d.start()
    await d.wait_synced()
    c = etcd.layout.containers
    await etcd.package("good", ["gm"])
    await etcd.package("bad", ["poison_m"])
    await etcd.container("g1", "running", "gm")
    await etcd.container("p1", "running", "poison_m")

    async def put_x1(name: str, status: str) -> int:
        """Container x1 of model gm, named `name` (not the `{model}_{id}` the helper gives)."""
        annotation = {"io.pullpiri.annotations.model": "gm"}
        doc = {"names": [name], "state": {"Status": status}, "annotation": annotation}
        return await etcd.put(c + "x1", json.dumps(doc))

    broken = await put_x1("poison", "dead")
    await states_are(etcd, {"gm": "Running", "pkg:good": "Running"})

    def quarantined(key: str) -> list[dict[str, Any]]:
        return [e for e in d.events("key_quarantined") if e["key"] == key]

    async def both_quarantined() -> bool:
        return bool(quarantined(c + "x1")) and bool(quarantined("model/poison_m"))

    await eventually(both_quarantined, 10, "both planted bugs quarantined")
    [ingest] = quarantined(c + "x1")
    assert ingest["stage"] == "ingest" and ingest["revision"] == broken
    assert "RuntimeError: planted bug while ingesting" in ingest["error"]
    plan = quarantined("model/poison_m")
    assert plan[0]["stage"] == "plan" and "planted bug while planning" in plan[0]["error"]
    assert await etcd.model_state("poison_m") is None

    # Other keys keep being written while both stay quarantined.
    await etcd.container("g1", "dead", "gm")
    await states_are(etcd, {"gm": "Failed", "pkg:good": "Error"})
    # A changed value is retried: the container is applied, the model planned (and fails) again.
    await put_x1("fine", "running")
    await states_are(etcd, {"gm": "Failed", "pkg:good": "Error"})
    await etcd.container("g1", "running", "gm")
    await states_are(etcd, {"gm": "Running", "pkg:good": "Running"})
    changed = await etcd.container("p1", "dead", "poison_m")

    async def replanned() -> bool:
        return any(e["revision"] == changed for e in quarantined("model/poison_m"))

    await eventually(replanned, 10, "the changed model planned again")
    assert len(quarantined(c + "x1")) == 1  # once per revision
    revisions = [e["revision"] for e in quarantined("model/poison_m")]
    assert len(revisions) == len(set(revisions))
    scrape = d.scrape()
    assert counter(scrape, "statemanager_quarantined_total", stage="ingest") == 1
    assert counter(scrape, "statemanager_quarantined_total", stage="plan") == len(
        [e for e in d.events("key_quarantined") if e["stage"] == "plan"]
    )
    assert d.process is not None and d.process.poll() is None
