"""README and deploy files stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from statemanager import __version__
from statemanager.app.config import OPTIONS, load
from statemanager.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` runs exactly the README's second set-up command."""
    commands = re.findall(r"^python3 -m venv .*$", README, flags=re.MULTILINE)
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def config_table() -> str:
    """The README's configuration table, one row per declared setting (config.py)."""
    rows = ["| file key | environment | flag | default | meaning |", "|---|---|---|---|---|"]
    rows += [
        f"| `{o.name}` | `{o.env}` | `{o.flag}` | {o.shown_default} | {o.declared.help} |"
        for o in OPTIONS
    ]
    return "\n".join(rows) + "\n"


def test_readme_config_table_is_generated_from_the_declarations() -> None:
    """The README's configuration table is exactly the one the settings' declarations make
    (on a failure, the expected table is printed: paste it into the README)."""
    start = README.index("| file key | environment |")
    table = README[start : README.index("\n\n", start) + 1]
    assert table == config_table(), "\n" + config_table()


def test_readme_documents_every_metric() -> None:
    """Every metric family the daemon exports is in the README's metrics table."""
    names = {m.name for m in Metrics().registry.collect()}
    for name in names:
        exported = {"counter": f"{name}_total", "info": f"{name}_info"}.get(
            next(m.type for m in Metrics().registry.collect() if m.name == name), name
        )
        assert f"`{exported}`" in README, exported


def test_example_config_is_valid_and_complete() -> None:
    """deploy/statemanager.toml loads without error and mentions every setting."""
    path = ROOT / "deploy" / "statemanager.toml"
    settings = load(path, {}, {})
    assert settings.etcd.endpoints == ("http://127.0.0.1:2379",)
    text = path.read_text()
    for option in OPTIONS:
        assert f"[{option.section}]" in text, option.name
        assert re.search(rf"^(# )?{option.key} = ", text, re.MULTILINE), option.name


def _rule_rows(text: str) -> list[str]:
    return re.findall(r"^\| [MP]\d \|.*$", text, flags=re.MULTILINE)


def test_contract_and_readme_share_the_rules_tables() -> None:
    """docs/contract.md and the README list the same rule rows, word for word, M1–M5 and P1–P6."""
    contract = (ROOT / "docs" / "contract.md").read_text()
    rows = _rule_rows(contract)
    assert [row.split("|")[1].strip() for row in rows] == [
        *(f"M{i}" for i in range(1, 6)),
        *(f"P{i}" for i in range(1, 7)),
    ]
    assert rows == _rule_rows(README)


def test_docs_links_resolve() -> None:
    """Every relative link in docs/ and the README points at a file in the repository."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} → {target}"


def test_design_places_every_module() -> None:
    """docs/design.md names every module of the package, so the map of the code stays whole."""
    design = (ROOT / "docs" / "design.md").read_text()
    modules = sorted((ROOT / "daemon" / "statemanager").rglob("*.py"))
    missing = [
        str(m.relative_to(ROOT))
        for m in modules
        if m.name != "__init__.py" and "proto" not in m.parts and f"`{m.name}`" not in design
    ]
    assert missing == []


# Documents that a clone of the repository does not have, as comments used to cite them.
_OUTSIDE = re.compile(r"\.\./shared|\bSPEC\b|\bSTYLE\b|NOTES\.md|\b[Ii]ssues? \d+")
# A citation of a section: "docs/contract.md, Writes".
_SECTION = re.compile(r"\b(docs/[\w/.-]+\.md), ([A-Z][\w' ]*)")


def _repository_text() -> list[tuple[str, str]]:
    """(path, text) of every text file under daemon/, tests/, deploy/ and docs/, the README and
    pyproject.toml (this file aside: it spells out what it looks for)."""
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for top in ("daemon", "tests", "deploy", "docs"):
        files += [
            p for p in (ROOT / top).rglob("*") if p.is_file() and "__pycache__" not in p.parts
        ]
    texts = []
    for path in sorted(files):
        if path == Path(__file__).resolve():
            continue
        try:
            texts.append((str(path.relative_to(ROOT)), path.read_text()))
        except UnicodeDecodeError:
            continue  # binary
    return texts


def test_nothing_cites_documents_outside_the_repository() -> None:
    """Code, tests, deploy files and docs cite only files in the repository."""
    found = [
        f"{path}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for path, text in _repository_text()
        for m in _OUTSIDE.finditer(text)
    ]
    assert found == []


def test_cited_doc_sections_exist() -> None:
    """Every "docs/<file>.md, <Section>" citation names a file and one of its headings."""
    for path, text in _repository_text():
        for m in _SECTION.finditer(text):
            doc = ROOT / m.group(1)
            assert doc.is_file(), f"{path}: {m.group(0)}"
            headings = re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.MULTILINE)
            cited = m.group(2)
            assert any(cited.startswith(h) or h.startswith(cited) for h in headings), (
                f"{path}: {m.group(0)}"
            )


def test_decision_records_are_indexed() -> None:
    """docs/decisions/README.md links every decision record."""
    folder = ROOT / "docs" / "decisions"
    index = (folder / "README.md").read_text()
    records = [p.name for p in sorted(folder.glob("*.md")) if p.name != "README.md"]
    assert [r for r in records if f"]({r})" not in index] == []


def test_changelog_opens_with_unreleased_and_names_every_metric() -> None:
    """CHANGELOG.md starts with its Unreleased section, which names the package's version
    (the one it is to be released as) unless that version has its own section; every metric
    family the daemon exports is named in it."""
    changelog = (ROOT / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert sections[0] == "Unreleased"
    unreleased = changelog.split("## [", 2)[1]
    assert __version__ in sections or f"To be released as {__version__}" in unreleased
    for family in Metrics().registry.collect():
        if family.name.startswith("statemanager_"):
            assert family.name in changelog, family.name
