"""The run folder as a static HTML book that opens offline.

This module owns ``run_dir/html/`` (:func:`render_html`): one page per executed notebook,
rendered with the template and vendored widget renderer in :data:`STATIC_DIR`, a navigation
bar between chapters, and an index page with the chapters and ``summary.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from kdbook.io import read_json, write_text
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


_INDEX_PAGE = """<!DOCTYPE html>
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
<body>
<h1>{title}</h1>
<p>The notebooks of this run, executed, with their outputs; sliders show the state they were
saved in (open the notebooks in JupyterLab, <code>make lab</code>, to move them).</p>
<h2>Chapters</h2>
<ol class="chapters">
{chapters}
</ol>
<hr>
{summary}
</body>
</html>
"""


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
    """One ``NN_name.html`` per notebook, in nbconvert's JupyterLab look, with the nav bar."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", template_file=str(STATIC_DIR / "book.html.j2"))
    for index, (name, _title) in enumerate(items):
        resources = {"kdbook": {"static": "static", "nav": _nav(items, index)}}
        body, _ = exporter.from_notebook_node(notebooks[name], resources=resources)
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
    return markdown2html_mistune(summary_md.read_text(encoding="utf-8"))


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
    _copy_static(out)
    _write_chapters(notebooks, items, out)
    figures = run_dir / "figures"
    if figures.is_dir():
        shutil.copytree(figures, out / "figures", dirs_exist_ok=True)
    page = _INDEX_PAGE.format(
        title=escape(f"kdbook: {run_dir.name}"),
        chapters=_chapter_list(run_dir, items),
        summary=_summary_html(run_dir),
    )
    index = write_text(out / "index.html", page)
    for path in out.rglob("*"):  # a site: readable by a web server, not only by its owner
        path.chmod(0o755 if path.is_dir() else 0o644)
    return index
