"""A data set given with the default preset takes its own preset, and says so in one line,
alike in make_config, in a notebook (config_from) and in `kdbook book`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdbook.machinery.selection
from kdbook.cli import main
from kdbook.config import (
    CPU_SIZES,
    DEFAULT_PRESET,
    PRESETS,
    config_from,
    dataset_preset,
    make_config,
    preset_for,
    preset_line,
    setup_lines,
)

OWN = [
    ("glyphs", "glyphs"),
    ("cifar10", "cifar10"),
    ("synthetic-cifar10:200", "cifar10"),
    ("imagefolder:some/tree", "imagefolder"),
    ("digits", "classroom"),
]


@pytest.mark.parametrize(("dataset", "preset"), OWN)
def test_each_data_set_names_its_preset(dataset, preset):
    assert dataset_preset(dataset) == preset
    assert preset_for(DEFAULT_PRESET, dataset) == preset
    assert make_config(dataset=dataset).preset == preset


def test_a_preset_given_or_no_data_set_keeps_the_preset():
    assert dataset_preset("mnist") is None and preset_for("classroom", "mnist") == "classroom"
    assert preset_for("classroom", None) == "classroom"
    assert make_config("imagefolder", dataset="digits").preset == "imagefolder"
    assert make_config("cifar10", dataset="glyphs").preset == "cifar10"
    assert make_config().preset == "classroom"
    with pytest.raises(ValueError, match=r"^dataset must be .*'glyphs'.*got 'mnist'"):
        make_config(dataset="mnist")  # a bad name is refused as before, by name


def test_the_data_set_preset_sizes_what_is_left_and_the_rest_is_kept():
    cfg = make_config(dataset="glyphs", num_epochs=3)
    assert cfg.num_epochs == 3 and cfg.teacher == PRESETS["glyphs"]["teacher"]
    assert cfg.num_seeds == PRESETS["glyphs"]["num_seeds"]
    photos = make_config(dataset="imagefolder:some/tree", device="cpu")  # and its CPU sizes
    assert photos.num_epochs == CPU_SIZES["imagefolder"]["num_epochs"]
    assert photos.num_seeds == PRESETS["imagefolder"]["num_seeds"]  # not the classroom's 10


def test_a_notebook_says_which_preset_runs_in_one_line(capsys):
    declared = {"preset": "classroom", "dataset": "glyphs", "num_epochs": None}
    cfg = config_from(declared)
    out = capsys.readouterr().out.splitlines()
    assert cfg.preset == "glyphs" and out[0] == preset_line(cfg, "classroom")
    assert out[0] == (
        "preset 'glyphs', the data set's own ('classroom' is sized for digits): "
        "digits_teacher -> tiny_cnn, 20 epochs, 5 seeds, on cpu"
    )
    config_from({"preset": "glyphs", "dataset": "glyphs"})  # asked for: nothing to say
    config_from({"preset": "classroom", "dataset": "digits"})
    assert capsys.readouterr().out == ""


def test_photos_on_a_cpu_say_the_preset_then_its_cpu_sizes(capsys):
    config_from({"preset": "classroom", "dataset": "imagefolder:x", "device": "cpu",
                 "num_epochs": None})  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("preset 'imagefolder', the data set's own")
    assert "5 epochs, 3 seeds, on cpu" in lines[0]
    assert lines[1].startswith("preset 'imagefolder' on a CPU: num_epochs 5")


def test_setup_lines_carry_the_preset_line_when_asked():
    cfg = make_config(dataset="glyphs")
    assert setup_lines(cfg) == []  # config_from says it itself, first
    assert setup_lines(cfg, None, "classroom") == [preset_line(cfg, "classroom")]
    assert setup_lines(make_config(), None, "classroom") == []


PARAMS = """\
preset = "classroom"  # sizes
dataset = None  # the data set
num_epochs = None  # epochs
run_dir = "unset"  # the run folder
"""
CELL = """\
from kdbook.config import config_from
from kdbook.report import save_metrics
cfg = config_from(globals())
save_metrics(run_dir, "01_config", {"config": cfg.as_dict(), "models": []})
"""


def test_the_book_and_its_notebooks_agree(make_notebook, notebook_dir: Path, monkeypatch,
                                          tmp_path, capsys):  # fmt: skip
    make_notebook("01_config", PARAMS, CELL)
    monkeypatch.setattr(kdbook.machinery.selection, "NOTEBOOK_DIR", notebook_dir)
    out = tmp_path / "run"
    assert main(["book", "--out", str(out), "-p", "dataset", "glyphs"]) == 0
    expected = preset_line(make_config(dataset="glyphs"), "classroom")
    assert f"book: {expected}" in capsys.readouterr().out.splitlines()
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["preset"] == "glyphs" and results["config"]["num_seeds"] == 5
    executed = json.loads((out / "01_config.ipynb").read_text(encoding="utf-8"))
    printed = "".join(
        "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])
    )
    assert expected in printed.splitlines()
