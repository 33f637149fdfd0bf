"""The core's error types carry what their handlers read."""

from __future__ import annotations

from statemanager.core.errors import AnswerFromAnotherHistory, Compacted, EtcdUnavailable


def test_compacted_names_the_oldest_revision_left() -> None:
    """A compacted start revision says, in its message and as a field, where history begins."""
    error = Compacted(42)
    assert (str(error), error.compact_revision) == (
        "revision compacted; oldest available is 42",
        42,
    )


def test_an_answer_from_another_history_is_an_outage_with_both_revisions() -> None:
    """The writer's callers defer it as an outage (EtcdUnavailable); the watcher is told the
    revision that was not exceeded and the one etcd answered at."""
    error = AnswerFromAnotherHistory("etcd answered at 3", 7, 3)
    assert isinstance(error, EtcdUnavailable)
    assert (str(error), error.before, error.now) == ("etcd answered at 3", 7, 3)
