"""Containers matched to their model by name (no annotation) as the first listing sees them."""

from __future__ import annotations

import json

from statemanager.core.keys import KeyLayout

from conftest import DaemonMaker, Etcd, cli, states_are


async def test_name_matched_container_is_not_reported_unassigned(
    etcd: Etcd, etcd_endpoint: str, layout: KeyLayout, daemon_factory: DaemonMaker
) -> None:
    """A container whose name a Model spec lists, listed before that spec (its prefix comes
    first), is assigned: `status` and the daemon's start report nothing unassigned."""
    await etcd.model_spec("m1", ["web"])
    await etcd.package("p1", ["m1"])
    doc = {"id": "c1", "names": ["m1_web"], "state": {"Status": "running"}}
    await etcd.put(layout.containers + "c1", json.dumps(doc))

    result = cli(["status"], etcd_endpoint, layout)
    assert result.returncode == 0, result.stderr
    assert "container c1: running" in result.stdout
    assert "unassigned" not in result.stdout

    daemon = daemon_factory()
    daemon.start()
    await daemon.wait_synced()
    await states_are(etcd, {"m1": "Running", "pkg:p1": "Running"})
    assert not daemon.events("unassigned_container")
    assert "statemanager_unassigned_containers 0.0" in daemon.scrape()
