"""The previous derived states and the unanswered writes: one owner, named operations."""

from __future__ import annotations

import pytest

from statemanager.core.keys import Resource, WorkKey
from statemanager.core.ports import Fence
from statemanager.core.previous import PreviousStates

P = WorkKey(Resource.PACKAGE, "p")
M = WorkKey(Resource.MODEL, "m")
Q = WorkKey(Resource.PACKAGE, "q")
K = WorkKey(Resource.MODEL, "k")
LEADER = Fence(b"/leader/a", 7)


def test_an_echo_of_an_unanswered_write_makes_it_the_previous_state() -> None:
    """A write sent and never answered whose value etcd then shows landed: it is previous."""
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(P, "Error", 5)])
    assert states.previous(P) == "Error"


def test_an_echo_of_another_value_or_after_the_answer_changes_nothing() -> None:
    """Only the key's next value after the send counts, and only until etcd answers."""
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(P, "Running", 4), (P, "Error", 5)])  # someone else's write came first
    assert states.previous(P) is None
    states.sent([(P, "Error")])
    states.answered([P])
    states.echoed([(P, "Error", 5)])
    assert states.previous(P) is None


def test_commits_and_agreements_set_or_forget_the_previous_state() -> None:
    """A commit or an agreement with the rules sets the previous state; None forgets it."""
    states = PreviousStates()
    states.committed(P, "Error", 3)
    assert states.previous(P) == "Error"
    states.agreed([(P, "Running", 4)])
    assert states.previous(P) == "Running"
    states.committed(P, None, 4)
    assert states.previous(P) is None


def test_previous_states_survive_only_the_same_leader_key() -> None:
    """Leading again with the same leader key keeps what was learnt; a new key forgets it."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 3)
    states.leading(LEADER, 0)
    assert states.previous(P) == "Error"
    states.leading(Fence(b"/leader/a", 9), 0)
    assert states.previous(P) is None


def test_a_change_by_the_rules_while_another_daemon_led_is_learnt() -> None:
    """Another daemon found leading at 10, this one leading again under the same key at 20:
    a key shown changed within (10, 20] to what the rules give is learnt there (that leader's
    write; its unheard write no longer counts); a change to anything else, a change at 10 or
    below, or one after 20 is not."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    for key in (P, M):
        states.committed(key, "Error", 3)
    states.lost(P, "Error", [(b"/triggers/p", "id-1")])
    rules = {P: "Paused", M: "Running"}.get
    states.ruled_meanwhile([(P, "Error", 11), (P, "Paused", 10), (M, "Pending", 12)], rules)
    assert (states.previous(P), states.previous(M)) == ("Error", "Error")
    states.another_leads(10)
    states.ruled_meanwhile([(P, "Paused", 10), (M, "Pending", 12)], rules)
    assert (states.previous(P), states.previous(M)) == ("Error", "Error")
    states.ruled_meanwhile([(P, "Paused", 11)], rules)
    assert states.previous(P) == "Paused"
    assert states.heard(P) is None
    states.leading(LEADER, 20)
    states.ruled_meanwhile([(M, "Running", 21)], rules)
    assert states.previous(M) == "Error"
    states.ruled_meanwhile([(M, "Running", 20)], rules)
    assert states.previous(M) == "Running"


