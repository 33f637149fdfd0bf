"""The previous derived states and the unanswered writes: one owner, named operations."""

from __future__ import annotations

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import Fence
from statemanager.core.previous import PreviousStates

P = WorkKey(Resource.PACKAGE, "p")
LEADER = Fence(b"/leader/a", 7)


def test_an_echo_of_an_unanswered_write_makes_it_the_previous_state() -> None:
    """A write sent and never answered whose value etcd then shows landed: it is previous."""
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(P, "Error")])
    assert states.previous(P) == "Error"


def test_an_echo_of_another_value_or_after_the_answer_changes_nothing() -> None:
    """Only the key's next value after the send counts, and only until etcd answers."""
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(P, "Running"), (P, "Error")])  # someone else's write came first
    assert states.previous(P) is None
    states.sent([(P, "Error")])
    states.answered([P])
    states.echoed([(P, "Error")])
    assert states.previous(P) is None


def test_commits_and_agreements_set_or_forget_the_previous_state() -> None:
    """A commit or an agreement with the rules sets the previous state; None forgets it."""
    states = PreviousStates()
    states.committed(P, "Error")
    assert states.previous(P) == "Error"
    states.agreed({P: "Running"})
    assert states.previous(P) == "Running"
    states.committed(P, None)
    assert states.previous(P) is None


def test_previous_states_survive_only_the_same_leader_key() -> None:
    """Leading again with the same leader key keeps what was learnt; a new key forgets it."""
    states = PreviousStates()
    states.leading(LEADER)
    states.committed(P, "Error")
    states.leading(LEADER)
    assert states.previous(P) == "Error"
    states.leading(Fence(b"/leader/a", 9))
    assert states.previous(P) is None


def test_an_unheard_write_is_told_once_until_committed_or_a_new_leader_key() -> None:
    """`lost` keeps a transaction's state and records until `heard` takes them (once), a
    commit of the key, or leading under a new leader key; the same key keeps them."""
    states = PreviousStates()
    records = [(b"/triggers/p", "id-1")]
    states.leading(LEADER)
    states.lost(P, "Error", records)
    states.leading(LEADER)
    assert states.heard(P) == ("Error", records)
    assert states.heard(P) is None
    states.lost(P, "Error", records)
    states.committed(P, "Running")
    assert states.heard(P) is None
    states.lost(P, "Error", records)
    states.leading(Fence(b"/leader/a", 9))
    assert states.heard(P) is None


def test_an_echo_counts_for_each_unanswered_key_and_may_come_before_the_answer() -> None:
    """Keys etcd shows that no unanswered write touched are passed over, not the end of the
    batch; an answer arriving after the echo (the watch was first) changes nothing."""
    other = WorkKey(Resource.MODEL, "m")
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(other, "Running"), (P, "Error")])
    assert (states.previous(other), states.previous(P)) == (None, "Error")
    states.answered([P])
    assert states.previous(P) == "Error"


def test_states_kept_across_a_replacement_are_carried_until_learnt_again() -> None:
    """`replaced` keeps every previous state but marks it carried; a commit, an agreement, an
    echo of an unanswered write or `kept` ends that for its key, a new leader key for all.
    Keys with no previous state are not carried."""
    q, r, s = (WorkKey(Resource.PACKAGE, n) for n in "qrs")
    states = PreviousStates()
    states.leading(LEADER)
    for key in (P, q, r, s):
        states.committed(key, "Running")
    states.replaced()
    assert all(states.carried(k) for k in (P, q, r, s))
    assert states.previous(P) == "Running"  # kept
    assert not states.carried(WorkKey(Resource.PACKAGE, "unknown"))
    states.committed(P, "Error")
    states.agreed({q: "Running"})
    states.sent([(r, "Error")])
    states.echoed([(r, "Error")])
    assert [states.carried(k) for k in (P, q, r, s)] == [False, False, False, True]
    states.kept(s)
    assert not states.carried(s) and states.previous(s) == "Running"
    states.replaced()
    states.leading(LEADER)
    assert states.carried(P)  # the same leader key keeps them, carried
    states.leading(Fence(b"/leader/a", 9))
    assert not states.carried(P)
