"""The core's error types carry what their handlers read."""

from __future__ import annotations

from statemanager.core.errors import Compacted


def test_compacted_names_the_oldest_revision_left() -> None:
    """A compacted start revision says, in its message and as a field, where history begins."""
    error = Compacted(42)
    assert (str(error), error.compact_revision) == (
        "revision compacted; oldest available is 42",
        42,
    )