def test_a_state_a_listing_drops_gives_way_to_the_other_one_learnt_before() -> None:
    """Deleted at 12, then Degraded at 16 (and again at 18); a restore to below 16 shows the
    key absent at 13: Degraded was never held there, the deletion may be, and a trigger from
    before it (8) does not make Error the previous state. The same state found agreeing
    again at a later revision is no fallback; our own write of it again is."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 8)
    states.committed(P, None, 12)
    states.committed(P, "Degraded", 16)
    states.agreed([(P, "Degraded", 18)])
    states.replaced()
    states.listed([(P, None, 13)])
    assert states.remembered([P]) == {P: (None, 12, True)}
    assert not states.triggered(P, 8)
    states.relisted(13)
    states.committed(M, "Failed", 5)
    states.agreed([(M, "Failed", 9)])
    states.committed(P, "Error", 5)
    states.committed(P, "Error", 9)
    states.replaced()
    states.listed([(M, "Failed", 7), (P, "Degraded", 7)])
    assert states.remembered([M, P]) == {M: (None, 0, True), P: ("Error", 5, True)}


def test_the_window_of_another_leader_opens_once_and_again_after_leading() -> None:
    """Found leading at 10 and again at 15: the window still opens at 10. Closed by leading at
    20, it opens anew at 30. A key with nothing learnt, or shown unchanged, learns nothing."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 3)
    states.committed(M, "Running", 3)
    rules = {P: "Paused", M: "Running", Q: "Running"}.get
    states.another_leads(10)
    states.another_leads(15)
    states.ruled_meanwhile([(P, "Error", 12), (Q, "Running", 12), (M, "Running", 12)], rules)
    assert states.remembered([P, Q, M]) == {
        P: ("Error", 3, False),
        Q: (None, 0, False),
        M: ("Running", 3, False),
    }
    states.ruled_meanwhile([(P, "Paused", 12)], rules)
    assert states.previous(P) == "Paused"
    states.leading(LEADER, 20)
    states.committed(P, "Error", 22)
    states.another_leads(30)
    states.ruled_meanwhile([(P, "Paused", 31)], rules)
    assert states.previous(P) == "Paused"


def test_a_fallback_is_judged_in_turn_and_dropped_where_the_histories_differ() -> None:
    """Error written at 5 and again at 9: a listing showing Error at its very revision 5 holds
    the first write (kept through the relist), one showing another value below 5 holds
    neither; where the listing showed the histories differ at 5, a fallback learnt at 5 goes
    too. Running at 5, then Failed at 9, shown otherwise at 7: Running stands, carried."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    for key in (P, M, Q):
        states.committed(key, "Error", 5)
        states.committed(key, "Error", 9)
    states.committed(K, "Running", 5)
    states.committed(K, "Failed", 9)
    states.committed(K, "Failed", 9)  # told twice (its echo, its answer): Running stays before
    states.replaced()
    states.listed([(P, "Error", 5), (M, "Degraded", 4), (Q, "Error", 9), (K, "Pending", 7)])
    states.relisted(9)
    assert states.remembered([K]) == {K: ("Running", 5, True)}
    assert states.remembered([P, M]) == {P: ("Error", 5, False), M: (None, 0, True)}
    assert states.remembered([Q]) == {Q: ("Error", 9, False)}
    states.replaced()
    states.diverged(5)
    states.relisted(9)
    assert states.remembered([Q]) == {Q: (None, 0, True)}


def test_a_trigger_at_the_revision_of_another_state_keeps_the_fallback_before_both() -> None:
    """Degraded at 3, Running at 7; the new history holds a trigger at 7 (the histories
    differ there), so Error is learnt at 7 over Running. After another restore, a listing
    showing Paused at 5 drops Error, and Degraded (at 3) stands, not Running, learnt at that
    same revision on a replaced history."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Degraded", 3)
    states.committed(P, "Running", 7)
    states.replaced()
    assert states.triggered(P, 7)
    states.replaced()  # and again, to below 7
    states.listed([(P, "Paused", 5)])
    assert states.remembered([P]) == {P: ("Degraded", 3, True)}


def test_a_dropped_state_falls_back_past_every_state_learnt_above_the_restore() -> None:
    """Error written at 16, again at 19 (a correction), deleted at 21: a restore to 16, shown
    absent at 18, drops the deletion and the correction, and the first Error stands (carried),
    so its restored trigger is no second entry. The last 4 states (EARLIER_KEPT) before the
    current one are kept, no more."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 16)
    states.committed(P, "Error", 19)
    states.committed(P, None, 21)
    for key in (M, K):
        for revision in range(10, 70, 10):  # the 4 before S60 kept: S20 to S50
            states.committed(key, f"S{revision}", revision)
    states.replaced()
    states.listed([(P, None, 18), (M, "X", 25), (K, "X", 15)])
    assert states.remembered([P, M, K]) == {
        P: ("Error", 16, True),
        M: ("S20", 20, True),
        K: (None, 0, True),
    }
    assert not states.triggered(P, 16) or states.previous(P) == "Error"


def test_a_state_learnt_again_at_its_own_revision_pushes_no_earlier_one_out() -> None:
    """S10 to S40 kept before S50: S50 told again at 50 (its echo, its answer), or Error
    learnt at 50 from a trigger of the new history, keeps S10 as the oldest to fall back on."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    again, triggered = WorkKey(Resource.PACKAGE, "a"), WorkKey(Resource.PACKAGE, "b")
    for key in (again, triggered):
        for revision in range(10, 60, 10):
            states.committed(key, f"S{revision}", revision)
    states.committed(again, "S50", 50)
    states.replaced()
    assert states.triggered(triggered, 50)
    states.replaced()
    states.listed([(again, "X", 15), (triggered, "X", 15)])
    assert states.remembered([again, triggered]) == {
        again: ("S10", 10, True),
        triggered: ("S10", 10, True),
    }


