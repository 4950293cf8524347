"""The run folder as a static HTML book: kdbook.machinery.html.render_html (run_book calls it)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from kdbook.machinery.html import STATIC_DIR, render_html
from kdbook.machinery.runner import run_book

SLIDER_CELL = """\
import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

slider = widgets.FloatSlider(value=temperature, min=0.5, max=8.0, step=0.5, description="T")

def draw(T):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(range(3), [1 / T, 1, T])
    ax.set_title(f"T = {T}")
    plt.show()

display(widgets.VBox([slider, widgets.interactive_output(draw, {"T": slider})]))
"""

FIGURE_CELL = """\
import matplotlib.pyplot as plt
from kdbook.plots import save_figure
from kdbook.report import save_metrics

fig, ax = plt.subplots(figsize=(2, 2))
ax.plot([0, 1], [0, 1])
ax.set_title("a rising line")
save_figure(fig, run_dir, "line")
plt.show()
plt.figure(figsize=(1, 1))
plt.plot([1, 0])  # shown, never saved: no title on file
plt.show()
save_metrics(run_dir, "01_first", {"models": [{"model": "teacher", "accuracy_mean": 91.5}]})
"""


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-notebook book run by run_book: a figure and metrics, then a slider."""
    from conftest import write_notebook

    folder = tmp_path_factory.mktemp("html")
    notebooks = folder / "notebooks"
    params = 'run_dir = "."  # run folder\ntemperature = 2.0  # T'
    nb = write_notebook(notebooks / "01_first.ipynb", params, "from pathlib import Path")
    _append(nb, FIGURE_CELL)
    _link_references(nb)
    write_notebook(notebooks / "02_slider.ipynb", params, SLIDER_CELL)
    (notebooks / "references.md").write_text("# References\n\n- A paper, 2015.\n")
    return run_book(out=folder / "run", notebook_dir=notebooks, timeout=120)


def _link_references(path: Path) -> None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nb.cells[0].source += "\n\nSee the [references page](references.md)."
    nbformat.write(nb, str(path))


def _append(path: Path, source: str) -> None:
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))


def test_run_book_writes_the_html_book(book: Path) -> None:
    html = book / "html"
    assert sorted(p.name for p in html.glob("*.html")) == [
        "01_first.html",
        "02_slider.html",
        "index.html",
        "references.html",
    ]
    index = (html / "index.html").read_text()
    # the chapters in book order, titled by their first heading, with their status
    first, second = index.index('href="01_first.html"'), index.index('href="02_slider.html"')
    assert first < second
    assert ">01_first</a>" in index and "ok, " in index
    # summary.md as HTML: its tables and its figures, copied beside the pages
    assert "<table>" in index and "<td>teacher</td>" in index and "91.5 %" in index
    assert '<img src="figures/line.png"' in index
    assert (html / "figures" / "line.png").read_bytes() == (
        book / "figures" / "line.png"
    ).read_bytes()
    assert (html / "static" / "embed.js").read_bytes() == gzip.decompress(
        (STATIC_DIR / "embed.js.gz").read_bytes()
    )
    assert (html / "index.html").stat().st_mode & 0o777 == 0o644, "a site others can read"


def test_the_references_page_travels_with_the_run_and_is_linked(book: Path) -> None:
    """run_book copies the book's references.md beside the executed notebooks (their first
    cells link it); the HTML book renders it, and links to it go to its HTML page."""
    assert (book / "references.md").read_text() == "# References\n\n- A paper, 2015.\n"
    page = (book / "html" / "references.html").read_text()
    assert re.search(r"<h1\b[^>]*>References<", page) and "A paper, 2015." in page
    assert '<a href="references.html">References</a>' in (book / "html" / "index.html").read_text()
    chapter = (book / "html" / "01_first.html").read_text()
    assert 'href="references.html"' in chapter and 'href="references.md"' not in chapter


def test_html_pages_fetch_nothing_from_a_network(book: Path) -> None:
    for page in (book / "html").glob("*.html"):
        text = page.read_text()
        assert '<script src="http' not in text, page.name
        for tag in re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", text):
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", tag), f"{page.name}: {tag}"
        assert "mathjax" not in text.lower() and "require.js" not in text, page.name


def test_chapters_carry_the_saved_widget_state_and_a_navigation_bar(book: Path) -> None:
    slider = (book / "html" / "02_slider.html").read_text()
    assert '<script type="application/vnd.jupyter.widget-state+json">' in slider
    assert "FloatSliderModel" in slider and "OutputModel" in slider
    assert "image/png" in slider, "the plot drawn by the slider's callback is in the state"
    assert 'src="static/embed.js"' in slider
    assert '<a href="01_first.html">← 01_first</a>' in slider
    assert '<a href="index.html">Contents</a>' in slider
    first = (book / "html" / "01_first.html").read_text()
    assert "widget-state" not in first and "embed.js" not in first, "no widgets, no renderer"
    assert '<a href="02_slider.html">02_slider →</a>' in first


def test_figures_have_their_title_as_alt_text(book: Path) -> None:
    """A figure's alt text is the title save_figure stored in its file, on the chapter's
    page and in the index's summary (a figure no cell saved is named by its chapter);
    nbconvert's placeholder appears nowhere."""
    chapter = (book / "html" / "01_first.html").read_text()
    alts = [re.search(r'alt="([^"]*)"', t) for t in re.findall(r"<img\b[^>]*>", chapter)]
    assert [a and a.group(1) for a in alts] == ["a rising line", "a figure of 01_first"]
    index = (book / "html" / "index.html").read_text()
    tag = next(t for t in re.findall(r"<img\b[^>]*>", index) if "figures/line.png" in t)
    assert 'alt="a rising line"' in tag
    for page in (book / "html").glob("*.html"):
        assert "No description has been provided" not in page.read_text(), page.name


def test_render_html_again_and_on_an_empty_folder(book: Path, tmp_path: Path) -> None:
    assert render_html(book) == book / "html" / "index.html"  # rerendering is fine
    index = render_html(tmp_path)
    text = index.read_text()
    assert "No executed notebook in this run folder." in text
    assert "No summary.md in this run folder." in text


def test_cli_html_renders_a_run_again_and_refuses_an_empty_folder(book: Path, tmp_path, capsys):
    from kdbook.cli import main

    (book / "html" / "index.html").unlink()
    assert main(["html", str(book)]) == 0
    assert (book / "html" / "index.html").is_file()
    assert "html: " in capsys.readouterr().out
    assert main(["html", str(tmp_path)]) == 2
    assert "holds no executed notebooks" in capsys.readouterr().err
