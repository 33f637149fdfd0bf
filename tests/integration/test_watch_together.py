"""Adjacent state prefixes watched as one range on a real etcd: one transaction writing under
both comes back as one response, handed over per prefix; keys between them are dropped and
counted; each prefix resumes from its own revision."""

from __future__ import annotations

import asyncio

from statemanager.adapters.etcd import EtcdClient
from statemanager.core.ports import Put, WatchBatch

from conftest import Etcd


async def batches_until(
    client: EtcdClient, starts: dict[str, int], together: list[list[str]], reach: dict[str, int]
) -> list[WatchBatch]:
    """The batches the watch yields until each prefix in `reach` had one at its revision."""
    got: list[WatchBatch] = []
    stream = client.watch(starts, progress_every=0.2, together=together)
    try:
        async with asyncio.timeout(10):
            async for batch in stream:
                got.append(batch)
                if all(
                    any(b.prefix == p and b.revision >= r for b in got) for p, r in reach.items()
                ):
                    return got
    finally:
        await stream.aclose()
    raise AssertionError("unreachable")


async def test_one_transaction_under_two_prefixes_is_one_response(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """A write to both prefixes and a key between them: two batches with one header and
    revision, and the key between counted, not delivered."""
    root = etcd.layout.own
    models, packages = f"{root}m/", f"{root}p/"
    client = EtcdClient([etcd_endpoint], timeout=5)
    try:
        start = await client.revision() + 1
        revision = (
            await client.txn(
                [], [Put(f"{models}a".encode(), b"1"), Put(f"{root}n".encode(), b"x"),
                     Put(f"{packages}b".encode(), b"2")]
            )
        ).revision  # fmt: skip
        together = [[models, packages]]
        reach = {models: revision, packages: revision}
        got = await batches_until(client, {models: start, packages: start}, together, reach)
        events = [b for b in got if b.prefix is not None]
        assert {b.prefix: [e.key for e in b.events] for b in events} == {
            models: [f"{models}a".encode()],
            packages: [f"{packages}b".encode()],
        }
        assert len({(b.revision, b.header) for b in events}) == 1  # one response
        assert sum(b.foreign for b in got) == 1

        later = (await client.txn([], [Put(f"{models}c".encode(), b"3")])).revision
        # The package prefix has delivered up to `later` already; the model prefix has not.
        starts = {models: revision, packages: later + 1}
        got = await batches_until(client, starts, together, {models: later})
        delivered = [(b.prefix, e.key) for b in got if b.prefix for e in b.events]
        assert delivered == [(models, f"{models}a".encode()), (models, f"{models}c".encode())]
    finally:
        await client.close()
