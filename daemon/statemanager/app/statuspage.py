"""`/status`: a read-only HTML page of what this daemon knows — the package → model → container
tree with each state and the rule behind it (report.py's rows, as `statemanager status` prints
them), the leader, pending reconcile triggers and the etcd revision; each package's last
transitions with their times, and on a package's own page (`?package=`) its whole retained
history (read from etcd, after the tree: docs/contract.md, History).

The HTTP server runs in its own threads while the index belongs to the event loop, which mutates
its dicts and sets as events arrive: reading them from another thread could fail mid-iteration
("changed size during iteration") or show a container halfway between two models. So the page's
data is collected *on the loop* (`run_coroutine_threadsafe`), in one step with no `await`,
which makes it a consistent snapshot; the HTML is then built and escaped back in the HTTP
thread. The collection is bounded (PACKAGES_PER_PAGE packages and MAX_ROWS rows a page, a
`?package=` filter for one package), so a 100,000-container fleet neither produces a huge page
nor holds the loop for long; a loop too busy to answer within LOOP_TIMEOUT gets a 503.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlencode

from statemanager.app.web import HTML, Query, Response, page
from statemanager.core import report
from statemanager.core.errors import BadInput, EtcdError, EtcdUnavailable
from statemanager.core.history import Transition, decode, history_range
from statemanager.core.index import Index
from statemanager.core.keys import KeyLayout, Resource, WorkKey
from statemanager.core.ports import Fence, Newest
from statemanager.core.report import Row
from statemanager.core.timestamps import timestamp
from statemanager.core.triggers import Trigger

PACKAGES_PER_PAGE = 50
MAX_ROWS = 1000  # packages, models and containers on one page
MAX_TRIGGERS = 100  # listed; the count is always complete
LOOP_TIMEOUT = 2.0
LAST_TRANSITIONS = 3  # per package on the pages of all packages


class Leadership(Protocol):
    """Leadership names the current leader and this daemon's fence while it leads."""

    def leader_name(self) -> str | None: ...
    def fence(self) -> Fence | None: ...


class Progress(Protocol):
    """Progress tells how far the daemon has got: its revision and readiness (health.py)."""

    @property
    def revision(self) -> int: ...
    def readiness(self) -> tuple[bool, str]: ...


class PendingTriggers(Protocol):
    """PendingTriggers lists the leader's undelivered triggers with their attempts so far."""

    def pending(self) -> list[tuple[Trigger, int]]: ...


@dataclass(frozen=True, slots=True)
class _View:
    """Everything one page shows, copied out of the loop's objects."""

    node: str
    leading: bool
    leader: str | None
    revision: int
    readiness: tuple[bool, str]
    sizes: tuple[int, int, int]
    unassigned: int
    triggers: list[tuple[Trigger, list[str], int]]  # with its scenarios and attempts so far
    trigger_count: int
    rows: list[Row]
    loose_from: int | None  # index in rows where "models in no package" begins, if shown
    package: str | None  # the ?package= filter
    found: bool  # False when the filter names no package
    page: int
    pages: int
    truncated: bool  # MAX_ROWS reached before the page's packages were all shown
    # Per package shown, its newest history records, newest first (None: not read)
    history: dict[str, list[Transition]] | None = None


