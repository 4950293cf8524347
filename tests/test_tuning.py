"""The tuning protocol: equal budgets, choice on validation, diverged settings never chosen,
the test split unread until the final comparison, bad input refused before any training."""

from __future__ import annotations

import math

import pytest

import kdbook.evaluate
import kdbook.paired_runs
from kdbook.compare import SCRATCH
from kdbook.distill import DKD
from kdbook.tuning import Method, check_methods, draw, tune


@pytest.fixture
def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr("kdbook.tuning.train_recipes", refuse)


ALONE = Method(SCRATCH, {"lr": [0.05, 0.1]})


@pytest.mark.parametrize(
    ("methods", "budget", "message"),
    [
        ([ALONE], 0, "budget must be an integer >= 1, got 0"),
        ([ALONE], 3, "has 2 settings, fewer than the budget 3"),
        ([ALONE, Method("KD", {"temprature": [2.0, 4.0]})], 2, "unknown setting 'temprature'"),
        ([ALONE, Method("KD", {"lr": []})], 1, "setting 'lr' must list one or more values"),
        ([ALONE, Method("KD", {"lr": [0.1, -1.0]})], 1, "lr must be a number > 0, got -1.0"),
        ([ALONE, Method("KD", {"alpha": [0.5, 2.0]})], 1, r"alpha must be a number in \[0, 1\]"),
        ([Method("KD", {"lr": [0.1]})], 1, "must include the student alone"),
        (
            [ALONE, Method("DKD", {"beta": [1.0, -2.0]}, lambda beta: {"terms": [DKD(beta=beta)]})],
            1,
            "beta",
        ),
    ],
)
def test_bad_input_is_refused_before_training(digits, no_training, methods, budget, message):
    with pytest.raises(ValueError, match=message):
        check_methods(methods, budget)
    with pytest.raises(ValueError, match=message):
        tune("tiny_cnn", digits, methods, budget=budget, seeds=[0])


def test_a_distillation_keyword_of_fit_is_a_setting_too():
    # fit passes feature_weight, view, terms, ... to its Distiller: tunable like lr
    hint = Method("hint", {"lr": [0.05], "feature_weight": [0.3, 1.0]}, {"feature_loss": object})
    check_methods([ALONE, hint], 2)
    assert hint.fit_arguments({"lr": 0.05, "feature_weight": 0.3})["feature_weight"] == 0.3


def test_every_method_gets_the_same_budget_drawn_the_same_way():
    kd = Method("KD", {"lr": [0.02, 0.05, 0.1], "temperature": [1.0, 2.0, 4.0, 8.0]})
    picked = draw(kd, 4)
    assert len(picked) == 4 and picked == draw(kd, 4)  # fixed by the method's name
    assert len({tuple(p.items()) for p in picked}) == 4
    assert draw(ALONE, 2) == [{"lr": 0.05}, {"lr": 0.1}]  # the whole grid when it is the budget


def test_tune_chooses_on_validation_and_never_a_diverged_setting(digits, teacher, monkeypatch):
    read = []
    real_predict = kdbook.evaluate.predict

    def spy(model, data, split="test", device="cpu"):
        read.append(split if isinstance(split, str) else "split")
        return real_predict(model, data, split, device)

    monkeypatch.setattr(kdbook.paired_runs, "predict", spy)
    methods = [
        Method(SCRATCH, {"lr": [0.05, 0.1]}),
        Method("KD", {"lr": [50.0, 0.1]}, {"teacher": teacher}),  # lr 50 diverges
    ]
    tuning = tune("tiny_cnn", digits, methods, budget=2, seeds=[0, 1], num_epochs=4, progress=False)
    assert set(read) == {"val"}  # tuning never reads the test split
    trials = tuning.trials.set_index(["method", "setting"])
    assert trials.loc[("KD", "lr 50"), "diverged"] == 2
    assert math.isnan(trials.loc[("KD", "lr 50"), "val_mean"])
    assert tuning.chosen["KD"] == {"lr": 0.1}
    alone = trials.loc[SCRATCH]
    assert tuning.chosen[SCRATCH] == {"lr": float(alone["val_mean"].idxmax().split()[1])}
    assert tuning.table().loc[("KD", "lr 50"), "diverged"] == "2 of 2"
    choices = tuning.choices()
    assert (choices["settings tried (budget)"] == 2).all()
    assert choices.loc["KD", "chosen on validation"] == "lr 0.1"
    curve = tuning.best_so_far()
    assert list(curve.index) == [1, 2]
    assert curve["KD"].iloc[-1] == trials.loc[("KD", "lr 0.1"), "val_mean"]

    read.clear()
    final = tuning.compare(seeds=[0, 1, 2], num_epochs=4, progress=False)
    assert "test" in read
    assert list(final.per_seed.index) == [0, 1, 2] and "KD" in final.per_seed.columns


def test_a_method_that_diverges_everywhere_has_no_choice(digits, teacher):
    methods = [Method(SCRATCH, {"lr": [0.1]}), Method("KD", {"lr": [50.0]}, {"teacher": teacher})]
    tuning = tune("tiny_cnn", digits, methods, budget=1, seeds=[0], num_epochs=2, progress=False)
    assert "KD" not in tuning.chosen
    assert tuning.unchosen["KD"] == "none: diverged at every one of its 1 settings"
    assert tuning.choices().loc["KD", "chosen on validation"].startswith("none")
    final = tuning.compare(seeds=[0, 1], num_epochs=2, progress=False, baseline="KD")
    assert final.verdict("KD") == (
        "KD: no setting chosen in tuning (none: diverged at every one of its 1 settings); not run"
    )
    assert final.row("KD")["caveat"].startswith("KD: no setting chosen")
    assert final.summary.loc["KD", "n"] == 0


