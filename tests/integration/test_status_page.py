"""/status as an operator sees it: in a real headless browser (Debian's chromium), and bounded
for large fleets. (Its 503 while the event loop is wedged: test_observability.py.)"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from statemanager.app.statuspage import MAX_ROWS, PACKAGES_PER_PAGE
from statemanager.devtools.localetcd import free_port

from conftest import Daemon, DaemonMaker, Etcd, eventually, http_get, states_are

EVIL_MODEL = '<i>evil&"x'  # names come from etcd: anyone who can write a key picks them
EVIL_PACKAGE = "<b>pkg&'y"


def chromium(binary: str, profile: Path, *args: str) -> str:
    """Run headless chromium (as root it needs --no-sandbox); its stdout."""
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return result.stdout


async def test_status_page_in_a_real_browser(
    etcd: Etcd,
    daemon_factory: DaemonMaker,
    tmp_path: Path,
    debian_tool: Callable[[str, str], str],
) -> None:
    """Chromium shows the tree with states and rules, the leader, the etcd revision and the
    pending trigger; names from etcd are text, never markup; a phone-sized screenshot is saved."""
    binary = debian_tool("chromium", "chromium")
    d = daemon_factory()
    # Nobody answers there: the trigger stays pending, retried.
    d.env["STATEMANAGER_ACTIONCONTROLLER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    d.env["STATEMANAGER_HA_NODE_NAME"] = "node-a"
    d.start()
    await d.wait_synced()
    await etcd.package("payment", ["payment.web", "payment.db"])
    await etcd.container("web1", "running", "payment.web")
    await etcd.container("db1", "dead", "payment.db")
    await etcd.package("broken", [EVIL_MODEL])
    await etcd.scenario("fix-broken", "broken")
    await etcd.container("evil1", "dead", EVIL_MODEL)
    revision = await etcd.package(EVIL_PACKAGE, [])
    await states_are(etcd, {"pkg:payment": "Degraded", "pkg:broken": "Error"})

    def shown_revision(page: str) -> int:
        found = re.search(r"<dt>etcd revision</dt><dd>(\d+)</dd>", page)
        return int(found.group(1)) if found else 0

    async def caught_up() -> bool:  # the last put's event may reach the daemon after the states
        page = http_get(d.metrics_port, "/status")[1]
        return "fix-broken" in page and shown_revision(page) >= revision

    await eventually(caught_up, 15, "the pending trigger and the last revision on /status")
    url = f"http://127.0.0.1:{d.metrics_port}/status"
    dom = await asyncio.to_thread(chromium, binary, tmp_path / "profile", "--dump-dom", url)
    assert "<title>statemanager status</title>" in dom
    assert re.search(r"<dt>leader</dt><dd>node-a</dd>", dom), dom
    assert "node-a (leader)" in dom
    assert shown_revision(dom) >= revision, dom
    text = re.sub(r"<[^>]+>", "", dom)  # what the reader sees
    assert "package payment Degraded (P3, 1 of 2 models Failed)" in text
    assert "model payment.db Failed (M2, 1 of 1 containers dead)" in text
    assert "container db1 dead (dead)" in text
    assert "package broken Error (P2, all 1 models Failed)" in text
    assert "Pending reconcile triggers: 1" in text
    assert "package broken → fix-broken" in text
    assert 'model <b>&lt;i&gt;evil&amp;"x</b>' in dom  # text, escaped
    assert "&lt;b&gt;pkg&amp;'y</a>" in dom
    assert "<i>" not in dom and "<b>pkg" not in dom and "<script" not in dom
    assert 'href="/status?package=%3Cb%3Epkg%26%27y"' in dom  # the filter link, encoded

    shot = tmp_path / "status.png"
    await asyncio.to_thread(
        chromium, binary, tmp_path / "profile", "--hide-scrollbars", "--window-size=412,915",
        f"--screenshot={shot}", url,
    )  # fmt: skip
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one


async def test_status_page_is_bounded_paged_and_filtered(etcd: Etcd, daemon: Daemon) -> None:
    """PACKAGES_PER_PAGE packages and MAX_ROWS rows a page, with a note when cut short; `?page=`
    moves through the packages (models in no package close the last page) and `?package=`
    shows one."""
    names = [f"p{i:02}" for i in range(PACKAGES_PER_PAGE + 1)]
    for name in names:
        await etcd.package(name, [])
    await etcd.package("big", ["big.m"])
    await etcd.container("lonely", "running", "loose.m")  # a model in no package
    await asyncio.gather(
        *(etcd.container(f"c{i:04}", "running", "big.m") for i in range(MAX_ROWS + 5))
    )
    await states_are(etcd, {"pkg:big": "Running", f"pkg:{names[-1]}": "Initializing"})

    async def all_in_index() -> bool:
        running = MAX_ROWS + 5 + 1  # and "lonely"
        return f'statemanager_containers{{status="running"}} {running}.0' in daemon.scrape()

    await eventually(all_in_index, 30, "every container in the daemon's index")
    code, first = http_get(daemon.metrics_port, "/status")
    assert code == 200
    assert "Packages, page 1 of 2" in first
    assert first.count('<li class="d') == MAX_ROWS  # "big" comes first and fills the page
    assert f"Only the first {MAX_ROWS} rows are shown" in first
    assert 'href="/status?page=2"' in first
    assert len(first) < 400_000

    code, second = http_get(daemon.metrics_port, "/status?page=2")
    assert code == 200 and "Packages, page 2 of 2" in second
    assert second.count('<li class="d0">') == 2  # p49 and p50 (big, p00 … p48 on page 1)
    assert 'href="/status?page=1"' in second and "Only the first" not in second
    assert "models in no package:" in second and "loose.m</b>" in second  # on the last page

    code, one = http_get(daemon.metrics_port, "/status?package=p07")
    assert code == 200 and one.count('<li class="d0">') == 1 and "p07" in one
    code, none = http_get(daemon.metrics_port, "/status?package=nope")
    assert code == 404 and "No package named nope." in none
    assert http_get(daemon.metrics_port, "/status?page=0")[0] == 400
