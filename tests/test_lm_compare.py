"""lm_compare on chapter 16's trainer: identical initial weights per seed, equal budgets chosen
on validation (lower is better), paired verdicts, diverged runs named and left out. Chapter
15's trainer is tested in test_lm.py."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook.compare import SCRATCH
from kdbook.lm_compare import compare_lm, on_policy_trainer, train_lm_recipes, tune_lm
from kdbook.synthetic_language import (
    exact_kl,
    language_task,
    make_language,
    sequence_log_probs,
)
from kdbook.train import SequenceTask
from kdbook.transformer import CharTransformer
from kdbook.tuning import Method

pytestmark = pytest.mark.usefixtures("single_thread")
V, L = 3, 4


@pytest.fixture(scope="module")
def setup():
    lang = make_language(seed=0, vocab_size=V, length=L)
    data = lang.sample(128, torch.Generator().manual_seed(0))
    return lang, data, language_task(V, L)


def student() -> CharTransformer:
    return CharTransformer(V + 1, L, 8, 1, 1)


def test_runs_start_alike_verdicts_are_paired_and_diverged_runs_are_named(setup):
    lang, data, task = setup
    broken = SequenceTask(lambda m, s: task.logits(m, s) * math.nan, task.sample)

    def measure(model):
        return {"kl": exact_kl(lang, model, V, L)}

    recipes = {SCRATCH: {}, "on-policy": {"teacher": lang, "lmbda": 1.0, "beta": 1.0}}
    train = on_policy_trainer(task, data, measure, steps=3, batch_size=8)
    runs = compare_lm(student, train, recipes, seeds=[0, 1], progress=False)
    table = runs.measure("init_norm")
    assert list(table.columns) == [SCRATCH, "on-policy"]
    assert (table[SCRATCH] == table["on-policy"]).all()  # one seed's runs start alike
    assert table.loc[0, SCRATCH] != table.loc[1, SCRATCH]
    summary = runs.summary(["kl"])
    assert set(summary.columns) >= {"kl", "kl_ci95", "kl_vs_alone", "kl_vs_alone_ci95"}
    assert "kl_verdict" in summary.columns
    kl = runs.measure("kl")
    assert summary.loc["on-policy", "kl_vs_alone"] == pytest.approx(
        (kl["on-policy"] - kl[SCRATCH]).mean()
    )
    shown = runs.table(["kl"], judged=["kl"])
    assert shown.loc[SCRATCH, "kl: run - alone"] == "(reference)"
    words = ("on-policy helps", "on-policy hurts", "inside seed noise")
    assert runs.verdict("on-policy", "kl") in words
    assert list(runs.per_seed("kl").columns) == ["init_norm", SCRATCH, "on-policy"]
    bad = train_lm_recipes(student, on_policy_trainer(broken, data, measure, steps=2, batch_size=4),
                           {SCRATCH: {}}, seeds=[0], progress=False)  # fmt: skip
    assert bad.diverged == {SCRATCH: [0]} and "kl" not in bad.rows.columns  # never measured
    with pytest.raises(ValueError, match="measure must be one of"):
        runs.summary(["KL"])
    with pytest.raises(ValueError, match="the student alone"):
        compare_lm(student, train, {"on-policy": recipes["on-policy"]}, seeds=[0])


def test_tuning_gives_every_method_the_same_budget_and_chooses_the_lowest(setup):
    lang, data, task = setup
    val = lang.sample(64, torch.Generator().manual_seed(9))

    def score(model):
        with torch.no_grad():
            return {"nll": float(-sequence_log_probs(model, val, V).mean())}

    methods = [
        Method(SCRATCH, {"lr": [1e-3, 1e-2, 3e-2]}),
        Method("jsd", {"lr": [1e-3, 1e-2], "beta": [0.1, 0.9]}, {"teacher": lang, "lmbda": 0.5}),
    ]
    train = on_policy_trainer(task, data, score, steps=3, batch_size=8)
    tuned = tune_lm(student, train, methods, score="nll", budget=2, seeds=[0], progress=False)
    assert tuned.trials.groupby("method").size().tolist() == [2, 2]
    for name in (SCRATCH, "jsd"):
        mine = tuned.trials[tuned.trials["method"] == name]
        assert mine["chosen"].sum() == 1
        assert mine.loc[mine["chosen"], "val_score"].iloc[0] == mine["val_score"].min()
    recipes = tuned.recipes()
    assert recipes["jsd"]["teacher"] is lang and recipes["jsd"]["lmbda"] == 0.5
    assert "beta" in recipes["jsd"]  # a setting outside fit's keywords reaches the trainer
    assert list(tuned.choices().index) == [SCRATCH, "jsd"]
    assert "mean val nll" in tuned.choices().columns
    assert set(tuned.record()) >= {"budget", "tuning_seeds", "trials", "chosen"}
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        tune_lm(student, train, methods, score="nll", budget=0, seeds=[0])
    with pytest.raises(ValueError, match="at least budget=5 settings"):
        tune_lm(student, train, methods, score="nll", budget=5, seeds=[0])
