"""Schedules over training progress, and fit taking them for temperature, alpha, weights."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny

from kdbook.checkpoint import load_checkpoint
from kdbook.schedules import Schedule, dynamic_weights, linear, stages, temperature_decay
from kdbook.train import fit

pytestmark = pytest.mark.usefixtures("single_thread")

PROGRESS = (0.0, 0.5, 1.0, 1.5, -0.5)  # past the end and before the start clamp


def at(schedule, points=PROGRESS):
    return [schedule(p) for p in points]


def test_linear():
    assert at(linear(0.7, 0.3)) == pytest.approx([0.7, 0.5, 0.3, 0.3, 0.7])
    assert repr(linear(0.7, 0.3)) == "linear(0.7, 0.3)"


def test_temperature_decay_is_source_2_over_the_planned_epochs():
    decay = temperature_decay(num_epochs=100)  # max(2, 4 - 0.02 * epoch), epoch = 100 p
    source = [max(2, 4 - 0.02 * epoch) for epoch in (0, 50, 100, 100, 0)]
    assert at(decay) == pytest.approx(source)
    # A shorter plan: the schedule ends at 4 - 0.02 * 50 = 3 and stays there past the end,
    # where the source's formula would keep falling with each extra epoch (bug 12).
    short = temperature_decay(num_epochs=50)
    assert at(short) == pytest.approx([4.0, 3.5, 3.0, 3.0, 4.0])
    assert max(2, 4 - 0.02 * 75) == 2.5  # the unbounded per-epoch version at "p = 1.5"


def test_dynamic_weights_of_source_5():
    weights = dynamic_weights()
    assert set(weights) == {"feature_weight", "alpha"}
    assert at(weights["feature_weight"]) == pytest.approx([0.7, 0.5, 0.3, 0.3, 0.7])
    assert at(weights["alpha"]) == pytest.approx([0.3, 0.5, 0.7, 0.7, 0.3])
    # Per epoch and unbounded, source 5's feature weight 0.7 - 0.4 * epoch / E goes
    # negative past E; over progress it cannot.
    assert min(at(weights["feature_weight"], [i / 10 for i in range(30)])) == pytest.approx(0.3)


def test_stages():
    logits_then_features = stages([(0.5, 0.0), (1.0, 1.0)])
    assert at(logits_then_features) == [0.0, 1.0, 1.0, 1.0, 0.0]
    three = stages([(1 / 3, 0.0), (2 / 3, 1.0), (1.0, 0.5)])
    assert at(three, [0.0, 0.3, 0.5, 0.7, 1.0, 1.5]) == [0.0, 0.0, 1.0, 0.5, 0.5, 0.5]
    assert repr(logits_then_features) == "stages([(0.5, 0.0), (1.0, 1.0)])"


@pytest.mark.parametrize("steps", [[], [(0.5, 1.0)], [(0.6, 1.0), (0.4, 2.0), (1.0, 0.0)]])
def test_stages_refuses_bad_steps(steps):
    with pytest.raises(ValueError, match="until_p increasing"):
        stages(steps)


def test_schedules_compare_by_repr():
    assert linear(1, 2) == linear(1, 2) != linear(1, 3)
    assert isinstance(temperature_decay(), Schedule)
    with pytest.raises(ValueError, match="start >= floor > 0"):
        temperature_decay(start=1.0, floor=2.0)


# -- in fit ---------------------------------------------------------------------------------


def test_fit_evaluates_schedules_per_step_and_records_them(digits, teacher):
    decay = temperature_decay(start=4.0, floor=1.0, per_epoch=1.5, num_epochs=2)
    history = fit(
        tiny(digits), digits, teacher=teacher, num_epochs=2, temperature=decay, progress=False
    )
    steps = -(-len(digits.train) // 64)
    progress = [s / (2 * steps) for s in range(2 * steps)]
    expected = [
        sum(decay(p) for p in progress[e * steps : (e + 1) * steps]) / steps for e in (0, 1)
    ]
    assert [e["temperature"] for e in history.epochs] == pytest.approx(expected)
    assert history.epochs[0]["temperature"] > history.epochs[1]["temperature"] >= 1.0
    assert "alpha" not in history.epochs[0]  # a number is not recorded per epoch
    assert history.settings["temperature"] == repr(decay)


def test_constant_schedule_equals_the_number(digits, teacher):
    kwargs = dict(teacher=teacher, num_epochs=1, progress=False)
    a, b = tiny(digits), tiny(digits)
    fit(a, digits, temperature=3.0, alpha=0.6, **kwargs)
    fit(b, digits, temperature=linear(3.0, 3.0), alpha=stages([(1.0, 0.6)]), **kwargs)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_fit_refuses_a_schedule_out_of_range(digits, teacher):
    with pytest.raises(ValueError, match=r"alpha schedule linear\(0.5, 1.5\) at progress 0.6"):
        fit(tiny(digits), digits, teacher=teacher, alpha=linear(0.5, 1.5), progress=False)
    with pytest.raises(ValueError, match="temperature schedule"):
        fit(tiny(digits), digits, teacher=teacher, temperature=linear(1.0, 0.0), progress=False)


def test_scheduled_run_resumes_and_another_schedule_starts_afresh(
    digits, teacher, tmp_path, capsys
):
    path = tmp_path / "kd.pt"
    kwargs = dict(teacher=teacher, num_epochs=2, checkpoint=path, progress=False)
    first = fit(tiny(digits), digits, alpha=linear(0.9, 0.1), **kwargs)
    assert load_checkpoint(path)[1]["settings"]["alpha"] == "linear(0.9, 0.1)"
    again = fit(tiny(digits, seed=5), digits, alpha=linear(0.9, 0.1), **kwargs)
    assert "already finished" in capsys.readouterr().out
    assert again.epochs == first.epochs
    fit(tiny(digits), digits, alpha=linear(0.9, 0.2), **kwargs)
    assert "alpha='linear(0.9, 0.1)' (this run: 'linear(0.9, 0.2)')" in capsys.readouterr().out
