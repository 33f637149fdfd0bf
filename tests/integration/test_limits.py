"""etcd's response limit against a real etcd: listings paged by response size, never fatal."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from statemanager.adapters.etcd import PAGE_SHARE, EtcdClient
from statemanager.core.ports import Put
from statemanager.runtime.metrics import Metrics

from conftest import DaemonMaker, Etcd, eventually, states_are
from support import documents
from support.runtime import daemon_settings, wire


def counting_ranges(endpoint: str) -> tuple[EtcdClient, list[str | None]]:
    """A client, and the outcome of each range request it makes (None: answered)."""
    ranges: list[str | None] = []
    client = EtcdClient(
        [endpoint],
        timeout=10,
        observe=lambda op, _s, code: ranges.append(code) if op == "range" else None,
    )
    return client, ranges


async def put_keys(client: EtcdClient, prefix: str, count: int) -> None:
    """`count` small keys under `prefix`, 100 a transaction, in key order."""
    for start in range(0, count, 100):
        await client.txn(
            (),
            [
                Put(f"{prefix}k{i:05}".encode(), b"{}")
                for i in range(start, min(count, start + 100))
            ],
        )


async def test_listing_pages_halve_when_a_response_is_too_large(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """Values that make a full page exceed the receive limit are listed in smaller pages,
    all of them, at one revision (here a 1 MiB limit and 40 values of 100 KB)."""
    prefix = etcd.layout.containers
    for i in range(40):
        await etcd.put(f"{prefix}big{i:02}", b"x" * 100_000)
    client = EtcdClient([etcd_endpoint], timeout=10, max_response_bytes=1024 * 1024)
    try:
        revision, listing = await client.snapshot([prefix])
    finally:
        await client.close()
    assert [kv.key.decode() for kv in listing[prefix]] == [f"{prefix}big{i:02}" for i in range(40)]
    assert revision > 0


async def test_a_large_listing_takes_few_pages(etcd: Etcd, etcd_endpoint: str) -> None:
    """12,000 small keys are listed in two range requests: etcd counts every key from a page's
    start to the prefix's end for each page, so small pages make a large listing quadratic."""
    prefix = etcd.layout.containers
    client, ranges = counting_ranges(etcd_endpoint)
    try:
        await put_keys(client, prefix, 12_000)
        ranges.clear()
        _, listing = await client.snapshot([prefix])
    finally:
        await client.close()
    assert len(listing[prefix]) == 12_000
    assert ranges == [None, None]


async def test_the_next_page_is_read_while_the_caller_applies_one(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """A listing asks etcd for its next page before it hands one over, so etcd reads while
    the caller applies; a caller that stops after one page leaves no request behind."""
    prefix = etcd.layout.containers
    client, ranges = counting_ranges(etcd_endpoint)
    try:
        await put_keys(client, prefix, 25)
        ranges.clear()
        pages = client.pages([prefix], page_size=10)
        first = await anext(pages)
        assert len(first.items) == 10

        async def second_page_asked() -> bool:
            return len(ranges) == 2

        await eventually(second_page_asked, what="the second page's range answered")
        rest = [page async for page in pages]
        assert [len(page.items) for page in rest] == [10, 5]
        assert len(ranges) == 3

        ranges.clear()
        pages = client.pages([prefix], page_size=10)
        await anext(pages)
        await pages.aclose()  # stopped after one page: the next one's request is dropped
        _, listing = await client.snapshot([prefix])  # and the client goes on working
        assert len(listing[prefix]) == 25
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    finally:
        await client.close()


async def test_pages_are_larger_while_much_of_the_prefix_is_left(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """etcd counts every key left for each page, so a page is at least 1/PAGE_SHARE of what
    is left: 2,000 keys listed from 10-key pages take about half the requests fixed pages
    would."""
    prefix = etcd.layout.containers
    client = EtcdClient([etcd_endpoint], timeout=10)
    try:
        await put_keys(client, prefix, 2000)
        sizes = [len(page.items) async for page in client.pages([prefix], page_size=10)]
    finally:
        await client.close()
    assert sum(sizes) == 2000
    assert sizes[:2] == [10, (2000 - 10) // PAGE_SHARE]
    assert len(sizes) < 2000 // 10 * 3 // 5
    assert sizes[-1] <= 10  # once little is left, pages are back to the asked size


async def test_daemon_starts_over_a_listing_larger_than_64_mib(
    private: Etcd, make_daemon: DaemonMaker
) -> None:
    """300 container values of 240 KB (each under inputs.max_value_bytes, 72 MB together, over
    the 64 MiB receive limit in one page): the daemon lists them in smaller pages and syncs."""
    padding = "x" * 240_000
    for i in range(300):
        cid = f"c{i:03}"
        doc = documents.container(cid, {"Status": "running"}, "big", stats={"padding": padding})
        await private.put(f"{private.layout.containers}{cid}", doc)
    await private.package("p", ["big"])
    d = make_daemon()
    d.start()
    await d.wait_synced(timeout=90)
    await states_are(private, {"big": "Running", "pkg:p": "Running"})
    assert d.events("etcd_page_halved")
    assert 'statemanager_containers{status="running"} 300.0' in d.scrape()
    assert d.process is not None
    assert d.process.poll() is None, d.tail()


async def test_watch_response_over_the_receive_limit_is_answered_with_a_relist(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """One transaction of 12 container values of 100 KB: its watch response (a revision's events
    are never split) exceeds a 1 MiB receive limit, and would at every resume. The watcher
    relists in pages instead, gets all 12, and follows the watch again afterwards."""
    client = EtcdClient([etcd_endpoint], timeout=10, max_response_bytes=1024 * 1024)
    metrics = Metrics()
    parts = wire(client, daemon_settings(layout=etcd.layout, silence_limit=10.0), metrics=metrics)
    task = asyncio.create_task(parts.watcher.run())

    def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
        async def poll() -> bool:
            assert not task.done(), task  # nothing etcd answers ends the watcher
            return check()

        return poll

    def containers() -> int:
        return parts.index.sizes()[0]

    try:
        await eventually(holds(lambda: parts.listings.count > 0), 15, "the first listing")
        stats = {"padding": "x" * 100_000}
        docs = {
            f"big{i:02}": documents.container(f"big{i:02}", {"Status": "running"}, "m", stats=stats)
            for i in range(12)
        }
        await client.txn(
            (),
            [
                Put(f"{etcd.layout.containers}{cid}".encode(), doc.encode())
                for cid, doc in docs.items()
            ],
        )
        # The relist applies its pages as they come and counts itself once whole: wait for both.
        relisted = holds(lambda: containers() == 12 and parts.listings.count >= 2)
        await eventually(relisted, 20, "the big containers, by a relist")
        assert parts.listings.count == 2
        restarts = metrics.registry.get_sample_value(
            "statemanager_watch_restarts_total", {"reason": "too_large"}
        )
        assert restarts == 1
        await etcd.container("small", "running", "m")
        await eventually(holds(lambda: containers() == 13), 15, "a later event")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
