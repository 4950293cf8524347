"""The references page (``notebooks/references.md``) and how the notebooks cite.

- The page lists the five source tutorials (short title, title in the original and in
  English, site, date) and the papers, each with authors, venue, year and arXiv id.
- Every notebook's first cell links it; the README links it.
- A notebook says "source N" only after naming source N by its short title (in that cell
  or an earlier one); it never mentions the repository's planning files or words
  ("SOURCES.md", "issue", "ticket").
- Every paper a notebook cites (an arXiv id, "Name et al.", "Name and Name, VENUE YEAR",
  a method known by its paper) is on the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from kdbook.machinery.installed import REFERENCES, book_dir
from kdbook.machinery.selection import list_notebooks

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = list_notebooks()
SHORT_TITLES = {
    1: "ResNet18 distillation on one GPU",
    2: "Model distillation in PyTorch, theory to practice",
    3: "Distillation workflow",
    4: "KD code example",
    5: "Cross-architecture distillation: ViT -> ResNet",
}
# a method's name in a notebook -> the arXiv id of the paper it comes from
METHODS = {
    r"\bHinton\b": "1503.02531",
    r"\bECE\b|expected calibration error": "1706.04599",
    r"FitNet": "1412.6550",
    r"attention transfer": "1612.03928",
    r"squeeze-excitation|squeeze-and-excitation": "1709.01507",
    r"mutual learning": "1706.00384",
    r"born-again": "1805.04770",
    r"\bDKD\b|decoupled KD": "2203.08679",
    r"logit standardi[sz]ation": "2403.01427",
    r"patient and consistent": "2106.05237",
    r"\bmixup\b": "1710.09412",
    r"capacity gap": "1910.01348",
    r"teacher assistant": "1902.03393",
    r"fidelity": "2106.05945",
    r"sequence-level KD": "1606.07947",
    r"MiniLLM": "2306.08543",
    r"\bGKD\b|on-policy distillation": "2306.13649",
}
VENUES = "CVPR|ICCV|ECCV|ICLR|ICML|NeurIPS|NIPS|AAAI|EMNLP"
SOURCE_MENTION = re.compile(r"\b[Ss]ources? (\d)((?:(?:, | and | or |-|/)\d)*)")


def page() -> str:
    return (book_dir() / REFERENCES).read_text(encoding="utf-8")


def cells(name: str) -> list[nbformat.NotebookNode]:
    return nbformat.read(book_dir() / f"{name}.ipynb", as_version=4).cells


def book_text() -> str:
    return "\n".join(c.source for name in NOTEBOOKS for c in cells(name))


def test_the_page_lists_the_five_source_tutorials() -> None:
    text = page()
    for n, title in SHORT_TITLES.items():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| source {n} |")), "")
        assert f"*{title}*" in row, f"source {n}'s row names it {title!r}"
        cited = row.split("|")[3]
        assert re.search(r"[\u4e00-\u9fff]", cited), f"source {n}: the title in the original"
        assert re.search(r'\("[A-Z][^"]+"\)', cited), f"source {n}: the title in English"
        assert re.search(r"\b20\d\d-\d\d-\d\d\b|\(undated\)", cited), f"source {n}: the date"
        assert re.search(r"blog|site|article", cited), f"source {n}: where it was published"


def test_every_paper_has_authors_venue_year_and_arxiv_id() -> None:
    papers = [ln for ln in page().split("## Papers", 1)[1].split("\n- ")[1:]]
    assert len(papers) >= 10
    for paper in papers:
        entry = " ".join(paper.split())
        assert re.match(r"[A-Z][\w.-]+ [A-Z]", entry), f"authors first: {entry[:60]}"
        assert re.search(rf"\b({VENUES})[^;]* (19|20)\d\d\b", entry), f"venue, year: {entry}"
        assert re.search(r"arXiv:\d{4}\.\d{4,5}\b", entry), f"arXiv id: {entry}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_first_cell_links_the_references_page(name: str) -> None:
    assert f"]({REFERENCES})" in cells(name)[0].source


def test_the_readme_links_the_references_page() -> None:
    assert f"](notebooks/{REFERENCES})" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_notebook_speaks_of_planning_files_or_issues(name: str) -> None:
    for cell in cells(name):
        found = re.findall(r"SOURCES\.md|\bissues?\b|\btickets?\b", cell.source, re.I)
        assert not found, f"{name}, cell {cell.get('id')}: {found}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_source_is_named_before_it_is_called_source_n(name: str) -> None:
    seen = ""
    for cell in cells(name):
        seen += cell.source + "\n"
        for match in SOURCE_MENTION.finditer(cell.source):
            numbers = {int(d) for d in re.findall(r"\d", match.group(0))}
            if "-" in match.group(0):  # "sources 1-2"
                numbers = set(range(min(numbers), max(numbers) + 1))
            for n in numbers:
                assert SHORT_TITLES[n] in seen, (
                    f"{name}, cell {cell.get('id')}: says {match.group(0)!r} before naming "
                    f"source {n} ({SHORT_TITLES[n]!r})"
                )


def test_every_paper_the_notebooks_cite_is_on_the_page() -> None:
    text, refs = book_text(), page()
    for arxiv in re.findall(r"\b\d{4}\.\d{4,5}\b", text):
        if re.search(rf"arXiv:?\s*{re.escape(arxiv)}", text):
            assert f"arXiv:{arxiv}" in refs, arxiv
    for surname in set(re.findall(r"\b([A-Z][a-z]+)(?: et al\.| and [A-Z][a-z]+ \d{4})", text)):
        assert surname in refs, f"{surname} et al. is cited but not on the references page"
    for authors, venue, year in re.findall(rf"\(([A-Z][^()]*?),? ({VENUES}) (\d{{4}})", text):
        for surname in re.findall(r"\b[A-Z][a-z]+\b", authors):
            assert surname in refs, f"{surname} ({venue} {year}) is not on the references page"
        assert f"{venue} {year}" in refs, f"{authors}, {venue} {year}"
    for pattern, arxiv in METHODS.items():
        if re.search(pattern, text, re.I):
            assert f"arXiv:{arxiv}" in refs, f"{pattern!r} is cited: its paper arXiv:{arxiv}"


def test_the_checks_catch_what_they_are_for() -> None:
    assert SOURCE_MENTION.search("as in sources 1 and 2").group(0) == "sources 1 and 2"
    assert not re.search(r"\bissues?\b", "tissue", re.I)
