"""A full listing is applied to the index a page at a time and released as it goes."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import KeyValue, Page
from statemanager.runtime.metrics import Metrics

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, daemon_settings, wire


def _container(model: str) -> bytes:
    doc = {"state": {"Status": "running"}, "annotation": {"io.pullpiri.annotations.model": model}}
    return json.dumps(doc).encode()


async def test_load_applies_the_pages_and_frees_each_value_once_applied() -> None:
    """Every listed container reaches the index, and each page holds none of them once it is
    applied, before the next page is read: the listing never sits whole beside the index."""
    parts = wire(MemEtcd(), daemon_settings(), metrics=Metrics())
    pages = [
        [
            KeyValue(f"{LAYOUT.containers}c{i}".encode(), _container(f"m{i % 3}"), 10 + i)
            for i in range(start, start + 3)
        ]
        for start in (0, 3, 6)
    ]
    left_when_next_read: list[list[int]] = []

    async def listing() -> AsyncGenerator[Page, None]:
        for items in pages:
            left_when_next_read.append([len(p) for p in pages])
            yield Page(LAYOUT.containers, 20, items)

    assert await parts.controller.load(listing()) == 20
    assert left_when_next_read == [[3, 3, 3], [0, 3, 3], [0, 0, 3]]
    assert parts.index.sizes() == (9, 3, 0)
    assert [cid for cid, _ in parts.index.containers_of("m1")] == ["c1", "c4", "c7"]
    assert WorkKey(Resource.MODEL, "m2") in parts.queue