def test_an_unheard_write_is_told_once_until_committed_or_a_new_leader_key() -> None:
    """`lost` keeps a transaction's state and records until `heard` takes them (once), a
    commit of the key, or leading under a new leader key; the same key keeps them."""
    states = PreviousStates()
    records = [(b"/triggers/p", "id-1")]
    states.leading(LEADER, 0)
    states.lost(P, "Error", records)
    states.leading(LEADER, 0)
    assert states.heard(P) == ("Error", records)
    assert states.heard(P) is None
    states.lost(P, "Error", records)
    states.committed(P, "Running", 4)
    assert states.heard(P) is None
    states.lost(P, "Error", records)
    states.leading(Fence(b"/leader/a", 9), 0)
    assert states.heard(P) is None


def test_an_echo_counts_for_each_unanswered_key_and_may_come_before_the_answer() -> None:
    """Keys etcd shows that no unanswered write touched are passed over, not the end of the
    batch; an answer arriving after the echo (the watch was first) changes nothing."""
    other = WorkKey(Resource.MODEL, "m")
    states = PreviousStates()
    states.sent([(P, "Error")])
    states.echoed([(other, "Running", 4), (P, "Error", 5)])
    assert (states.previous(other), states.previous(P)) == (None, "Error")
    states.answered([P])
    assert states.previous(P) == "Error"


def test_states_kept_across_a_replacement_are_carried_until_learnt_again() -> None:
    """`replaced` keeps every previous state but marks it carried; a commit, an agreement, an
    echo of an unanswered write or `kept` ends that for its key, a new leader key for all.
    Keys with no previous state are carried too (none may be what the new history took back),
    and only after a replacement."""
    q, r, s = (WorkKey(Resource.PACKAGE, n) for n in "qrs")
    states = PreviousStates()
    states.leading(LEADER, 0)
    assert not states.carried(P)
    for key in (P, q, r, s):
        states.committed(key, "Running", 2)
    states.replaced()
    assert all(states.carried(k) for k in (P, q, r, s))
    assert states.previous(P) == "Running"  # kept
    assert states.carried(WorkKey(Resource.PACKAGE, "unknown"))
    states.committed(P, "Error", 3)
    states.agreed([(q, "Running", 4)])
    states.sent([(r, "Error")])
    states.echoed([(r, "Error", 5)])
    assert [states.carried(k) for k in (P, q, r, s)] == [False, False, False, True]
    states.kept(s)
    assert not states.carried(s) and states.previous(s) == "Running"
    states.replaced()
    states.leading(LEADER, 0)
    assert states.carried(P)  # the same leader key keeps them, carried
    states.leading(Fence(b"/leader/a", 9), 0)
    assert not states.carried(P)


def test_a_listing_judges_each_carried_state_by_its_revision() -> None:
    """After `replaced`, a listing that shows a key at the mod revision its state was learnt
    at, holding it, learns it again; modified below it, at it with another value, or absent at
    or below it: the new history never held it, and it is dropped (the key still carried, for
    the writer's trigger check); modified or absent above it: it stays carried. Keys not
    carried are not judged, and `echoed` (the watch) judges nothing."""
    keys = [WorkKey(Resource.PACKAGE, n) for n in "abcdefgh"]
    states = PreviousStates()
    states.leading(LEADER, 0)
    for key in keys:
        states.committed(key, "Error", 10)
    states.replaced()
    states.echoed([(keys[1], "Running", 4)])
    assert states.previous(keys[1]) == "Error"
    a, b, c, d, e, f, g, h = keys
    seen = [(a, "Error", 10), (b, "Running", 4), (c, "Failed", 10), (d, None, 9)]
    states.listed([*seen, (e, None, 10), (f, "Running", 12), (g, None, 11)])
    assert states.carried(a)  # held: learnt again at the listing's end
    states.relisted(12)
    found = [(states.previous(k), states.carried(k)) for k in keys]
    assert found == [
        ("Error", False),
        (None, True),
        (None, True),
        (None, True),
        (None, True),
        ("Error", True),
        ("Error", True),
        ("Error", True),  # not listed: absent above its revision, it stands
    ]
    states.committed(h, "Running", 13)
    states.listed([(h, "Paused", 2)])  # learnt on this history: not carried, not judged
    assert (states.previous(h), states.carried(h)) == ("Running", False)