def test_hard_label_control_data(digits):
    """``with_teacher_labels``: hidden labels become the teacher's top class, the labelled
    images keep theirs, validation and test are untouched."""
    import torch

    from kdbook.data import UNLABELED

    scarce = digits.with_label_fraction(0.1, seed=0)
    logits = torch.zeros(len(scarce.train), digits.num_classes)
    logits[:, 7] = 1.0  # a teacher that always says 7
    hard = scarce.with_teacher_labels(logits)
    hidden = scarce.train.labels == UNLABELED
    assert (hard.train.labels[hidden] == 7).all()
    assert torch.equal(hard.train.labels[~hidden], scarce.train.labels[~hidden])
    assert hard.val is scarce.val and hard.test is scarce.test
    with pytest.raises(ValueError, match="logits must be the teacher's on the training split"):
        scarce.with_teacher_labels(logits[:5])


def test_a_recipe_trains_on_its_own_training_split(digits):
    """A control that changes only the training labels (``train_data``) trains alone on
    them; one that changes the validation split is refused before any training."""
    from kdbook.compare import compare_methods
    from kdbook.data import Split

    scarce = digits.with_label_fraction(0.1, seed=0)
    result = compare_methods(
        "tiny_cnn", scarce, {"all labels": {"train_data": digits}}, seeds=[0, 1],
        num_epochs=4, progress=False,
    )  # fmt: skip
    assert result.summary.loc["all labels", "accuracy"] > result.summary.loc[SCRATCH, "accuracy"]
    other = digits.with_label_fraction(0.5)
    moved = type(other)(**{**other.__dict__, "val": Split(other.val.images, other.val.labels)})
    with pytest.raises(ValueError, match="must share the comparison's validation and test"):
        compare_methods("tiny_cnn", digits, {"x": {"train_data": moved}}, seeds=[0])


def test_the_choices_run_on_other_data_and_a_method_without_a_choice_stays_named(digits, teacher):
    # 09: tuned with few labels, the same choices compared with all labels
    scarce = digits.with_label_fraction(0.05, seed=0)
    methods = [Method(SCRATCH, {"lr": [0.05]}), Method("KD", {"lr": [0.05]}, {"teacher": teacher})]
    tuning = tune("tiny_cnn", scarce, methods, budget=1, seeds=[0], num_epochs=1, progress=False)
    final = tuning.compare(seeds=[0, 1], data=digits, setting="all labels", baseline="KD",
                           num_epochs=1, progress=False)  # fmt: skip
    assert final.setting == "all labels" and list(final.per_seed.index) == [0, 1]
    tuning.chosen.pop("KD")  # as if KD had diverged at every setting
    tuning.unchosen["KD"] = "every setting diverged"
    alone = tuning.compare(seeds=[0], data=digits, baseline="KD", num_epochs=1, progress=False)
    assert "KD" in alone.excluded and alone.baseline is None


def test_tune_procedure_chooses_on_validation_and_names_diverged_settings(digits):
    from kdbook.checkpoint import History
    from kdbook.models import build_model
    from kdbook.train import fit
    from kdbook.tuning import tune_procedure

    calls = []

    def train(seeds, lr):
        runs = []
        for seed in seeds:
            calls.append((seed, lr))
            model = build_model("tiny_cnn", digits)
            if lr > 1:  # this setting "diverges": a non-finite loss in its history
                runs.append((model, History(settings={}, epochs=[{"train_loss": math.nan}])))
            else:
                runs.append(
                    (model, fit(model, digits, num_epochs=1, lr=lr, seed=seed, progress=False))
                )
        return runs

    tuning = tune_procedure(
        "mutual", {"lr": [0.05, 10.0]}, train, digits, budget=2, seeds=[0, 1], progress=False
    )
    assert sorted(calls) == [(0, 0.05), (0, 10.0), (1, 0.05), (1, 10.0)]
    assert tuning.chosen == {"mutual": {"lr": 0.05}}
    table = tuning.table()
    assert table.loc[("mutual", "lr 10"), "diverged"] == "2 of 2"
    assert table.loc[("mutual", "lr 0.05"), "chosen"] == "chosen"
    assert tuning.choices().loc["mutual", "settings tried (budget)"] == 2
    with pytest.raises(ValueError, match="tune_procedure"):
        tuning.compare(seeds=[0])


@pytest.mark.parametrize(
    ("space", "budget", "message"),
    [
        ({"lr": [0.05]}, 0, "budget must be an integer >= 1, got 0"),
        ({"lr": [0.05]}, 2, "has 1 settings, fewer than the budget 2"),
        ({"beta": [0.5]}, 1, "unknown setting 'beta'"),
        ({"lr": [-1.0]}, 1, "lr must be a number > 0, got -1.0"),
    ],
)
def test_tune_procedure_refuses_bad_input_before_training(digits, space, budget, message):
    from kdbook.tuning import tune_procedure

    def train(seeds, lr):
        raise AssertionError("training started before the input was checked")

    with pytest.raises(ValueError, match=message):
        tune_procedure("mutual", space, train, digits, budget=budget, seeds=[0], progress=False)
