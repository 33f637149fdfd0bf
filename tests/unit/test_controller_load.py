"""A full listing is applied to the index and released as it goes."""

from __future__ import annotations

import json

from statemanager.adapters.etcd import KeyValue
from statemanager.core.keys import Resource, WorkKey
from statemanager.runtime.metrics import Metrics

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, daemon_settings, wire


def _container(model: str) -> bytes:
    doc = {"state": {"Status": "running"}, "annotation": {"io.pullpiri.annotations.model": model}}
    return json.dumps(doc).encode()


async def test_load_applies_the_listing_and_frees_each_value_once_applied() -> None:
    """Every listed container reaches the index, and the listing holds none of them after the
    load (each item is dropped once applied): the listing does not sit beside the index."""
    parts = wire(MemEtcd(), daemon_settings(), metrics=Metrics())
    items = [
        KeyValue(f"{LAYOUT.containers}c{i}".encode(), _container(f"m{i % 3}"), 10 + i)
        for i in range(9)
    ]
    listing = {LAYOUT.containers: items}
    parts.controller.load(20, listing)
    assert listing[LAYOUT.containers] == []
    assert parts.index.sizes() == (9, 3, 0)
    assert [cid for cid, _ in parts.index.containers_of("m1")] == ["c1", "c4", "c7"]
    assert WorkKey(Resource.MODEL, "m2") in parts.queue
