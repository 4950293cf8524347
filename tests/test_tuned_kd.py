"""Later notebooks use the (T, alpha) that 07 chose on validation in the same run folder."""

from __future__ import annotations

import pytest

from kdbook.config import make_config
from kdbook.io import write_json
from kdbook.recipes import kd_settings_from_run


def _with_07(run_dir, best) -> None:
    config = {"label_fraction": 0.05, "num_epochs": 15, "num_seeds": 3}
    write_json(run_dir / "metrics" / "07_tuning.json", {"config": config, "best": best})


def test_07s_choice_is_used_where_the_notebook_leaves_t_and_alpha_at_none(tmp_path, capsys) -> None:
    _with_07(tmp_path, {"temperature": 2.0, "alpha": 0.9})
    cfg = kd_settings_from_run(make_config(run_dir=str(tmp_path)), None, None)
    assert (cfg.temperature, cfg.alpha) == (2.0, 0.9)
    line = capsys.readouterr().out
    assert line.startswith("KD settings: T 2, alpha 0.9: chosen on validation by 07_tuning")
    assert "5% of the labels, 15 epochs, 3 seeds a cell" in line


def test_a_given_value_wins_and_the_line_says_which(tmp_path, capsys) -> None:
    _with_07(tmp_path, {"temperature": 2.0, "alpha": 0.9})
    cfg = kd_settings_from_run(make_config(run_dir=str(tmp_path)), 8.0, None)
    assert (cfg.temperature, cfg.alpha) == (8.0, 0.9)
    assert "temperature as given, the rest chosen on validation" in capsys.readouterr().out
    cfg = kd_settings_from_run(make_config(run_dir=str(tmp_path)), 1, 0.5)
    assert (cfg.temperature, cfg.alpha) == (1.0, 0.5)
    assert capsys.readouterr().out.rstrip().endswith("as given")


def test_without_07_the_sources_starting_point_is_used_and_said(tmp_path, capsys) -> None:
    cfg = kd_settings_from_run(make_config(run_dir=str(tmp_path)), None, None)
    assert (cfg.temperature, cfg.alpha) == (4.0, 0.7)
    assert "the sources' starting point (07_tuning has not run" in capsys.readouterr().out


def test_a_bad_value_is_refused_naming_it(tmp_path) -> None:
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\], got 1.5"):
        kd_settings_from_run(make_config(run_dir=str(tmp_path)), None, 1.5)


def test_none_in_make_config_means_the_declared_default() -> None:
    cfg = make_config(temperature=None, alpha=None)
    assert (cfg.temperature, cfg.alpha) == (4.0, 0.7)
