"""etcd's request limits against a real etcd: listings paged by response size."""

from __future__ import annotations

from statemanager.etcd import EtcdClient

from conftest import Etcd


async def test_listing_pages_halve_when_a_response_is_too_large(
    etcd: Etcd, etcd_endpoint: str
) -> None:
    """Values that make a 1,000-key page exceed the receive limit are listed in smaller pages,
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
