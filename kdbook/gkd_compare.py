"""Fair comparisons of on-policy and off-policy distillation on a sequence task
(:func:`kdbook.train.fit_on_policy`), the image chapters' protocol at sequence scale.

Each method is a dict of ``fit_on_policy`` arguments (``{"lmbda": 1.0, "beta": 1.0}``, ...)
with a search space (:class:`kdbook.tuning.Method`: its ``space``; its ``recipe`` the fixed
arguments). Every method gets the same budget of settings (:func:`kdbook.tuning.draw`), the
same number of optimizer steps and sequences per step, and is scored by a validation number
(lower is better: the mean negative log-likelihood of held-out sequences); the final runs
train every method at its chosen setting from identical initial weights per seed and measure
them once. A run whose training loss went non-finite diverged: it is named, never averaged.

Introduced in notebook 16_on_policy_distillation.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.compare import SCRATCH
from kdbook.paired_runs import first_layer_norm
from kdbook.stats import finite_mean_ci, method_verdict
from kdbook.train.on_policy import SequenceTask, fit_on_policy
from kdbook.tuning import Method, choose_on_validation, describe, draw

Measure = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class SequenceRuns:
    """What :func:`train_sequence_recipes` trained: ``rows`` (one per seed and run: ``seed``,
    ``run``, ``init_norm``, ``seconds`` and the measures, NaN for a diverged run), the
    diverged runs ``{run: [seeds]}``, and the models ``{seed: {run: model}}`` when kept."""

    rows: pd.DataFrame
    diverged: dict[str, list[int]]
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)

    def measure(self, name: str) -> pd.DataFrame:
        """One measure as a table: a row per seed, a column per run."""
        return self.rows.pivot(index="seed", columns="run", values=name)


def train_sequence_recipes(
    make_student: Callable[[], nn.Module],
    task: SequenceTask,
    data: torch.Tensor,
    recipes: Mapping[str, Mapping[str, Any]],
    measure: Measure,
    *,
    seeds: Sequence[int],
    keep_models: bool = False,
    progress: bool = True,
    desc: str = "runs",
    **shared: Any,
) -> SequenceRuns:
    """Train a copy of the student per recipe and seed (every copy of a seed from the weights
    ``make_student()`` builds after ``torch.manual_seed(seed)``) with
    :func:`~kdbook.train.fit_on_policy`, then ``measure`` each trained model.

    ``recipes``: run name -> ``fit_on_policy`` arguments (``teacher`` among them, or absent
    for the student alone); ``shared``: arguments of every run (``steps``, ``batch_size``...).
    """
    if not seeds:
        raise ValueError("seeds must hold at least one seed, got []")
    rows, failed, models = [], {}, {}
    bar = tqdm(total=len(seeds) * len(recipes), desc=desc, disable=not progress)
    for seed in seeds:
        torch.manual_seed(seed)
        initial = make_student()
        norm = first_layer_norm(initial)
        for name, recipe in recipes.items():
            model = copy.deepcopy(initial)
            history = fit_on_policy(model, task, data, **{**shared, **recipe, "seed": seed},
                                    progress=False)  # fmt: skip
            seconds = sum(r["seconds"] for r in history.epochs)
            row = {"seed": seed, "run": name, "init_norm": norm, "seconds": seconds}
            if "diverged" in history.settings:
                failed.setdefault(name, []).append(seed)
            else:
                row |= dict(measure(model))
            rows.append(row)
            if keep_models:
                models.setdefault(seed, {})[name] = model
            bar.update()
    bar.close()
    return SequenceRuns(pd.DataFrame(rows), failed, models)


def summarize_runs(
    runs: SequenceRuns, measures: Sequence[str], methods: Sequence[str]
) -> pd.DataFrame:
    """Per method and measure: mean and 95 % interval over seeds (diverged runs left out), and
    the paired difference with :data:`~kdbook.compare.SCRATCH` seed by seed (method minus
    alone) with its interval."""
    out = []
    for name in methods:
        row: dict[str, Any] = {"method": name}
        for m in measures:
            table = runs.measure(m)
            row[m], row[f"{m}_ci95"] = finite_mean_ci(table[name].tolist())
            if name != SCRATCH and SCRATCH in table:
                diff = (table[name] - table[SCRATCH]).tolist()
                row[f"{m}_vs_alone"], row[f"{m}_vs_alone_ci95"] = finite_mean_ci(diff)
        row["diverged"] = ", ".join(f"seed {s}" for s in runs.diverged.get(name, []))
        out.append(row)
    return pd.DataFrame(out).set_index("method")


def lower_is_better_verdict(method: str, difference: float, ci95: float) -> str:
    """The verdict words of :mod:`kdbook.stats` for a measure where lower is better (a KL, a
    negative log-likelihood): ``difference`` is method minus the student alone."""
    return method_verdict(method, -difference, ci95)


@dataclass
class SequenceTuning:
    """What :func:`tune_sequences` tried (``trials``: per method and setting its mean validation
    score, its diverged runs, whether chosen) and chose (``recipes``: each method's
    ``fit_on_policy`` arguments at its choice)."""

    trials: pd.DataFrame
    recipes: dict[str, dict[str, Any]]
    unchosen: dict[str, str]
    budget: int
    seeds: list[int]

    def choices(self) -> pd.DataFrame:
        """One row per method: settings tried (the budget), the choice and its score."""
        rows = {}
        for name, tried in self.trials.groupby("method", sort=False):
            best = tried[tried["chosen"]]
            choice = best["setting"].iloc[0] if len(best) else self.unchosen[name]
            rows[name] = {
                "settings tried (budget)": len(tried),
                "chosen on validation": choice,
                "mean validation score": round(best["val_score"].iloc[0], 4) if len(best) else "–",
                "diverged runs": int(tried["diverged"].sum()),
            }  # fmt: skip
        return pd.DataFrame(rows).T


def tune_sequences(
    make_student: Callable[[], nn.Module],
    task: SequenceTask,
    data: torch.Tensor,
    methods: Sequence[Method],
    validation_score: Callable[[nn.Module], float],
    *,
    budget: int,
    seeds: Sequence[int],
    progress: bool = True,
    **shared: Any,
) -> SequenceTuning:
    """Try ``budget`` settings of every method (the same number each, drawn by
    :func:`kdbook.tuning.draw`) over the tuning ``seeds``; choose each method's lowest mean
    ``validation_score`` (a setting with a diverged run cannot be chosen).

    A setting's values are ``fit_on_policy`` arguments (``lr``, ``beta``, ``lmbda``...); the
    method's ``recipe`` (a dict) holds its fixed ones.
    """
    if not (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1):
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    names = [m.name for m in methods]
    if SCRATCH not in names or len(set(names)) != len(names):
        raise ValueError(f"methods must have distinct names, {SCRATCH!r} among them, got {names}")
    drawn, recipes = {}, {}
    for method in methods:
        if len(method.settings()) < budget or callable(method.recipe):
            raise ValueError(
                f"{method.name}: its space must hold at least budget={budget} settings and its "
                f"recipe be a dict of fit_on_policy arguments"
            )
        drawn[method.name] = draw(method, budget)
        for i, choice in enumerate(drawn[method.name]):
            recipes[f"{method.name} [{i + 1}]"] = {**method.recipe, **choice}
    runs = train_sequence_recipes(
        make_student, task, data, recipes, lambda m: {"val_score": validation_score(m)},
        seeds=list(seeds), progress=progress, desc="tuning runs", **shared,
    )  # fmt: skip
    trials = []
    for method in methods:
        for i, choice in enumerate(drawn[method.name]):
            run = f"{method.name} [{i + 1}]"
            failed = len(runs.diverged.get(run, []))
            scores = runs.rows.loc[runs.rows["run"] == run, "val_score"] if not failed else []
            trials.append({"method": method.name, "setting": describe(choice),
                           "val_score": float(pd.Series(scores).mean()) if not failed else math.nan,
                           "diverged": failed, "chosen": False})  # fmt: skip
    table = pd.DataFrame(trials)
    chosen, unchosen = choose_on_validation(table, drawn, budget, "val_score", lower_is_better=True)
    recipes = {m.name: {**m.recipe, **chosen[m.name]} for m in methods if m.name in chosen}
    return SequenceTuning(table, recipes, unchosen, budget, list(seeds))
