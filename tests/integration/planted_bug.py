"""`statemanager` with bugs planted, for tests/integration/test_bad_input.py: the index raises
on a container with a name "poison" (a bug while ingesting that key) and on the
verdict of a model whose name starts with "poison" (a bug while planning it). Everything else
is the real daemon."""

from __future__ import annotations

from typing import Any

from statemanager.app.cli import main
from statemanager.core.index import Index
from statemanager.core.keys import WorkKey

_put_container = Index.put_container
_verdict = Index.verdict


def _buggy_put_container(self: Index, cid: str, info: Any) -> set[WorkKey]:
    if "poison" in info.names:
        raise RuntimeError("planted bug while ingesting")
    return _put_container(self, cid, info)


def _buggy_verdict(self: Index, key: WorkKey) -> Any:
    if key.name.startswith("poison"):
        raise RuntimeError("planted bug while planning")
    return _verdict(self, key)


Index.put_container = _buggy_put_container  # type: ignore[method-assign]
Index.verdict = _buggy_verdict  # type: ignore[method-assign]
raise SystemExit(main())
