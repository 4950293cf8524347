"""The run folder as a static HTML book that opens offline.

This module owns ``run_dir/html/`` (:func:`render_html`): one page per executed notebook,
rendered with the template and vendored widget renderer in :data:`STATIC_DIR`, a navigation
bar between chapters, an index page with the chapters and ``summary.md``, and the book's
references page (``references.html``, from the ``references.md`` the run copied).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from kdbook.io import png_title, read_json, write_text
from kdbook.machinery.installed import REFERENCES
from kdbook.stats import format_seconds

HTML_DIR = "html"
STATIC_DIR: Path = Path(__file__).resolve().parent.parent / "static"  # kdbook/static


def _notebook_title(nb: Any, fallback: str) -> str:
    """The first markdown heading of a notebook, else ``fallback``."""
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                title = line.lstrip("#").strip()
                if title:
                    return title
        break
    return fallback


# ``save_figure(fig, run_dir, "name")`` or ``save_figure(fig, run_dir, f"name_{i}")`` in a cell
_SAVE_FIGURE = re.compile(r"""save_figure\([^)]*?,\s*(f?)(["'])(.+?)\2\s*\)""")


def _cell_figures(source: str, figures: Path) -> list[Path]:
    """The files a cell's ``save_figure`` calls wrote, in call order; an f-string name
    stands for every file its literal parts match, in name order (a loop's figures)."""
    files: list[Path] = []
    for is_f, _, name in _SAVE_FIGURE.findall(source):
        if is_f:
            files += sorted(figures.glob(re.sub(r"\{[^}]*\}", "*", name) + ".png"))
        else:
            files.append(figures / f"{name}.png")
    return files


def _add_alt_text(nb: Any, figures: Path, chapter: str) -> None:
    """Give each PNG output an ``alt`` (the template writes it on the ``<img>``): the title
    that ``kdbook.plots.save_figure`` stored in the figure file the cell saved, matched in
    order; a figure the cell did not save gets "a figure of <chapter>"."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        files = _cell_figures(cell.source, figures) if images else []
        for k, output in enumerate(images):
            title = png_title(files[k]) if k < len(files) else ""
            metadata = output.setdefault("metadata", {}).setdefault("image/png", {})
            metadata["alt"] = title or f"a figure of {chapter}"


def _summary_alt_text(html: str, run_dir: Path) -> str:
    """``summary.md``'s figures (``![name](figures/name.png)``) with their titles as alt."""

    def retitle(match: re.Match) -> str:
        tag = match.group(0)
        src = re.search(r'src="([^"]+)"', tag)
        title = png_title(run_dir / src.group(1)) if src else ""
        if not title:
            return tag
        alt = f' alt="{escape(title)}"'
        if re.search(r'\salt="[^"]*"', tag):
            return re.sub(r'\salt="[^"]*"', lambda _: alt, tag, count=1)
        return re.sub(r"\s*/?>$", lambda end: alt + end.group(0), tag)

    return re.sub(r"<img\b[^>]*>", retitle, html)


def _nav(items: Sequence[tuple[str, str]], index: int) -> str:
    """The bar above and below a chapter: contents, previous, this chapter, next."""

    def link(i: int, text: str) -> str:
        if not 0 <= i < len(items):
            return "<span></span>"
        return f'<a href="{items[i][0]}.html">{text}</a>'

    return (
        '<nav class="kdbook-nav"><a href="index.html">Contents</a>'
        + link(index - 1, f"&larr; {escape(items[index - 1][1])}" if index else "")
        + f'<span class="here">{escape(items[index][1])}</span>'
        + link(index + 1, f"{escape(items[index + 1][1])} &rarr;" if index + 1 < len(items) else "")
        + "</nav>"
    )


_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em;
  line-height: 1.5; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
img {{ max-width: 100%; }}
ol.chapters li {{ margin: 0.3em 0; }}
.status {{ color: #777; font-size: 90%; }}
a.anchor-link {{ display: none; }}
code {{ background: #f4f4f4; padding: 0 0.2em; }}
</style>
</head>
"""

_INDEX_BODY = """<body>
<h1>{title}</h1>
<p>The notebooks of this run, executed, with their outputs; sliders show the state they were
saved in (open the notebooks in JupyterLab, <code>make lab</code>, to move them).</p>
<h2>Chapters</h2>
<ol class="chapters">
{chapters}
</ol>
{references}
<hr>
{summary}
</body>
</html>
"""


_REFERENCES_BODY = """<body>
<p><a href="index.html">Contents</a></p>
{body}
</body>
</html>
"""
_INDEX_PAGE, _REFERENCES_PAGE = _PAGE_HEAD + _INDEX_BODY, _PAGE_HEAD + _REFERENCES_BODY
REFERENCES_HTML = "references.html"


def _write_references(run_dir: Path, out: Path) -> bool:
    """``references.html`` from the run folder's ``references.md`` (the book's page, copied
    there by the run); returns whether there was one."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    page = run_dir / REFERENCES
    if not page.is_file():
        (out / REFERENCES_HTML).unlink(missing_ok=True)
        return False
    body = markdown2html_mistune(page.read_text(encoding="utf-8"))
    html = _REFERENCES_PAGE.format(title="kdbook: references", body=body)
    write_text(out / REFERENCES_HTML, html)
    return True


def _copy_static(out: Path) -> None:
    """Put the widget renderer (``embed.js``, unpacked) and its licence in ``out/static``."""
    import gzip
    import shutil

    static = out / "static"
    static.mkdir(parents=True, exist_ok=True)
    embed = gzip.decompress((STATIC_DIR / "embed.js.gz").read_bytes())
    if not (static / "embed.js").is_file() or (static / "embed.js").read_bytes() != embed:
        from kdbook.io import atomic_write

        atomic_write(static / "embed.js", lambda f: f.write(embed))
    shutil.copyfile(STATIC_DIR / "embed.js.LICENSE.txt", static / "embed.js.LICENSE.txt")


def _write_chapters(
    notebooks: Mapping[str, Any], items: Sequence[tuple[str, str]], out: Path
) -> None:
    """One ``NN_name.html`` per notebook, in nbconvert's JupyterLab look, with the nav bar;
    a link to the references page (``references.md`` beside the notebooks) goes to its
    HTML page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file=str(STATIC_DIR / "book.html.j2"))
    for index, (name, _title) in enumerate(items):
        resources = {"kdbook": {"static": "static", "nav": _nav(items, index)}}
        body, _ = exporter.from_notebook_node(notebooks[name], resources=resources)
        body = body.replace(f'href="{REFERENCES}', f'href="{REFERENCES_HTML}')
        write_text(out / f"{name}.html", body)


def _chapter_list(run_dir: Path, items: Sequence[tuple[str, str]]) -> str:
    """The index page's ``<li>`` lines: each chapter's link, name, status and seconds."""
    status = {}
    if (run_dir / "results.json").is_file():
        with contextlib.suppress(ValueError):
            status = read_json(run_dir / "results.json").get("notebooks") or {}
    chapters = []
    for name, title in items:
        info = status.get(name) or {}
        note = info.get("status") or ""
        if info.get("seconds") is not None:
            note += f", {format_seconds(info['seconds'])} s"
        chapters.append(
            f'<li><a href="{name}.html">{escape(title)}</a> '
            f'<span class="status">{escape(name)}{" · " + escape(note) if note else ""}</span></li>'
        )
    return "\n".join(chapters) or "<li>No executed notebook in this run folder.</li>"


def _summary_html(run_dir: Path) -> str:
    """``summary.md`` as HTML, or a sentence saying there is none."""
    from nbconvert.filters.markdown_mistune import markdown2html_mistune

    summary_md = run_dir / "summary.md"
    if not summary_md.is_file():
        return "<p>No summary.md in this run folder.</p>"
    html = markdown2html_mistune(summary_md.read_text(encoding="utf-8"))
    return _summary_alt_text(html, run_dir)


def render_html(run_dir: str | Path) -> Path:
    """Render a run folder's executed notebooks as a static HTML book that opens offline.

    Writes ``run_dir/html/``: ``index.html`` (the chapters in order, then ``summary.md``
    as HTML with the figures), one ``NN_name.html`` per executed notebook (nbconvert's
    JupyterLab look; saved widget state drawn by the vendored ``@jupyter-widgets/html-manager``
    in ``html/static/embed.js``), and ``figures/``. No page loads anything from a network:
    no CDN script, no MathJax (formulas stay as typed). Called by
    :func:`kdbook.machinery.runner.run_book` at the end of a run; call it again on any run folder
    (``render_html("runs/ci")``).

    Returns:
        The path of ``index.html``.
    """
    import shutil

    import nbformat

    run_dir = Path(run_dir).resolve()
    out = run_dir / HTML_DIR
    names = sorted(p.stem for p in run_dir.glob("*.ipynb") if not p.name.startswith("."))
    notebooks = {
        name: nbformat.read(str(run_dir / f"{name}.ipynb"), as_version=4) for name in names
    }
    items = [(name, _notebook_title(nb, name)) for name, nb in notebooks.items()]
    for name, title in items:
        _add_alt_text(notebooks[name], run_dir / "figures", title)
    _copy_static(out)
    references = _write_references(run_dir, out)
    _write_chapters(notebooks, items, out)
    figures = run_dir / "figures"
    if figures.is_dir():
        shutil.copytree(figures, out / "figures", dirs_exist_ok=True)
    page = _INDEX_PAGE.format(
        title=escape(f"kdbook: {run_dir.name}"),
        chapters=_chapter_list(run_dir, items),
        references=(
            f'<p><a href="{REFERENCES_HTML}">References</a>: the source tutorials and the papers '
            "the chapters follow.</p>"
            if references
            else ""
        ),
        summary=_summary_html(run_dir),
    )
    index = write_text(out / "index.html", page)
    for path in out.rglob("*"):  # a site: readable by a web server, not only by its owner
        path.chmod(0o755 if path.is_dir() else 0o644)
    return index
