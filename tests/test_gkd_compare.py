"""gkd_compare: identical initial weights per seed, equal budgets chosen on validation,
diverged runs named and left out."""

from __future__ import annotations

import math

import pytest
import torch

from kdbook.compare import SCRATCH
from kdbook.gkd_compare import summarize_runs, train_sequence_recipes, tune_sequences
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


def test_runs_start_alike_and_diverged_runs_are_named(setup):
    lang, data, task = setup
    broken = SequenceTask(lambda m, s: task.logits(m, s) * math.nan, task.sample)

    def measure(model):
        return {"kl": exact_kl(lang, model, V, L)}

    recipes = {SCRATCH: {}, "on-policy": {"teacher": lang, "lmbda": 1.0, "beta": 1.0}}
    runs = train_sequence_recipes(student, task, data, recipes, measure, seeds=[0, 1],
                                  steps=3, batch_size=8, progress=False)  # fmt: skip
    table = runs.rows.pivot(index="seed", columns="run", values="init_norm")
    assert (table[SCRATCH] == table["on-policy"]).all()  # one seed's runs start alike
    assert table.loc[0, SCRATCH] != table.loc[1, SCRATCH]
    summary = summarize_runs(runs, ["kl"], list(recipes))
    assert set(summary.columns) >= {"kl", "kl_ci95", "kl_vs_alone", "kl_vs_alone_ci95"}
    bad = train_sequence_recipes(student, broken, data, {SCRATCH: {}}, measure, seeds=[0],
                                 steps=2, batch_size=4, progress=False)  # fmt: skip
    assert bad.diverged == {SCRATCH: [0]} and "kl" not in bad.rows.columns  # never measured


def test_tuning_gives_every_method_the_same_budget_and_chooses_on_validation(setup):
    lang, data, task = setup
    val = lang.sample(64, torch.Generator().manual_seed(9))

    def score(model):
        with torch.no_grad():
            return float(-sequence_log_probs(model, val, V).mean())

    methods = [
        Method(SCRATCH, {"lr": [1e-3, 1e-2, 3e-2]}),
        Method("jsd", {"lr": [1e-3, 1e-2], "beta": [0.1, 0.9]}, {"teacher": lang, "lmbda": 0.5}),
    ]
    tuned = tune_sequences(student, task, data, methods, score, budget=2, seeds=[0],
                           steps=3, batch_size=8, progress=False)  # fmt: skip
    assert tuned.trials.groupby("method").size().tolist() == [2, 2]
    for name in (SCRATCH, "jsd"):
        mine = tuned.trials[tuned.trials["method"] == name]
        assert mine["chosen"].sum() == 1
        assert mine.loc[mine["chosen"], "val_score"].iloc[0] == mine["val_score"].min()
    assert tuned.recipes["jsd"]["teacher"] is lang and tuned.recipes["jsd"]["lmbda"] == 0.5
    assert list(tuned.choices().index) == [SCRATCH, "jsd"]
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        tune_sequences(student, task, data, methods, score, budget=0, seeds=[0])
    with pytest.raises(ValueError, match="at least budget=5 settings"):
        tune_sequences(student, task, data, methods, score, budget=5, seeds=[0])
