"""kdbook.second_set: a chapter's verdicts on a second data set, side by side (issue 24)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import kdbook.second_set as second_set_module
from kdbook.compare import SCRATCH, Comparison
from kdbook.config import PRESETS, make_config
from kdbook.data import load_dataset
from kdbook.recipes import trained_in_run
from kdbook.second_set import (
    ALONE,
    GAP,
    MASS,
    TEACHER,
    describe,
    gain,
    non_target_mass,
    omitted_class_runs,
    second_set,
    side_by_side,
    side_column,
    where_it_shows,
)


def test_non_target_mass_is_one_minus_the_softened_true_class() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    p0 = math.exp(1) / (math.exp(1) + 2)  # T 4: logits 1, 0, 0
    assert non_target_mass(logits, labels) == pytest.approx(1 - (p0 + 1 / 3) / 2)
    # near T 0 the first image is certain (0 left over), the tie keeps 2/3 on the others
    assert non_target_mass(logits, labels, temperature=1e-3) == pytest.approx(1 / 3, abs=1e-6)


def test_second_set_skips_none_and_the_runs_own_data_set(tmp_path, capsys) -> None:
    cfg = make_config(run_dir=str(tmp_path))
    assert second_set(cfg, None) is None
    assert "second_dataset is None" in capsys.readouterr().out
    assert second_set(cfg, "digits") is None
    assert "this run is on digits already" in capsys.readouterr().out


def test_second_set_names_the_parameter_on_bad_input(tmp_path) -> None:
    cfg = make_config(run_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"^second_dataset must be None or .*got 'mnist'$"):
        second_set(cfg, "mnist")


def test_second_set_trains_its_teacher_once_at_the_presets_epochs(tmp_path, monkeypatch) -> None:
    short = {**PRESETS, "classroom": {**PRESETS["classroom"], "num_epochs": 4}}
    monkeypatch.setattr(second_set_module, "PRESETS", short)
    cfg = make_config("glyphs", run_dir=str(tmp_path), num_epochs=1, num_seeds=2)
    side = second_set(cfg, "digits", num_epochs=2, num_seeds=3)
    assert side.name == "digits" and side.cfg.preset == "classroom"
    assert side.cfg.num_epochs == 2 and side.seeds == [0, 1, 2]  # the notebook's own sizes
    assert (tmp_path / "teacher_digits.pt").is_file()
    assert 0 <= side.non_target_mass <= 1 and 0 <= side.teacher_accuracy <= 100
    again = second_set(cfg, "digits", epoch_share=0.5)  # loaded, not trained again
    first, second = side.teacher.state_dict(), again.teacher.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again.cfg.num_epochs == 2  # half the (patched) preset's 4
    bad = r"^epoch_share must be None or a number in \(0, 1\], got 0$"
    with pytest.raises(ValueError, match=bad):
        second_set(cfg, "digits", epoch_share=0)


def _comparison(gains: list[float], other: list[float] | None = None) -> Comparison:
    alone = [80.0, 81.0, 79.0, 80.5]
    kd = [a + g for a, g in zip(alone, gains, strict=True)]
    per_seed = pd.DataFrame({SCRATCH: alone, "KD": kd})
    methods = ["KD"]
    if other is not None:
        per_seed["DKD"] = per_seed["KD"] + other
        methods.append("DKD")
    return Comparison.from_per_seed(per_seed.rename_axis("seed"), methods, setting="all labels")


def test_gain_against_scratch_and_against_a_method() -> None:
    runs = _comparison([2.0, 2.5, 1.5, 2.0], other=[0.1, -0.2, 0.0, 0.1])
    against_alone = gain(runs, "KD")
    assert against_alone["gain_mean"] == pytest.approx(2.0)
    assert against_alone["verdict"] == "KD helps"  # the words only: the table prints the numbers
    against_kd = gain(runs, "DKD", "KD")
    assert against_kd["gain_mean"] == pytest.approx(0.0)
    assert against_kd["verdict"] == "inside seed noise"


def _side(name: str, teacher_accuracy: float, mass: float):
    cfg = make_config(dataset=name)
    return second_set_module.DataSetSide(cfg, None, None, teacher_accuracy, mass)


def test_side_by_side_and_where_it_shows_from_the_numbers() -> None:
    helps, noise = _comparison([2.0, 2.5, 1.5, 2.0]), _comparison([1.0, -1.0, 0.5, -0.5])
    digits = side_column(_side("digits", 97.0, 0.12), 95.0, {"KD - alone": noise.row("KD")})
    glyphs = side_column(_side("glyphs", 92.0, 0.35), 80.0, {"KD - alone": helps.row("KD")})
    assert digits[GAP] == pytest.approx(2.0) and glyphs[ALONE] == 80.0
    table = side_by_side([digits, glyphs])
    assert list(table.columns) == ["digits", "glyphs"]
    assert table.loc[TEACHER, "glyphs"] == "92.0" and table.loc[MASS, "digits"] == "0.120"
    assert table.loc["KD - alone", "glyphs"] == "+2.0 ± 0.6: KD helps"
    sentences = where_it_shows([digits, glyphs])
    assert sentences[0] == (
        "KD - alone (digits +0.0 ± 1.5, glyphs +2.0 ± 0.6 points): it shows on glyphs only, "
        "the set whose student alone stays furthest below its teacher."
    )
    glyphs_numbers = "glyphs: teacher 92.0 %, non-target mass 0.350, student alone 12.0 points"
    assert glyphs_numbers in sentences[1]
    both = where_it_shows([glyphs, glyphs])[0]
    assert both.endswith(
        "the interval excludes 0 on every data set: it shows on each, largest on glyphs."
    )
    none = where_it_shows([digits, digits])[0]
    assert none.endswith("the effect shows on none.")
    assert where_it_shows([digits]) == [
        "KD - alone (digits +0.0 ± 1.5 points): measured on digits only."
    ]


def test_omitted_class_runs_fixes_each_students_bias_on_validation(tmp_path) -> None:
    cfg = make_config(run_dir=str(tmp_path), num_epochs=1, num_seeds=2)
    data = load_dataset("digits")
    teacher, _ = trained_in_run(cfg, data, cfg.teacher, "teacher.pt", num_epochs=2)
    side = describe(cfg, data, teacher)
    bad = r"^omitted_class must be a class index in \[0, 10\), got 10$"
    with pytest.raises(ValueError, match=bad):
        omitted_class_runs(side, 10, candidates=[0.0])
    runs = omitted_class_runs(side, 3, candidates=[0.0, 2.0, 4.0])
    assert list(runs) == ["omitted class right", "test accuracy"]
    for what, comparison in runs.items():
        assert list(comparison.per_seed.index) == [0, 1]
        assert comparison.setting == f"no 3s, bias chosen on validation: {what}"
        assert "gain_mean" in comparison.row("KD")
