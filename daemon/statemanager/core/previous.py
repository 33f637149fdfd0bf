"""The previous derived state of each key, and the writes sent and not answered yet.

Purely computational: no I/O. One `PreviousStates` belongs to the writer (runtime/writer.py),
which creates it and is the only one to change it; the planner reads it through the narrow
`planner.PreviousView`, and the controller hands it what it learns (the state keys ingest
applied, what a plan found agreeing, a new leadership) through the writer.

The previous derived state tells a correction from a transition (planner.plan): a key whose
rules still give its previous state but which holds something else was changed by someone
else, and putting it back is a correction, not a new entry into Error with a second Reconcile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from statemanager.core.keys import WorkKey
from statemanager.core.ports import Fence
from statemanager.core.states import PackageState

# The states learnt before a key's current one that it keeps (`PreviousStates._forget`): a
# listing of a restored history drops the states learnt above the restore, a few at most (the
# simulation's swarm seed 21040396 needed two: a deletion and a correction above the Error the
# restore held).
EARLIER_KEPT = 4

# A state key's value as etcd showed it (None: absent), and the revision it showed it at: a
# value's mod revision; an absence's, the revision of its deletion or of the listing without it.
StateSeen = tuple[WorkKey, str | None, int]
# A key's previous derived state (None: none, or deleted), the revision it was learnt at (0:
# never learnt), and whether it is carried: what `remembered` gives and `put_back` restores.
Remembered = tuple[str | None, int, bool]
# Records a transaction put, each (key, the transition id its value names): etcd still holding
# one shows the transaction landed.
Records = Sequence[tuple[bytes, str]]


class PreviousStates:
    """PreviousStates keeps, per key, the state this daemon last derived there, and the state
    each unanswered transaction of its own may have written.

    Invariants: a key has a previous state only while this daemon leads with the leader key it
    was learnt under (`leading`), and with it the mod revision etcd showed that state at (a
    key whose state was learnt deleted keeps the revision of its deletion); every
    key, with a previous state or none, is carried from `replaced` until its previous state is
    learnt again (on the history that replaced the one it was learnt on) or `kept`, and a
    carried previous state is dropped, the key still carried, when a listing shows the new
    history never held it (`listed`, `relisted`); a key is unconfirmed from `sent` until
    `answered`, or until etcd shows its next value (`echoed`), whichever comes first; a key is
    unheard from `lost` until `heard`, its previous state is learnt again (`committed`,
    `agreed`, `echoed`), or a new leader key.
    """

    def __init__(self) -> None:
        # Per key: what this daemon's commits last wrote there, or the value it last found in
        # etcd agreeing with the rules.
        self._previous: dict[WorkKey, str] = {}
        # Per key with a previous state: the mod revision etcd showed it at (the revision of the
        # write that put it there, whoever wrote it); per key learnt deleted, the revision of
        # the deletion (the newest evidence of its state, which a restored trigger older than
        # it does not overrule: `triggered`). One entry per state key learnt while leading with
        # one leader key: bounded by the packages and models this node has held.
        self._at: dict[WorkKey, int] = {}
        # Per key: the previous states (or deletions) learnt before the one it has, oldest
        # first, each with its revision (the last EARLIER_KEPT): another state, or our own
        # write of the same state before we wrote it again. What stands if a listing of a new
        # history drops the later ones (`_forget`). Not the same state found agreeing again: a
        # listing that shows the value need not hold the inputs the later agreement was found
        # on.
        self._before: dict[WorkKey, list[tuple[str | None, int]]] = {}
        # Per key: the state a transaction not answered yet (or whose answers were all lost)
        # may have written. The guard kept every other write out between the index's view and
        # that transaction, so if it landed, the key's next value etcd shows is ours.
        self._unconfirmed: dict[WorkKey, str | None] = {}
        # Per key: the Error a transaction whose answers were all lost may have entered, and
        # the records it put. Its echo may be lost too and the key overwritten since: then
        # only those records can show it landed (and that putting Error back is a correction).
        self._unheard: dict[WorkKey, tuple[str | None, Records]] = {}
        self._led_with: Fence | None = None  # the leader key of the last `leading`
        # The revisions between which another daemon led, as this one found (`another_leads`):
        # from (not included) the revision it was found leading at, through the revision this
        # daemon found it leads again under the same key at (None: not yet).
        self._others_led: tuple[int, int | None] | None = None
        # Whether etcd's history was replaced while leading with this leader key: every key is
        # then carried (its previous state, or none, learnt on a history since replaced: kept,
        # docs/decisions/previous-states-across-replacement.md, or dropped as one the new history
        # never held), but those learnt again since (`_settled`).
        self._replaced = False
        self._settled: set[WorkKey] = set()
        # From `replaced` until `relisted` (the first whole listing of the new history): the
        # carried keys a listing showed holding the very write their state was learnt at,
        # learnt again at `relisted` unless the listing showed the histories differ at or
        # below that revision (`diverged`, the lowest such revision shown).
        self._relisting = False
        self._held: set[WorkKey] = set()
        self._diverged_at: int | None = None

    def previous(self, key: WorkKey) -> str | None:
        """The previous derived state of `key`; None when none is known (the planner then
        takes the value in etcd)."""
        return self._previous.get(key)

    def leading(self, fence: Fence | None, revision: int) -> None:
        """Leading begins (again) under `fence`, found at `revision`: previous states are kept
        only when it is the leader key last led with (same create revision: that key stayed
        the oldest, so no other daemon led meanwhile but one a restore brought back:
        `another_leads`); with a new key another leader may have written since."""
        if fence is None or fence != self._led_with:
            self._previous.clear()
            self._at.clear()
            self._before.clear()
            self._unheard.clear()
            self._replaced = self._relisting = False
            self._settled.clear()
            self._held.clear()
            self._diverged_at = None
            self._others_led = None
        elif self._others_led is not None:
            self._others_led = (self._others_led[0], revision)
        self._led_with = fence

    def another_leads(self, revision: int) -> None:
        """Another daemon was found leading at `revision`: a restore can bring back a key
        older than ours, which then leads while ours stays, and this daemon may lead again
        under the same key later, its previous states kept. What that leader wrote by the
        rules meanwhile is learnt (`ruled_meanwhile`)."""
        if self._others_led is None or self._others_led[1] is not None:
            self._others_led = (revision, None)

    def ruled_meanwhile(
        self, seen: Iterable[StateSeen], rules: Callable[[WorkKey], str | None]
    ) -> None:
        """etcd showed each key's value; `rules` gives what the rules give it as of then. A
        key with a previous state (or an unheard write) shown changed, above the revision
        another daemon was found leading at and no later than this one led again, to what the
        rules give: that leader's write by the rules, learnt as the key's previous state
        (else an entry into Error after that leader moved the package out of it was a
        correction, with no Reconcile: the simulation's swarm seed 17044339). A change to
        anything else is someone else's, corrected as ever: forgetting every previous state
        on finding another leader made putting back an Error someone deleted meanwhile a new
        entry, with a second Reconcile (swarm seeds 7072400, 19004625), the key brought back
        being a gone daemon's that nobody wrote under. `seen` is not read at all when nothing
        can be learnt (no other leader found, or nothing known: every daemon that never led)."""
        if self._others_led is None or not (self._at or self._unheard):
            return
        since, through = self._others_led
        for key, value, revision in seen:
            known = key in self._at or key in self._unheard
            within = since < revision and (through is None or revision <= through)
            if known and within and value != self._previous.get(key) and value == rules(key):
                self._learn(key, value, revision)

    def replaced(self) -> None:
        """etcd's history was replaced (a restore that kept the leader key): every previous
        state is kept, but as learnt on the replaced history (`carried`) until a listing of
        the new one judges it (`listed`); a key with none is carried too (the state this
        daemon last derived there may be one the new history took back)."""
        self._replaced = self._relisting = True
        self._settled.clear()
        self._held.clear()
        self._diverged_at = None

    def carried(self, key: WorkKey) -> bool:
        """Whether `key`'s previous state (or its having none) was learnt on a replaced history
        (and kept, or dropped as one the new history never held) and not learnt since."""
        return self._replaced and key not in self._settled

    def kept(self, key: WorkKey) -> None:
        """`key`'s previous state (or none), carried from a replaced history, stands on the
        new one."""
        self._settle(key)

    def triggered(self, key: WorkKey, revision: int) -> bool:
        """etcd's current history holds (or held, till the reconcile sender dropped it) the
        trigger of an entry into Error at `key`, put at `revision`. When `key` is carried, Error
        is its previous derived state on that history, learnt at that revision (a trigger goes
        in the transaction that writes Error): putting Error back is a correction, not a second
        trigger of the same Error (the simulation's swarm seed 6106668). But not over a state
        (or deletion) learnt at a later revision that the listings let stand: that is newer
        evidence, and the trigger's Error was left after it (else a trigger still pending from
        before the daemon deleted the state made the next entry into Error a correction, with
        no trigger of its own: the simulation's swarm seed 13071818). Returns whether Error
        became the previous state."""
        if not self.carried(key) or self._at.get(key, 0) > revision:
            return False
        self.committed(key, PackageState.ERROR, revision)
        return True

    def sent(self, writes: Iterable[tuple[WorkKey, str | None]]) -> None:
        """A transaction writing each (key, state) (None: deleting it) was sent: until it is
        answered, its answer may be lost and it may have landed all the same."""
        self._unconfirmed.update(writes)

    def answered(self, keys: Iterable[WorkKey]) -> None:
        """etcd answered the transaction that wrote `keys`, whatever it said: the writer knows
        from the answer what landed, and says so through `committed`."""
        for key in keys:
            self._unconfirmed.pop(key, None)

    def committed(self, key: WorkKey, state: str | None, revision: int) -> None:
        """Our write of `state` to `key` committed at `revision` (None: the key was deleted): it
        is the previous derived state now. A write of the same state again (a correction)
        keeps the earlier one as what stands if a listing drops this one (`_forget`): a
        restore may hold that one alone (else, with no other state learnt before, the key
        was left with none, and putting the state back over someone's change was a new
        entry into Error, with a second trigger: the simulation's swarm seed 20071107)."""
        at = self._at.get(key)
        if at is not None and at < revision and self._previous.get(key) == state:
            self._push_earlier(key, state, at)
        self._learn(key, state, revision)

    def lost(self, key: WorkKey, state: str | None, records: Records) -> None:
        """Every answer of a transaction entering `state` at `key` and putting `records` was
        lost: until `heard`, whether it landed is for those records to tell."""
        self._unheard[key] = (state, records)

    def heard(self, key: WorkKey) -> tuple[str | None, Records] | None:
        """The state and records of `key`'s unheard transaction (None: there is none), no
        longer unheard: the caller looks for the records, and says `committed` if found."""
        return self._unheard.pop(key, None)

    def agreed(self, found: Iterable[StateSeen]) -> None:
        """Each key of `found` was seen holding what the rules give (None: absent, as they
        say): that is its previous derived state now, whoever wrote it (someone else's value
        the rules moved to, or our own write whose answer was lost), learnt at the revision
        given: the later of the value's mod revision and the revision of the inputs the rules
        gave it from. A history that holds the value need not hold those inputs: a listing
        showing the value, modified below that revision, drops the state (else the agreement
        with a value someone put, found after an input the restore took back, stood as the
        previous state, and putting back the Error the restored trigger entered was a new entry
        with a second trigger: the simulation's swarm seed 13037801). Found again unchanged
        (on the same history), the state keeps the later of its two revisions: a plan of the
        key alone knows fewer of the inputs than the one that found it first."""
        for key, state, revision in found:
            unchanged = key in self._at and self._previous.get(key) == state
            kept = self._at[key] if unchanged and not self.carried(key) else 0
            self._learn(key, state, max(revision, kept))

    def remembered(self, keys: Iterable[WorkKey]) -> dict[WorkKey, Remembered]:
        """What each of `keys` has now, for `put_back`."""
        return {
            key: (self._previous.get(key), self._at.get(key, 0), self.carried(key)) for key in keys
        }

    def put_back(self, remembered: Mapping[WorkKey, Remembered]) -> None:
        """Each key has again what `remembered` gave (learning it was undone)."""
        for key, (state, revision, carried) in remembered.items():
            self._remember(key, state, revision)
            if carried:
                self._settled.discard(key)

    def echoed(self, seen: Iterable[StateSeen]) -> None:
        """etcd showed each key's next value (a watch event or a listing): where a transaction
        of ours was unanswered, that value is what it wrote when it landed, and it becomes the
        previous derived state (else, with the answers lost, a put-back after someone else's
        write would count as a new entry into Error: a second Reconcile). A deletion too, at
        the revision shown: else a restored trigger older than our deletion, dropped as the
        package was out of Error, made Error the previous state over it, and the next entry
        into Error was a correction, with no trigger (the simulation's swarm seed 15007655)."""
        for key, value, revision in seen:
            if key not in self._unconfirmed:
                continue
            if self._unconfirmed.pop(key) == value:
                self._learn(key, value, revision)

    def listed(self, seen: Iterable[StateSeen]) -> None:
        """A listing showed each key's value (`echoed`), and a carried previous state is judged
        by it (in one history, a key's mod revision only grows). The key at the very mod
        revision the state was learnt at, holding it, is that same write: the new history
        holds it, and it is learnt again (in the first listing since `replaced`, at its end,
        unless that listing showed the histories differ at or below that revision:
        `relisted`). The key modified below that revision (or at it with
        another value), or absent in a listing at or below it, shows the new history never
        held it: the state is dropped (the key still carried), and the planner takes what etcd
        holds (else putting Error in again after a restore took back the Error write is a
        correction, and its Reconcile is lost: the simulation's swarm seed 7064849). Modified
        or absent above it: the new history may have held it and someone else changed it
        since, or never have; the state stays carried
        (docs/decisions/previous-states-across-replacement.md)."""
        seen = list(seen)
        self.echoed(seen)
        for key, value, revision in seen:
            self._judge(key, value, revision)

    def relisted(self, revision: int) -> None:
        """The first whole listing since `replaced` was taken at `revision`. Where it showed
        the histories differ (`diverged`), every carried state (or deletion) learnt at or above
        that revision was learnt on the replaced history alone, and is dropped, the key still
        carried, though a page showed its very write (a value someone put there the same, at
        the same revision: the simulation's swarm seed 13071009); those the pages showed held
        are learnt again. The listing showed every state key etcd holds (`listed`), so a
        carried key with a previous state (or deletion) that none of its pages showed is
        absent there, and judged so (else a key deleted on the replaced history, which the
        index then no longer held, was never judged: the simulation's swarm seed 12005081). A
        key its pages showed needs no record of it: one still carried was shown modified (or
        absent) above the revision its state was learnt at, and `revision` is at or above
        that."""
        if self._diverged_at is not None:
            diverged = self._diverged_at
            for key in [k for k, at in self._at.items() if at >= diverged and self.carried(k)]:
                self._forget(key, diverged)
        for key in self._held:
            if key in self._at:
                self._settle(key)
        self._relisting = False
        self._held.clear()
        self._diverged_at = None
        for key in [k for k in self._at if self.carried(k)]:
            self._judge(key, None, revision)

    def held(self, key: WorkKey, state: str, revision: int) -> None:
        """The listing of the new history (between `replaced` and `relisted`) shows `key`
        holding `state` at the very revision our own write of it landed at on the replaced
        history: the new history holds that write, and nothing of `key` after it. A carried
        key takes it as its previous state, learnt at that revision (for `listed` to judge as
        its very write), over one learnt later there."""
        if self._relisting and self.carried(key):
            self._previous[key] = state
            self._at[key] = revision

    def diverged(self, revision: int) -> None:
        """The listing of the new history (between `replaced` and `relisted`) shows it differs
        from the replaced one at `revision` or below: `relisted` drops what was learnt there."""
        if self._relisting:
            self._diverged_at = min(revision, self._diverged_at or revision)

    def _judge(self, key: WorkKey, value: str | None, revision: int) -> None:
        """A listing showed `key` holding `value` (None: absent) at `revision`: `listed`. A
        deletion is judged as a state like any other: absent at its very revision, the new
        history holds it; modified at or below it (or absent below it), it never did."""
        if key not in self._at or not self.carried(key):
            return
        at = self._at[key]
        if revision == at and value == self._previous.get(key):
            if self._relisting:
                self._held.add(key)
            else:
                self._settle(key)
        elif revision <= at:
            self._forget(key, at)
            self._judge(key, value, revision)

    def _forget(self, key: WorkKey, below: int) -> None:
        """`key`'s previous state (or deletion) is one the new history never held. The newest
        one learnt before it below `below` takes its place (to be judged in turn): the new
        history may hold that one (else, a deletion of ours the restore kept forgotten with
        the state learnt after it, a restored trigger older than the deletion made putting
        Error back a correction, with its Reconcile lost: the simulation's swarm-added seed
        5063160)."""
        self._previous.pop(key, None)
        del self._at[key]
        earlier = self._before.pop(key, [])
        while earlier and earlier[-1][1] >= below:
            earlier.pop()
        if earlier:
            state, self._at[key] = earlier.pop()
            if state is not None:
                self._previous[key] = state
            if earlier:
                self._before[key] = earlier

    def _push_earlier(self, key: WorkKey, state: str | None, revision: int) -> None:
        """`state`, learnt at `revision`, is one `key` had before the one it learns now."""
        earlier = self._before.setdefault(key, [])
        earlier.append((state, revision))
        del earlier[:-EARLIER_KEPT]

    def _settle(self, key: WorkKey) -> None:
        if self._replaced:
            self._settled.add(key)

    def _learn(self, key: WorkKey, state: str | None, revision: int) -> None:
        """`key`'s previous state is learnt: an unheard transaction of it before is no longer
        what tells a correction (else its records, found later, would make Error the previous
        state over what was learnt since: the simulation's swarm seed 11052761)."""
        self._unheard.pop(key, None)
        self._remember(key, state, revision)

    def _remember(self, key: WorkKey, state: str | None, revision: int) -> None:
        at = self._at.get(key)
        if at is not None and at < revision and state != self._previous.get(key):
            self._push_earlier(key, self._previous.get(key), at)
        self._settle(key)
        if state is None:
            self._previous.pop(key, None)
        else:
            self._previous[key] = state
        if revision:
            self._at[key] = revision
        else:  # not learnt (`put_back` of a key that had nothing)
            self._at.pop(key, None)
