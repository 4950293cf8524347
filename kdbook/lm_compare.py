"""Fair comparisons of language-model students, scored where lower is better.

The image chapters' protocol (:mod:`kdbook.tuning`, :mod:`kdbook.compare`) for students that
:func:`kdbook.train.fit_lm` (bits per character, chapter 15) or
:func:`kdbook.train.fit_on_policy` (exact KLs of a synthetic language, chapter 16) trains.
What a chapter brings is a *trainer*: ``train(model, recipe, seed) -> {name: value}``, which
trains one copy of the student with one recipe and returns what it scores (the key
:data:`DIVERGED` set to True names a run that diverged). :func:`lm_trainer` and
:func:`on_policy_trainer` build the two chapters'.

Everything else is shared: every run of a seed starts from the same weights
(:func:`train_lm_recipes`); each method (a :class:`kdbook.tuning.Method`) gets the same
budget of settings, chosen on a validation score where lower is better
(:func:`tune_lm`, :func:`kdbook.tuning.choose_on_validation`); the final runs read the test
split once (:func:`compare_lm`); a method's difference from the student alone is paired seed
by seed, with its 95 % interval and :mod:`kdbook.stats`'s verdict words (:class:`LMRuns`); a
diverged run is named and never averaged.

Introduced in notebook 15_language_model_kd; notebook 16_on_policy_distillation uses it too.
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
from kdbook.evaluate import lm_logits, lm_metrics
from kdbook.paired_runs import first_layer_norm
from kdbook.stats import finite_mean_ci, format_interval, method_verdict
from kdbook.text import TextData, tiled_windows
from kdbook.train import fit_lm
from kdbook.train.on_policy import SequenceTask, fit_on_policy
from kdbook.tuning import (
    Method,
    check_budget,
    choices_table,
    choose_on_validation,
    describe,
    draw,
    tuning_record,
)

DIVERGED = "diverged"  # a trainer's key: True when the run diverged
BPC = "bits per character"  # chapter 15's score

Trainer = Callable[[nn.Module, Mapping[str, Any], int], Mapping[str, Any]]


def lm_diverged(history: Any, val_bpc: float, vocab_size: int) -> bool:
    """A language model diverged when a training loss went non-finite or its validation
    bits per character are no better than a uniform guess (``log2(vocab_size)``)."""
    losses = [e["train_loss"] for e in history.epochs]
    return not all(math.isfinite(x) for x in losses) or not val_bpc < math.log2(vocab_size)


def split_bpc(model: nn.Module, data: TextData, split: str, device: str = "cpu") -> float:
    """Bits per character of ``model`` on every window of a split (read once)."""
    x, y = tiled_windows(data.split(split), model.context)
    return lm_metrics(lm_logits(model, x, device=device), y)["bpc"]


def lm_trainer(data: TextData, split: str, **shared: Any) -> Trainer:
    """Chapter 15's trainer: :func:`~kdbook.train.fit_lm` with the recipe (``shared``: the
    arguments of every run), scored in :data:`BPC` on ``split`` ('val': the last epoch's,
    'test': read once after training); a run :func:`lm_diverged` scores NaN."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    device = shared.get("device", "cpu")

    def train(model: nn.Module, recipe: Mapping[str, Any], seed: int) -> dict[str, Any]:
        history = fit_lm(model, data, **{**shared, **recipe, "seed": seed, "progress": False})
        val = history.final["val_bpc"]
        if lm_diverged(history, val, data.vocab_size):
            return {BPC: math.nan, DIVERGED: True}
        return {BPC: val if split == "val" else split_bpc(model, data, split, device)}

    return train


def on_policy_trainer(
    task: SequenceTask,
    data: torch.Tensor,
    measure: Callable[[nn.Module], Mapping[str, float]],
    **shared: Any,
) -> Trainer:
    """Chapter 16's trainer: :func:`~kdbook.train.fit_on_policy` with the recipe (``teacher``,
    ``lmbda``, ``beta``... ; ``shared``: ``steps``, ``batch_size``...), then ``measure`` of
    the trained model and its ``seconds``; a diverged run is not measured."""

    def train(model: nn.Module, recipe: Mapping[str, Any], seed: int) -> dict[str, Any]:
        history = fit_on_policy(model, task, data, **{**shared, **recipe, "seed": seed},
                                progress=False)  # fmt: skip
        seconds = sum(r["seconds"] for r in history.epochs)
        if "diverged" in history.settings:
            return {"seconds": seconds, DIVERGED: True}
        return {"seconds": seconds, **measure(model)}

    return train


