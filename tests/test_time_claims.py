"""The first cells' time sentences come from a measured book run, never typed by hand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdbook.io import write_json
from kdbook.machinery.time_claims import TIME_LINE, time_phrase, update_time_claims

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_notebook_says_its_time_in_the_sentence_the_tool_rewrites() -> None:
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert len(TIME_LINE.findall(first)) == 1, path.name


@pytest.mark.parametrize(
    ("seconds", "phrase"),
    [(0, "about 5 seconds"), (12, "about 10 seconds"), (44, "about 45 seconds"),
     (60, "about 1 minute"), (100, "about 1.5 minutes"), (218, "about 3.5 minutes")],
)  # fmt: skip
def test_time_phrase(seconds, phrase) -> None:
    assert time_phrase(seconds) == phrase


def test_the_sentences_are_rewritten_from_the_runs_seconds(tmp_path) -> None:
    book = tmp_path / "notebooks"
    book.mkdir()
    for name in ("01_data", "05_distillation"):
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", book)
    run = tmp_path / "run"
    notebooks = {"01_data": {"status": "ok", "seconds": 9.6},
                 "05_distillation": {"status": "ok", "seconds": 141.0}}  # fmt: skip
    write_json(
        run / "results.json", {"status": "ok", "preset": "classroom", "notebooks": notebooks}
    )
    changes = update_time_claims(run, book, write=False)
    assert changes["05_distillation"][1].startswith(
        "Time on a 2-core CPU: about 2.5 minutes, measured"
    )
    assert json.loads((book / "05_distillation.ipynb").read_text()) == json.loads(
        (NOTEBOOKS / "05_distillation.ipynb").read_text()
    )  # write=False wrote nothing
    update_time_claims(run, book)
    cells = json.loads((book / "05_distillation.ipynb").read_text())["cells"]
    assert "about 2.5 minutes, measured in a `kdbook book` run of the classroom preset" in "".join(
        cells[0]["source"]
    )
    assert update_time_claims(run, book) == {}  # a second pass changes nothing


def test_an_unfinished_run_is_refused(tmp_path) -> None:
    write_json(tmp_path / "results.json", {"status": "running", "notebooks": {}})
    with pytest.raises(ValueError, match="did not finish"):
        update_time_claims(tmp_path, NOTEBOOKS, write=False)
