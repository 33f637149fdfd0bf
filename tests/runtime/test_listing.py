"""A listing applied page by page: nothing is planned on an index that is part old, part new."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator

import pytest

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import KeyValue, Page

from support.memetcd import MemEtcd
from support.runtime import LAYOUT, Runtime, container, package, state, until

pytestmark = pytest.mark.looptime


async def test_nothing_is_planned_from_a_listing_until_it_is_whole() -> None:
    """A relist's first page says the container died; before the rest arrives a key of its
    model is queued (a StateChange). The worker writes nothing from the part-applied listing,
    nor after that listing fails; once a whole listing is applied it writes again."""
    mem = MemEtcd()
    package(mem, "p", ["m"])
    container(mem, "c1", "m", "running")
    async with Runtime(mem) as rt:
        await until(lambda: state(mem, "model", "m") == "Running")
        dead = json.dumps(
            {"state": {"Status": "dead"}, "annotation": {"io.pullpiri.annotations.model": "m"}}
        ).encode()
        first_page_applied = asyncio.Event()
        fail = asyncio.Event()

        async def broken_listing() -> AsyncGenerator[Page, None]:
            yield Page(LAYOUT.containers, mem.current_revision, [
                KeyValue(f"{LAYOUT.containers}c1".encode(), dead, mem.current_revision + 1)
            ])  # fmt: skip
            first_page_applied.set()
            await fail.wait()
            raise ConnectionError("etcd went away half-way through the listing")

        load = asyncio.create_task(rt.parts.controller.load(broken_listing()))
        await first_page_applied.wait()
        rt.parts.controller.confirm(WorkKey(Resource.MODEL, "m"))
        await asyncio.sleep(5)
        assert state(mem, "model", "m") == "Running"  # not Failed, from the part-applied index
        fail.set()
        with pytest.raises(ConnectionError):
            await load
        rt.parts.controller.confirm(WorkKey(Resource.MODEL, "m"))
        await asyncio.sleep(5)
        assert state(mem, "model", "m") == "Running"
        async with asyncio.timeout(10):
            await rt.parts.controller.load(mem.pages(list(LAYOUT.watched().values())))
        container(mem, "c1", "m", "dead")
        await until(lambda: state(mem, "model", "m") == "Failed")