def test_remembered_states_are_put_back_with_their_revision_and_carriage() -> None:
    """`put_back` restores what `remembered` gave: the state, the revision a listing judges it
    by, and whether it is carried; a key with no previous state gets none again."""
    q = WorkKey(Resource.MODEL, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 10)
    states.replaced()
    before = states.remembered([P, q])
    states.agreed([(P, "Running", 12), (q, "Failed", 12)])
    states.put_back(before)
    assert [(states.previous(k), states.carried(k)) for k in (P, q)] == [
        ("Error", True),
        (None, True),
    ]
    states.listed([(P, "Running", 9)])
    assert (states.previous(P), states.carried(P)) == (None, True)
    states.agreed([(q, None, 12)])
    states.put_back(states.remembered([q]) | {P: (None, 0, False)})
    assert [(states.previous(k), states.carried(k)) for k in (P, q)] == [
        (None, False),
        (None, False),
    ]


def test_a_trigger_of_the_new_history_makes_error_the_previous_state_of_a_carried_key() -> None:
    """`triggered` learns Error (at the trigger's revision) for a carried key, with a previous
    state learnt at or below it or none; a key not carried keeps what it has."""
    q = WorkKey(Resource.PACKAGE, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Running", 7)
    assert not states.triggered(P, 7)
    assert states.previous(P) == "Running"
    states.replaced()
    assert states.triggered(P, 7)
    assert states.triggered(q, 8)
    assert [(states.previous(k), states.carried(k)) for k in (P, q)] == [
        ("Error", False),
        ("Error", False),
    ]
    states.listed([(P, "Running", 3)])  # learnt on the new history: not judged again
    assert states.previous(P) == "Error"


@pytest.mark.parametrize("state", ["Running", None])
def test_a_trigger_older_than_the_carried_state_does_not_overrule_it(state: str | None) -> None:
    """A carried state (or deletion) learnt at 10 is newer evidence than a trigger put at 7:
    it stands, and the key stays carried; a trigger at 10 or later makes Error previous."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, state, 10)
    states.replaced()
    assert not states.triggered(P, 7)
    assert (states.previous(P), states.carried(P)) == (state, True)
    assert states.remembered([P]) == {P: (state, 10, True)}
    assert states.triggered(P, 10)
    assert (states.previous(P), states.carried(P)) == ("Error", False)


@pytest.mark.parametrize(
    ("shown", "stands"),
    [
        ((None, 10), True),  # absent at the deletion's revision: the new history holds it
        ((None, 12), True),  # absent above it: held, or deleted again since
        (("Running", 12), True),  # put above it: held, or never
        ((None, 9), False),  # absent in a listing below it: never held
        (("Error", 10), False),  # a value at the deletion's revision: another write
        (("Error", 4), False),  # a value put below it: never held
    ],
)
def test_a_carried_deletion_is_judged_by_the_listing(
    shown: tuple[str | None, int], stands: bool
) -> None:
    """A deletion learnt at 10 is judged by a listing like a state: where the new history
    cannot have held it, it is forgotten (and a trigger older than it counts again)."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, None, 10)
    states.replaced()
    value, revision = shown
    states.listed([(P, value, revision)])
    assert states.triggered(P, 7) is not stands


@pytest.mark.parametrize(("listing", "stands"), [(9, False), (10, True), (11, True)])
def test_a_carried_deletion_the_relist_did_not_show_is_judged_absent(
    listing: int, stands: bool
) -> None:
    """The first whole listing judges a carried deletion it did not show as absent there."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, None, 10)
    states.replaced()
    states.relisted(listing)
    assert states.triggered(P, 7) is not stands


def test_an_agreement_found_again_unchanged_keeps_its_later_revision() -> None:
    """Found agreeing again with the same state at a lower revision (a plan of the key alone),
    the state keeps the revision it was first found at; a new state, or a carried key, takes
    the revision given."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.agreed([(P, "Running", 9)])
    states.agreed([(P, "Running", 8)])
    assert states.remembered([P]) == {P: ("Running", 9, False)}
    states.replaced()
    states.agreed([(P, "Running", 8)])
    assert states.remembered([P]) == {P: ("Running", 8, False)}
    states.agreed([(P, "Degraded", 7)])
    assert states.remembered([P]) == {P: ("Degraded", 7, False)}


def test_a_divergence_drops_every_carried_state_learnt_at_or_above_it() -> None:
    """The listing shows the new history differs from the replaced one at 11 and at 10: at
    its end, carried states (and deletions) learnt at 10 or above are dropped, the keys still
    carried, though the listing showed the very write (a value someone put the same); those
    learnt below stand, and a key learnt again on the new history keeps what it learnt. A
    divergence told outside a first listing is of no replacement: nothing is dropped."""
    low, high, deleted, again = (WorkKey(Resource.PACKAGE, n) for n in ("l", "h", "d", "a"))
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(low, "Running", 9)
    states.committed(high, "Error", 10)
    states.committed(deleted, None, 11)
    states.committed(again, "Error", 12)
    states.diverged(9)
    states.replaced()
    states.committed(again, "Running", 12)
    states.listed([(high, "Error", 10)])
    states.diverged(11)
    states.diverged(10)
    states.relisted(13)
    assert states.remembered([low, high, deleted, again]) == {
        low: ("Running", 9, True),
        high: (None, 0, True),
        deleted: (None, 0, True),
        again: ("Running", 12, False),
    }


def test_a_held_write_of_ours_is_the_previous_state_over_a_later_one() -> None:
    """In the first listing after a replacement, our write of Running at 7, shown held, is a
    carried key's previous state over the Error learnt at 9 (which the new history never
    held), and is learnt again at the listing's end; a trigger older than it does not make
    Error previous. Outside that listing, or for a key not carried, it is ignored."""
    q = WorkKey(Resource.PACKAGE, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 9)
    states.held(P, "Running", 7)  # no replacement: ignored
    states.replaced()
    states.committed(q, "Error", 9)  # learnt on the new history: not carried
    states.held(P, "Running", 7)
    states.held(q, "Running", 7)
    assert not states.triggered(P, 5)
    states.listed([(P, "Running", 7)])
    states.relisted(12)
    assert states.remembered([P, q]) == {P: ("Running", 7, False), q: ("Error", 9, False)}
    states.held(P, "Paused", 4)  # after the first listing: ignored
    assert states.previous(P) == "Running"


def test_an_unanswered_deletion_is_learnt_from_its_echo_at_its_revision() -> None:
    """Our deletion whose answers were lost, echoed (the key shown absent at 12), is the
    previous state, learnt at 12: after a replacement, a trigger older than it (put at 11,
    dropped by the sender) does not make Error previous; someone else's put shown instead
    teaches nothing."""
    q = WorkKey(Resource.PACKAGE, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 9)
    states.committed(q, "Error", 9)
    states.sent([(P, None), (q, None)])
    states.echoed([(P, None, 12), (q, "Degraded", 12)])
    assert states.remembered([P, q]) == {P: (None, 12, False), q: ("Error", 9, False)}
    states.replaced()
    assert not states.triggered(P, 11)
    assert states.triggered(q, 11)


def test_after_a_replacement_a_key_learnt_again_is_judged_as_on_one_history() -> None:
    """Once the first listing after a replacement is done, a key learnt again on the new
    history is no longer carried: a trigger teaches it nothing, and found agreeing again
    unchanged it keeps its later revision; a later listing's same write learns a carried key
    again at once (no longer at a listing's end)."""
    q = WorkKey(Resource.PACKAGE, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(q, "Running", 3)
    states.replaced()
    states.relisted(4)
    states.committed(P, "Running", 5)  # learnt on the new history
    assert not states.triggered(P, 6)
    assert states.previous(P) == "Running"
    states.agreed([(P, "Running", 4)])
    assert states.remembered([P]) == {P: ("Running", 5, False)}
    states.listed([(q, "Running", 3)])  # a resync listing: the very write, learnt again
    assert not states.carried(q)


def test_put_back_of_a_key_that_had_nothing_leaves_no_revision() -> None:
    """A plan found a key agreeing (absent, at 9) and was undone: put back, the key has no
    previous state and no revision, so a trigger at 5 after a replacement makes Error its
    previous state."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    before = states.remembered([P])
    states.agreed([(P, None, 9)])
    assert states.remembered([P]) == {P: (None, 9, False)}
    states.put_back(before)
    assert states.remembered([P]) == {P: (None, 0, False)}
    states.replaced()
    assert states.triggered(P, 5)


def test_an_unheard_write_ends_when_the_key_is_learnt_again() -> None:
    """An agreement or an echo of a later write of ours learns the key anew: the unheard
    transaction before it no longer tells the previous state (its records, found later,
    would make Error previous over what was learnt since)."""
    records = [(b"/triggers/p", "id-1")]
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.lost(P, "Error", records)
    states.agreed([(P, "Degraded", 9)])
    assert states.heard(P) is None
    states.lost(P, "Error", records)
    states.sent([(P, "Running")])
    states.echoed([(P, "Running", 11)])
    assert (states.heard(P), states.previous(P)) == (None, "Running")
    states.lost(P, "Error", records)
    states.put_back({P: ("Error", 3, False)})  # undoing a plan's learning is no new learning
    assert states.heard(P) == ("Error", records)


def test_the_first_whole_listing_after_a_replacement_judges_the_keys_it_did_not_show() -> None:
    """`relisted` takes each carried key with a previous state that no `listed` page showed
    since `replaced` as absent at the listing's revision: dropped when at or below the
    revision it was learnt at, kept above; keys a page showed were judged there. (Only the
    first whole listing since a replacement shows every key: the controller calls it then.)"""
    a, b, c = (WorkKey(Resource.PACKAGE, n) for n in "abc")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(a, "Error", 10)
    states.committed(b, "Error", 4)
    states.committed(c, "Error", 10)
    states.replaced()
    states.listed([(c, "Error", 10)])  # the same write: learnt again
    states.relisted(8)
    found = [(states.previous(k), states.carried(k)) for k in (a, b, c)]
    assert found == [(None, True), ("Error", True), ("Error", False)]
    fresh = PreviousStates()
    fresh.leading(LEADER, 0)
    fresh.committed(a, "Error", 10)
    fresh.relisted(2)  # no replacement: nothing is carried, nothing judged
    assert fresh.previous(a) == "Error"


def test_every_way_of_learning_keeps_the_revision_a_listing_judges_by() -> None:
    """What is learnt by an agreement, an echo of our write or a restored trigger keeps its
    mod revision: after a replacement, a listing shows each at that very revision (learnt
    again) or below it (dropped). A listing judges every key it shows, whatever came first."""
    agreed, echoed, triggered, other = (WorkKey(Resource.PACKAGE, n) for n in "aetx")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.agreed([(agreed, "Error", 10)])
    states.sent([(echoed, "Error")])
    states.echoed([(echoed, "Error", 11)])
    states.replaced()
    states.triggered(triggered, 12)
    states.committed(other, "Running", 13)
    states.replaced()
    unknown = WorkKey(Resource.MODEL, "m")  # no previous state: passed over, not the end
    states.listed([(unknown, "Running", 3), (agreed, "Error", 10), (echoed, "Error", 5)])
    states.listed([(triggered, None, 12)])
    states.relisted(13)
    found = [(states.previous(k), states.carried(k)) for k in (agreed, echoed, triggered)]
    assert found == [("Error", False), (None, True), (None, True)]


def test_a_restored_trigger_teaches_nothing_of_a_key_learnt_again() -> None:
    """After a replacement, a key learnt again on the new history is not carried: a trigger
    found there says nothing more of it."""
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.replaced()
    states.committed(P, "Running", 12)
    states.triggered(P, 7)
    assert states.previous(P) == "Running"


def test_the_relist_judges_at_its_own_revision_and_only_carried_keys() -> None:
    """Absent in a listing at the very revision a carried state was learnt at: the new
    history never held it. A key learnt again at that revision is not judged at all."""
    q = WorkKey(Resource.PACKAGE, "q")
    states = PreviousStates()
    states.leading(LEADER, 0)
    states.committed(P, "Error", 10)
    states.replaced()
    states.committed(q, "Running", 10)
    states.relisted(10)
    assert (states.previous(P), states.previous(q)) == (None, "Running")