@dataclass
class LMRuns:
    """What :func:`train_lm_recipes` trained: ``rows`` (one per seed and run: ``seed``, ``run``,
    ``init_norm`` and the trainer's values, NaN or absent for a diverged run), the diverged
    runs ``{run: [seeds]}``, the run names in order and, when kept, the models
    ``{seed: {run: model}}``. Scores are lower-is-better; the student alone is
    :data:`~kdbook.compare.SCRATCH`."""

    rows: pd.DataFrame
    diverged: dict[str, list[int]]
    methods: list[str]
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)

    def measure(self, name: str) -> pd.DataFrame:
        """One value as a table: a row per seed, a column per run (in the recipes' order)."""
        known = [c for c in self.rows.columns if c not in ("seed", "run")]
        if name not in known:
            raise ValueError(f"measure must be one of the runs' values {known}, got {name!r}")
        seeds = pd.unique(self.rows["seed"])
        table = self.rows.pivot(index="seed", columns="run", values=name)
        return table.reindex(index=seeds, columns=self.methods)

    def per_seed(self, name: str) -> pd.DataFrame:
        """:meth:`measure` with the first layer's initial norm per seed (``init_norm``) first."""
        return pd.concat([self.measure("init_norm").iloc[:, [0]].set_axis(["init_norm"], axis=1),
                          self.measure(name)], axis=1)  # fmt: skip

    def summary(self, measures: Sequence[str]) -> pd.DataFrame:
        """Per run and measure ``m``: ``m`` and ``m_ci95`` (mean and 95 % interval over the seeds
        kept), and but for the student alone the paired difference ``m_vs_alone`` (run minus
        alone, seed by seed; negative: lower, better), its ``m_vs_alone_ci95`` and
        ``m_verdict``; ``diverged`` names the runs left out."""
        out = []
        for name in self.methods:
            row: dict[str, Any] = {"method": name}
            for m in measures:
                table = self.measure(m)
                row[m], row[f"{m}_ci95"] = finite_mean_ci(table[name].tolist())
                if name != SCRATCH and SCRATCH in table:
                    d, ci = finite_mean_ci((table[name] - table[SCRATCH]).tolist())
                    row |= {f"{m}_vs_alone": d, f"{m}_vs_alone_ci95": ci,
                            f"{m}_verdict": method_verdict(name, -d, ci)}  # fmt: skip
            row[DIVERGED] = ", ".join(f"seed {s}" for s in self.diverged.get(name, []))
            out.append(row)
        return pd.DataFrame(out).set_index("method")

    def table(
        self, measures: Sequence[str], *, judged: Sequence[str] = (), digits: int = 3
    ) -> pd.DataFrame:
        """One readable row per run: each of ``measures`` as mean ± 95 % interval, each of
        ``judged`` as the difference from the student alone ± interval with its verdict, and
        the diverged runs."""
        s, rows = self.summary([*measures, *[m for m in judged if m not in measures]]), []
        for name in self.methods:
            row = {"method": name}
            for m in measures:
                row[m] = format_interval(s.loc[name, m], s.loc[name, f"{m}_ci95"], unit="",
                                         digits=digits)  # fmt: skip
            for m in judged:
                row[f"{m}: run - alone"] = "(reference)" if name == SCRATCH else (
                    format_interval(s.loc[name, f"{m}_vs_alone"], s.loc[name, f"{m}_vs_alone_ci95"],
                                    signed=True, unit="", digits=digits)
                    + f": {s.loc[name, f'{m}_verdict']}")  # fmt: skip
            rows.append(row | {DIVERGED: s.loc[name, DIVERGED]})
        return pd.DataFrame(rows).set_index("method")

    def verdict(self, method: str, measure: str) -> str:
        """The run's verdict on ``measure`` against the student alone, naming diverged runs."""
        word = self.summary([measure]).loc[method, f"{measure}_verdict"]
        out = [f"seed {x}" for x in self.diverged.get(method, [])]
        return f"{word} ({len(out)} diverged run(s) left out: {', '.join(out)})" if out else word


def train_lm_recipes(
    make_student: Callable[[], nn.Module],
    train: Trainer,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    keep_models: bool = False,
    progress: bool = True,
    desc: str = "runs",
) -> LMRuns:
    """Train a copy of the student per recipe and seed with ``train`` (every copy of a seed
    from the weights ``make_student()`` builds after ``torch.manual_seed(seed)``)."""
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
            values = dict(train(model, recipe, seed))
            if values.pop(DIVERGED, False):
                failed.setdefault(name, []).append(seed)
            rows.append({"seed": seed, "run": name, "init_norm": norm, **values})
            if keep_models:
                models.setdefault(seed, {})[name] = model
            bar.update()
    bar.close()
    return LMRuns(pd.DataFrame(rows), failed, list(recipes), models)


