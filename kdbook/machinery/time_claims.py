"""Each notebook's first cell says how long it runs: taken from a measured book run.

The sentence ``Time on a 2-core CPU: ...`` in every notebook's first cell is written by
:func:`update_time_claims` from the seconds a ``kdbook book`` run recorded in its
``results.json``, never typed by hand::

    python -m kdbook.machinery.time_claims runs/ci            # rewrite notebooks/ from runs/ci
    python -m kdbook.machinery.time_claims runs/ci --check    # only say what would change
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from kdbook.io import atomic_write, read_json

TIME_LINE = re.compile(r"^Time on a 2-core CPU: .*$", re.MULTILINE)


def time_phrase(seconds: float) -> str:
    """Seconds as a reader says them: ``about 10 seconds``, ``about 1 minute``,
    ``about 2.5 minutes`` (to 5 s below 45 s, else to half a minute).

    >>> time_phrase(8.2), time_phrase(47), time_phrase(114), time_phrase(150)
    ('about 10 seconds', 'about 1 minute', 'about 2 minutes', 'about 2.5 minutes')
    """
    if not seconds >= 0:
        raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")
    if seconds < 45:
        return f"about {max(5, 5 * round(seconds / 5))} seconds"
    minutes = round(seconds / 30) / 2
    return "about 1 minute" if minutes == 1 else f"about {minutes:g} minutes"


def time_sentence(seconds: float, preset: str) -> str:
    """The first cell's sentence for a notebook that ran ``seconds`` in a book run."""
    return (
        f"Time on a 2-core CPU: {time_phrase(seconds)}, measured in a `kdbook book` run of the "
        f"{preset} preset (more when it runs alone and first trains the teachers it needs)."
    )


def update_time_claims(
    run_dir: str | Path, notebook_dir: str | Path, *, write: bool = True
) -> dict[str, tuple[str, str]]:
    """Rewrite the time sentence of every notebook in ``notebook_dir`` that ``run_dir``'s
    results.json timed. Returns ``{notebook: (old sentence, new sentence)}`` for those that
    change (nothing is written with ``write=False``).

    Raises:
        ValueError: the run did not finish, or a notebook's first cell has no time sentence.
    """
    results = read_json(Path(run_dir) / "results.json")
    if results.get("status") != "ok":
        raise ValueError(
            f"{run_dir}: the book run did not finish (status {results.get('status')!r})"
        )
    preset = results.get("preset") or "classroom"
    changes = {}
    for name, info in results["notebooks"].items():
        path = Path(notebook_dir) / f"{name}.ipynb"
        if not path.is_file() or info.get("seconds") is None:
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = "".join(nb["cells"][0]["source"])
        found = TIME_LINE.search(first)
        if found is None:
            raise ValueError(f"{path}: its first cell has no 'Time on a 2-core CPU: ...' sentence")
        new = time_sentence(info["seconds"], preset)
        if found.group(0) == new:
            continue
        changes[name] = (found.group(0), new)
        if write:
            text = first[: found.start()] + new + first[found.end() :]
            nb["cells"][0]["source"] = text.splitlines(keepends=True)
            body = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
            atomic_write(path, lambda f, body=body: f.write(body.encode("utf-8")))
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished kdbook book run folder")
    parser.add_argument("--notebooks", default="notebooks", help="the notebooks to rewrite")
    parser.add_argument("--check", action="store_true", help="say what would change, write nothing")
    args = parser.parse_args(argv)
    changes = update_time_claims(args.run_dir, args.notebooks, write=not args.check)
    for name, (old, new) in changes.items():
        print(f"{name}:\n  was: {old}\n  now: {new}")
    print(f"{len(changes)} notebook(s) {'would change' if args.check else 'rewritten'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
