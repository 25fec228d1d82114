"""Repository conventions: the licence, the citation, the notices, the pre-commit hooks, and Markdown links that
lead somewhere. Reads files only (no kit import), so it runs in a fraction of a second."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAPERS = {"2501.05662", "2412.04903"}  # SEAT / Cas-SEAT, EACO
README_LIMIT = 12_000  # bytes: the README stays an overview, the guides live in docs/


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_licence_file_is_the_apache_2_licence_pyproject_names() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text  # the full text, not a stub
    assert pyproject()["project"]["license"] == {"text": "Apache-2.0"}


def test_the_citation_file_cites_the_kit_and_both_papers() -> None:
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    project = pyproject()["project"]
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == project["name"]
    assert citation["version"] == project["version"]
    assert citation["license"] == "Apache-2.0"
    assert citation["authors"] and citation["message"]
    references = citation["references"]
    assert len(references) == 2
    cited = set()
    for reference in references:
        assert reference["title"] and reference["year"]
        found = PAPERS & set(re.findall(r"\d{4}\.\d{5}", yaml.safe_dump(reference)))
        assert len(found) == 1, f"{reference['title']!r} names {sorted(found)} of the papers' arXiv ids"
        cited |= found
    assert cited == PAPERS


def test_the_notice_names_every_ported_scorer() -> None:
    notice = (REPO / "NOTICE").read_text()
    from kit.eval.benchmarks import REGISTRY  # every registered benchmark ports an official scorer

    modules = sorted(module.rpartition(".")[2] + ".py" for module in REGISTRY.values())
    assert len(modules) >= 9
    for module in modules:
        assert f"kit/eval/benchmarks/{module}" in notice, f"NOTICE does not name {module}"


def test_the_pre_commit_hooks_run_the_dev_tools_from_the_kit_environment() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    dev = " ".join(pyproject()["project"]["optional-dependencies"]["dev"])
    for name in ("ruff", "nbstripout"):
        assert hooks[name]["entry"].startswith(f".venv/bin/{name}")
        assert name in dev, f"{name} is not in pyproject's dev extra"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.* hooks( |$)", makefile, re.MULTILINE)
    assert "nbstripout --install" in makefile


# --------------------------------------------------------------------------------------------- Markdown links

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+).*?\1")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text of links kept, lowercase, punctuation dropped except hyphens
    (and underscores), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")  # repeated headings get -1, -2, ...
    return found


def links(path: Path) -> list[str]:
    """Link targets in the prose; a link's text may run over a line break."""
    prose = "\n".join(CODE_SPAN.sub("code", line) for line in prose_lines(path.read_text()))
    return LINK.findall(prose)


MARKDOWN = sorted([REPO / "README.md", REPO / "CONTRIBUTING.md", *(REPO / "docs").glob("*.md")])


def test_slugs_follow_githubs_rule() -> None:
    assert slug("The report: `kit report` (notebook 09)") == "the-report-kit-report-notebook-09"
    assert slug("What each notebook does and how long it takes") == "what-each-notebook-does-and-how-long-it-takes"
    assert slug("Chat templates and loss masks (SFT: notebooks 04, 06, 07)") == (
        "chat-templates-and-loss-masks-sft-notebooks-04-06-07")
    assert slug("A newcomer's guide") == "a-newcomers-guide"


def test_the_readme_stays_short() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        destination = (page.parent / file_part).resolve() if file_part else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with the anchor #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