def compare_lm(
    make_student: Callable[[], nn.Module],
    train: Trainer,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    keep_models: bool = False,
    progress: bool = True,
) -> LMRuns:
    """The final comparison: ``recipes`` (the student alone under
    :data:`~kdbook.compare.SCRATCH` among them) over ``seeds`` from identical weights, with a
    trainer that reads the test split once."""
    if SCRATCH not in recipes:
        raise ValueError(
            f"recipes must include the student alone, {SCRATCH!r}; got {list(recipes)}"
        )
    return train_lm_recipes(make_student, train, recipes, seeds=seeds, keep_models=keep_models,
                            progress=progress, desc="final runs")  # fmt: skip


def _arguments(method: Method, setting: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer's recipe for one setting: a dict recipe with the setting over it, or what
    a callable recipe makes of it (:meth:`kdbook.tuning.Method.fit_arguments`)."""
    if callable(method.recipe):
        return method.fit_arguments(setting)
    return {**method.recipe, **setting}


@dataclass
class LMTuning:
    """What :func:`tune_lm` tried (``trials``: one row per method and setting, its mean
    validation ``score`` in ``val_score``, its diverged runs, whether chosen) and chose."""

    methods: list[Method]
    trials: pd.DataFrame
    chosen: dict[str, dict[str, Any]]
    unchosen: dict[str, str]
    budget: int
    seeds: list[int]
    score: str

    def recipes(self) -> dict[str, dict[str, Any]]:
        """The trainer's recipe of every method at its chosen setting."""
        return {m.name: _arguments(m, self.chosen[m.name]) for m in self.methods
                if m.name in self.chosen}  # fmt: skip

    def choices(self, digits: int = 4) -> pd.DataFrame:
        """One row per method: settings tried (the budget), the choice and its score."""
        return choices_table(self.methods, self.trials, self.unchosen, score="val_score",
                             label=f"mean val {self.score}", digits=digits)  # fmt: skip

    def record(self) -> dict[str, Any]:
        """What results.json keeps of the tuning: budget, seeds, score, trials and choices."""
        record = tuning_record(self.budget, self.seeds, self.trials, self.chosen, self.unchosen)
        return record | {"score": self.score}


def tune_lm(
    make_student: Callable[[], nn.Module],
    train: Trainer,
    methods: Sequence[Method],
    *,
    score: str,
    budget: int,
    seeds: Sequence[int],
    progress: bool = True,
) -> LMTuning:
    """Try ``budget`` settings of every method (:func:`kdbook.tuning.draw`: the same number
    for each) over the tuning ``seeds`` with a trainer that scores validation data, and choose
    each method's lowest mean ``score`` (a setting with a diverged run cannot be chosen).

    Raises:
        ValueError: a bad budget, names or search space, before any training.
    """
    check_budget(budget)
    names = [m.name for m in methods]
    if SCRATCH not in names or len(set(names)) != len(names):
        raise ValueError(f"methods must have distinct names, {SCRATCH!r} among them, got {names}")
    for method in methods:
        if len(method.settings()) < budget:
            raise ValueError(f"{method.name}: its space must hold at least budget={budget} "
                             f"settings, got {len(method.settings())}")  # fmt: skip
    drawn = {m.name: draw(m, budget) for m in methods}
    recipes = {f"{m.name} [{i + 1}]": _arguments(m, choice)
               for m in methods for i, choice in enumerate(drawn[m.name])}  # fmt: skip
    runs = train_lm_recipes(make_student, train, recipes, seeds=list(seeds), progress=progress,
                            desc="tuning runs")  # fmt: skip
    scores = runs.measure(score) if score in runs.rows.columns else None  # None: all diverged
    trials = []
    for method in methods:
        for i, choice in enumerate(drawn[method.name]):
            run = f"{method.name} [{i + 1}]"
            failed = len(runs.diverged.get(run, []))
            trials.append({"method": method.name, "setting": describe(choice),
                           "val_score": math.nan if failed else float(scores[run].mean()),
                           "diverged": failed, "chosen": False})  # fmt: skip
    table = pd.DataFrame(trials)
    chosen, unchosen = choose_on_validation(table, drawn, budget, "val_score", lower_is_better=True)
    return LMTuning(list(methods), table, chosen, unchosen, budget, list(seeds), score)