class StatusPage:
    """StatusPage serves `/status` from the HTTP threads with a snapshot taken on the loop."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        index: Index,
        leadership: Leadership,
        triggers: PendingTriggers,
        progress: Progress,
        node: str,
        history: Newest | None = None,
        layout: KeyLayout | None = None,
    ) -> None:
        """`history` and `layout`: where to read packages' transition histories from."""
        self._loop = loop
        self._history = history
        self._layout = layout
        self._index = index
        self._leadership = leadership
        self._triggers = triggers
        self._progress = progress
        self._node = node

    def route(self, query: Query) -> Response:
        """Route answers GET /status[?package=NAME][&page=N] from an HTTP thread."""
        package = query.get("package", [""])[-1] or None
        number = query.get("page", ["1"])[-1]
        if not number.isdigit() or int(number) < 1:
            return Response(400, b"page must be a whole number from 1\n")
        future = asyncio.run_coroutine_threadsafe(self._collect(package, int(number)), self._loop)
        try:
            view = future.result(LOOP_TIMEOUT)
        except TimeoutError:
            future.cancel()
            return Response(503, b"the event loop did not answer in time; see /healthz\n")
        if self._history is not None and view.found:
            limit = 0 if view.package else LAST_TRANSITIONS
            names = [row.name for row in view.rows if row.kind == "package"]
            read = asyncio.run_coroutine_threadsafe(self._records(names, limit), self._loop)
            try:
                view = replace(view, history=read.result(LOOP_TIMEOUT))
            except (TimeoutError, EtcdUnavailable, EtcdError):
                read.cancel()  # the page is shown without history
        return Response(200 if view.found else 404, _render(view), HTML)

    async def _records(self, names: list[str], limit: int) -> dict[str, list[Transition]]:
        """Each package's `limit` newest history records (0: all), newest first; records
        someone else wrote are left out (the daemon reports them)."""
        assert self._history is not None
        assert self._layout is not None
        layout = self._layout
        keys = [WorkKey(Resource.PACKAGE, name) for name in names]
        found = await self._history.newest([history_range(layout, k) for k in keys], limit)
        records: dict[str, list[Transition]] = {}
        for key, kvs in zip(keys, found, strict=True):
            for kv in kvs:
                try:
                    record = decode(layout, kv.key, kv.value, kv.mod_revision)
                except BadInput:
                    continue
                if isinstance(record, Transition):
                    records.setdefault(key.name, []).append(record)
        return records

    async def _collect(self, package: str | None, number: int) -> _View:
        """Runs on the event loop; must not await (that would let events in mid-snapshot)."""
        index = self._index
        names = report.packages(index)
        loose: list[str] = []
        found = True
        if package is not None:
            found = package in names
            shown = [package] if found else []
            pages = 1
        else:
            pages = max(1, -(-len(names) // PACKAGES_PER_PAGE))
            number = min(number, pages)
            shown = names[(number - 1) * PACKAGES_PER_PAGE : number * PACKAGES_PER_PAGE]
            if number == pages:
                loose = report.loose_models(index)
        tree = itertools.chain.from_iterable(report.package_rows(index, p) for p in shown)
        rows = list(itertools.islice(tree, MAX_ROWS + 1))
        loose_from = None
        if loose and len(rows) < MAX_ROWS:
            loose_from = len(rows)
            more = itertools.chain.from_iterable(report.model_rows(index, m) for m in loose)
            rows += itertools.islice(more, MAX_ROWS + 1 - len(rows))
        truncated = len(rows) > MAX_ROWS or (bool(loose) and loose_from is None)
        leading = self._leadership.fence() is not None
        pending = self._triggers.pending() if leading else []  # only a leader's are current
        return _View(
            node=self._node,
            leading=leading,
            leader=self._leadership.leader_name(),
            revision=self._progress.revision,
            readiness=self._progress.readiness(),
            sizes=index.sizes(),
            unassigned=index.unassigned_count(),
            triggers=[(t, _targets(index, t), n) for t, n in pending[:MAX_TRIGGERS]],
            trigger_count=len(pending),
            rows=rows[:MAX_ROWS],
            loose_from=loose_from,
            package=package,
            found=found,
            page=number,
            pages=pages,
            truncated=truncated,
        )


def _e(value: object) -> str:
    """Escape for text and quoted attributes alike: names come from etcd, anyone may write them."""
    return html.escape(str(value), quote=True)


def _link(text: str, **params: object) -> str:
    return f'<a href="/status?{_e(urlencode(params))}">{_e(text)}</a>'


def _row(row: Row) -> str:
    differs = (
        f' <span class="differs">[etcd says {_e(row.etcd_says)}]</span>' if row.etcd_says else ""
    )
    if row.kind == "package":  # links to the package alone
        name = f"<b>{_link(row.name, package=row.name)}</b>"
    elif row.kind == "model":
        name = f"<b>{_e(row.name)}</b>"
    else:
        name = f"<code>{_e(row.name)}</code>"
    return (
        f'<li class="d{row.depth}">{_e(row.kind)} {name} '
        f'<span class="s {_e(row.state)}">{_e(row.state)}</span> '
        f'<span class="why">({_e(row.why)})</span>{differs}</li>'
    )


def _tree(rows: Sequence[Row], loose_from: int | None) -> str:
    if not rows:
        return "<p>No packages or models.</p>"
    items = [_row(r) for r in rows]
    if loose_from is not None:
        items.insert(loose_from, '<li class="d0 note">models in no package:</li>')
    return f'<ul class="tree">{"".join(items)}</ul>'


def _render(view: _View) -> bytes:
    """The page of `view`: the daemon's facts, the pending triggers, the package tree, then
    the packages' transitions."""
    parts = [
        "<h1>statemanager status</h1>",
        _facts(view),
        *_pending(view),
        *_packages(view),
        _history(view),
    ]
    return page("statemanager status", "\n".join(parts))


def _facts(view: _View) -> str:
    containers, models, packages = view.sizes
    ready, why = view.readiness
    role = "leader" if view.leading else "follower"
    facts = [
        ("leader", _e(view.leader or "none yet")),
        ("this daemon", f"{_e(view.node)} ({role})"),
        ("etcd revision", _e(view.revision)),
        ("ready", _e(f"{'yes' if ready else 'no'}: {why}")),
        ("fleet", _e(f"{packages} packages, {models} models, {containers} containers")),
        ("unassigned containers", _e(view.unassigned)),
    ]
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"


def _pending(view: _View) -> list[str]:
    parts = [f"<h2>Pending reconcile triggers: {view.trigger_count}</h2>"]
    if view.trigger_count:
        parts.append(
            "<ul>"
            + "".join(
                f"<li>package <b>{_e(t.package)}</b> → "
                f"{_e(', '.join(scenarios) or 'no scenario')} "
                f'<span class="why">(entered Error at revision {_e(t.revision)}, '
                f"{_e(attempts)} attempts)</span></li>"
                for t, scenarios, attempts in view.triggers
            )
            + "</ul>"
        )
        if view.trigger_count > len(view.triggers):
            parts.append(f'<p class="note">First {len(view.triggers)} shown.</p>')
    elif not view.leading:
        parts.append('<p class="note">Only the leader holds and delivers triggers.</p>')
    return parts


def _packages(view: _View) -> list[str]:
    parts = [
        '<form method="get" action="/status"><label>Package <input name="package" '
        f'value="{_e(view.package or "")}"></label> <button>Show</button> '
        f"{_link('all packages') if view.package else ''}</form>"
    ]
    if view.package is not None:
        parts.append(f"<h2>Package {_e(view.package)}</h2>")
        if not view.found:
            parts.append(f"<p>No package named {_e(view.package)}.</p>")
    else:
        parts.append(f"<h2>Packages, page {view.page} of {view.pages}</h2>")
    if view.found:
        parts.append(_tree(view.rows, view.loose_from))
    if view.truncated:
        parts.append(
            f'<p class="note">Only the first {MAX_ROWS} rows are shown; pick one package '
            "with the form above to see it alone.</p>"
        )
    if view.package is None and view.pages > 1:
        nav = []
        if view.page > 1:
            nav.append(_link("‹ previous", page=view.page - 1))
        if view.page < view.pages:
            nav.append(_link("next ›", page=view.page + 1))
        parts.append(f"<p>{' · '.join(nav)}</p>")
    return parts


def _history(view: _View) -> str:
    """Each package's last transitions, or on a package's page its whole retained history."""
    if view.history is None:
        return ""
    now = time.time_ns()

    def change(t: Transition) -> str:
        when = f"{timestamp(t.timestamp_ns)} ({report.held_for((now - t.timestamp_ns) / 1e9)} ago)"
        moved = f"{t.from_state or '(none)'} → {t.to_state or '(deleted)'}"
        why = ": ".join(x for x in (t.rule, t.reason) if x)
        fixed = " (correction)" if t.correction else ""
        return (
            f'<span class="why">{_e(when)}</span> {_e(moved)}{_e(fixed)} '
            f'<span class="why">{_e(why)}</span>'
        )

    if view.package is not None:
        records = view.history.get(view.package, [])
        items = "".join(f"<li>{change(t)} · revision {_e(t.revision)}</li>" for t in records)
        return f"<h2>History: {len(records)} changes kept, newest first</h2><ul>{items}</ul>"
    items = "".join(
        f"<li><b>{_link(name, package=name)}</b>: " + " · ".join(map(change, records)) + "</li>"
        for name, records in view.history.items()
    )
    return f"<h2>Last transitions</h2><ul>{items or '<li>none recorded</li>'}</ul>"


def _targets(index: Index, trigger: Trigger) -> list[str]:
    """The scenarios `trigger` goes to: the one a format-1 record names, or those targeting
    its package now."""
    return (
        [trigger.scenario] if trigger.scenario is not None else index.scenarios_of(trigger.package)
    )
