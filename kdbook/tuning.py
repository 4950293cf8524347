"""Fair tuning: every method gets the same budget of settings, chosen on validation.

A comparison that gives every method plain KD's settings measures mis-tuning, not the
method (DKD at KD's learning rate diverges). The protocol here (Dodge et al., "Show Your
Work", EMNLP 2019; the book's notebook contract, rule 8):

1. each method declares its search space: its own key settings and the learning rate
   (:class:`Method`);
2. every method gets the same number of settings tried (the ``budget``), drawn from its space
   in a fixed order;
3. each setting trains over the tuning seeds and is scored by its mean **validation**
   accuracy; a setting with a diverged run (:func:`kdbook.paired_runs.diverged`) cannot be chosen;
4. the final comparison (:meth:`Tuning.compare`) trains every method at its chosen setting
   over the comparison's seeds and reads the test split once.

>>> alone = Method(SCRATCH, {"lr": [0.02, 0.05, 0.1]})
>>> kd = Method("KD", {"lr": [0.02, 0.05, 0.1], "temperature": [2.0, 4.0]}, {"teacher": t})
>>> tuning = tune("tiny_cnn", data, [alone, kd], budget=3, seeds=[0, 1, 2])  # doctest: +SKIP
>>> tuning.table(); final = tuning.compare(seeds=range(10))  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from kdbook.compare import SCRATCH, Comparison, compare_methods, mean_ci
from kdbook.data import Dataset
from kdbook.paired_runs import train_recipes

Recipe = Mapping[str, Any] | Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class Method:
    """A method to tune: its name, its search space and how a setting becomes ``fit``'s
    arguments.

    Args:
        name: the method's name in every table (:data:`kdbook.compare.SCRATCH` for the
            student alone).
        space: setting -> candidate values. A setting that is one of ``fit``'s keywords
            (``lr``, ``temperature``, ``alpha``, ``feature_weight``, ...) goes to ``fit``; any
            other is a parameter of ``recipe``.
        recipe: ``fit``'s fixed arguments (``{"teacher": t}``), or a function of the
            non-``fit`` settings that returns them
            (``lambda beta: {"teacher": t, "terms": [DKD(beta=beta)]}``).
    """

    name: str
    space: Mapping[str, Sequence[Any]]
    recipe: Recipe = field(default_factory=dict)

    def fit_arguments(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        """``fit``'s arguments for one setting of this method."""
        own = {k: v for k, v in setting.items() if k in _fit_keywords()}
        other = {k: v for k, v in setting.items() if k not in own}
        fixed = self.recipe(**other) if callable(self.recipe) else dict(self.recipe)
        return {**fixed, **own}

    def settings(self) -> list[dict[str, Any]]:
        """Every setting of the space (its grid), in a fixed order."""
        names, grid = list(self.space), itertools.product(*self.space.values())
        return [dict(zip(names, values, strict=True)) for values in grid]


def _fit_keywords() -> set[str]:
    """``fit``'s keywords, its distillation ones (the Distiller's: ``feature_weight``, ...)
    included."""
    from kdbook.distill import Distiller
    from kdbook.train import fit

    own = set(inspect.signature(fit).parameters) - {"model", "data", "distill"}
    return own | set(inspect.signature(Distiller).parameters) - {"teacher"}


def check_methods(methods: Sequence[Method], budget: int) -> None:
    """Raise ValueError, in one line naming it, for a budget below 1, a method without a
    space large enough for the budget, a setting neither ``fit`` nor the recipe accepts, or
    a value out of range (``fit``'s declared checks; the recipe's own on every value)."""

    check_budget(budget)
    names = [m.name for m in methods]
    if not methods or len(set(names)) != len(names):
        raise ValueError(f"methods must be one or more with distinct names, got {names}")
    if SCRATCH not in names:
        raise ValueError(f"methods must include the student alone, Method({SCRATCH!r}, ...)")
    fit_keywords = _fit_keywords()
    for method in methods:
        accepted = set(fit_keywords)
        if callable(method.recipe):
            accepted |= set(inspect.signature(method.recipe).parameters)
        check_space(
            method,
            budget,
            accepted,
            "fit's keywords (lr, temperature, alpha, ...) or its recipe's parameters",
        )
        for setting in method.settings():  # the recipe's own checks, before any training
            method.fit_arguments(setting)


def check_budget(budget: Any) -> None:
    """Raise ValueError unless ``budget`` is an integer >= 1."""
    if not (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1):
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")


def check_space(method: Method, budget: int, accepted: set[str], what: str) -> None:
    """Raise ValueError, naming the method, for a setting outside ``accepted`` (``what``
    says which names those are), a setting without values, a value out of its declared
    range, or a space with fewer settings than the budget."""
    from kdbook.config import check_params

    for name, values in method.space.items():
        if name not in accepted:
            raise ValueError(
                f"{method.name}: unknown setting {name!r} in its search space; accepted: {what}"
            )
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(
                f"{method.name}: setting {name!r} must list one or more values, got {values!r}"
            )
        for value in values:
            check_params({name: value})
    size = len(method.settings())
    if size < budget:
        raise ValueError(
            f"{method.name}: its search space has {size} settings, fewer than the budget "
            f"{budget}: add values or lower the budget"
        )


def draw(method: Method, budget: int) -> list[dict[str, Any]]:
    """The ``budget`` settings of ``method`` that are tried: its whole grid when that is the
    budget, else a sample drawn with the method's name as seed (the same on every machine)."""
    grid = method.settings()
    if len(grid) == budget:
        return grid
    picked = random.Random(method.name).sample(range(len(grid)), budget)
    return [grid[i] for i in picked]


def describe(setting: Mapping[str, Any]) -> str:
    """``'lr 0.05, temperature 4'``: a setting in a table cell."""
    return ", ".join(
        f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in setting.items()
    )


@dataclass
class Tuning:
    """What :func:`tune` tried and chose. ``trials``: one row per method and setting (its
    validation accuracy per tuning seed, mean and 95% interval, diverged runs, whether it was
    chosen); ``chosen``: method -> its chosen setting (a method whose every setting diverged
    has none, and is named in ``unchosen``)."""

    methods: list[Method]
    trials: pd.DataFrame
    chosen: dict[str, dict[str, Any]]
    unchosen: dict[str, str]
    budget: int
    seeds: list[int]
    student: str
    data: Dataset = field(repr=False)
    fit_kwargs: dict[str, Any] = field(repr=False)
    setting: str = ""

    def table(self) -> pd.DataFrame:
        """The trials as readable columns, one row per method and setting tried: the mean
        validation accuracy over the tuning seeds (what decides), each seed's, the diverged
        runs and the choice."""
        rows = []
        for _, t in self.trials.iterrows():
            rows.append({
                "method": t["method"],
                "setting": t["setting"],
                "mean val accuracy (%)": round(t["val_mean"], 2),
                "per seed": ", ".join(f"{v:.1f}" for v in t["per_seed"]),
                "diverged": f"{t['diverged']} of {len(self.seeds)}" if t["diverged"] else "",
                "chosen": "chosen" if t["chosen"] else "",
            })  # fmt: skip
        return pd.DataFrame(rows).set_index(["method", "setting"])

    def choices(self) -> pd.DataFrame:
        """One row per method: the budget, the chosen setting and its validation score."""
        return choices_table(self.methods, self.trials, self.unchosen)

    def best_so_far(self) -> pd.DataFrame:
        """Per method, the best mean validation accuracy among its first k settings tried,
        k = 1 .. budget (diverged settings count as tried, never as best): the curve of
        "Show Your Work" (Dodge et al. 2019)."""
        curves = {}
        for method in self.methods:
            scores = self.trials.loc[self.trials["method"] == method.name]
            best, curve = math.nan, []
            for _, t in scores.iterrows():
                if not t["diverged"] and not (t["val_mean"] <= best):
                    best = t["val_mean"]
                curve.append(best)
            curves[method.name] = curve
        frame = pd.DataFrame(curves, index=range(1, self.budget + 1))
        frame.index.name = "settings tried"
        return frame

    def plot(self, *, title: str) -> Any:
        """The best validation accuracy against the number of settings tried, per method."""
        from kdbook.plots import line_plot

        fig = line_plot(
            self.best_so_far(),
            title=title,
            xlabel="settings tried (the budget is the last)",
            ylabel="best mean validation accuracy (%)",
        )
        fig.axes[0].set_xticks(range(1, self.budget + 1))
        return fig

    def recipes(self) -> dict[str, dict[str, Any]]:
        """``fit``'s arguments of every chosen method but the student alone."""
        by_name = {m.name: m for m in self.methods}
        return {
            name: by_name[name].fit_arguments(setting)
            for name, setting in self.chosen.items()
            if name != SCRATCH
        }

    def compare(
        self,
        *,
        seeds: Sequence[int],
        baseline: str | None = None,
        data: Dataset | None = None,
        setting: str | None = None,
        **kwargs: Any,
    ) -> Comparison:
        """The final comparison: every chosen method (and the student alone, at its chosen
        setting) over ``seeds`` from identical weights, the test split read once. A method
        without a choice is left out, and :meth:`Tuning.choices` says why. ``data`` and
        ``setting``: run the same choices on another data set (09's all labels, tuned with
        few), labelled ``setting``."""
        if not self.student:
            raise ValueError(
                "this tuning is of a procedure (tune_procedure): train its chosen setting "
                "yourself, there is no fit recipe to compare"
            )
        data = self.data if data is None else data
        setting = self.setting if setting is None else setting
        alone = self.by_name(SCRATCH).fit_arguments(self.chosen.get(SCRATCH, {}))
        shared = {**self.fit_kwargs, **alone, **kwargs}
        recipes = self.recipes()
        if baseline is not None and baseline not in recipes:
            baseline = None  # it diverged at every setting: the comparison says so
        result = compare_methods(
            self.student, data, recipes, seeds=list(seeds), baseline=baseline,
            setting=setting, **shared,
        )  # fmt: skip
        if not self.unchosen:
            return result
        # A method without a choice stays in the tables, with no run and the reason.
        per_seed = result.per_seed.assign(**dict.fromkeys(self.unchosen, math.nan))
        methods = [m.name for m in self.methods if m.name != SCRATCH]
        final = Comparison.from_per_seed(
            per_seed, methods, baseline=baseline, setting=setting, diverged=result.diverged
        )
        final.models, final.excluded = (
            result.models,
            {
                name: f"no setting chosen in tuning ({why}); not run"
                for name, why in self.unchosen.items()
            },
        )
        return final

    def by_name(self, name: str) -> Method:
        return next(m for m in self.methods if m.name == name)

    def record(self) -> dict[str, Any]:
        """What results.json keeps of the tuning: budget, seeds, every trial and the choices."""
        trials = self.trials.drop(columns=["per_seed"])
        return tuning_record(self.budget, self.seeds, trials, self.chosen, self.unchosen)


def choices_table(
    methods: Sequence[Method],
    trials: pd.DataFrame,
    unchosen: Mapping[str, str],
    *,
    score: str = "val_mean",
    label: str = "mean val accuracy (%)",
    digits: int = 2,
) -> pd.DataFrame:
    """One row per method of a tuning's ``trials``: the budget, the chosen setting and its
    validation ``score`` (shown as ``label``, rounded to ``digits``), the diverged runs."""
    rows = {}
    for method in methods:
        tried = trials[trials["method"] == method.name]
        best = tried[tried["chosen"]]
        rows[method.name] = {
            "settings tried (budget)": len(tried),
            "chosen on validation": (
                best["setting"].iloc[0] if len(best) else unchosen[method.name]
            ),
            label: round(best[score].iloc[0], digits) if len(best) else "–",
            "diverged runs": int(tried["diverged"].sum()),
        }
    return pd.DataFrame(rows).T


def tuning_record(
    budget: int,
    seeds: Sequence[int],
    trials: pd.DataFrame,
    chosen: Mapping[str, Mapping[str, Any]],
    unchosen: Mapping[str, str],
) -> dict[str, Any]:
    """What results.json keeps of a tuning: budget, seeds, every trial and the choices."""
    return {
        "budget": budget,
        "tuning_seeds": list(seeds),
        "trials": trials.to_dict("records"),
        "chosen": {k: describe(v) for k, v in chosen.items()},
        "unchosen": dict(unchosen),
    }


def tune(
    student: str,
    data: Dataset,
    methods: Sequence[Method],
    *,
    budget: int,
    seeds: Sequence[int],
    setting: str = "",
    progress: bool = True,
    **fit_kwargs: Any,
) -> Tuning:
    """Try ``budget`` settings of every method over ``seeds`` and choose each method's best
    on the validation split (the test split is not read).

    Args:
        student: a registered model name.
        data: the data set (validation split included).
        methods: the methods, the student alone (:data:`~kdbook.compare.SCRATCH`) among them.
        budget: settings tried per method: the same for every method.
        seeds: the tuning seeds; a setting's score is its mean validation accuracy over them.
        setting: a label for the tables ("5% labels").
        **fit_kwargs: shared ``fit`` arguments (a method's setting overrides them).

    Returns:
        A :class:`Tuning`; its :meth:`~Tuning.compare` runs the final comparison.

    Raises:
        ValueError: a bad budget, search space or value (:func:`check_methods`), before any
            training.
    """
    check_methods(methods, budget)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one tuning seed, got []")
    drawn = {m.name: draw(m, budget) for m in methods}
    recipes, keys = {}, {}
    for method in methods:
        for i, choice in enumerate(drawn[method.name]):
            run = f"{method.name} [{i + 1}]"
            recipes[run] = method.fit_arguments(choice)
            keys[run] = (method.name, choice)
    label = f"tuning{', ' + setting if setting else ''}"
    runs = train_recipes(
        student, data, recipes, seeds=seeds, splits=("val",), setting=label, progress=progress,
        **fit_kwargs,
    )  # fmt: skip
    rows = []
    for run, (name, choice) in keys.items():
        scores = runs.per_seed[run]
        failed = len(runs.diverged.get(run, []))
        mean, ci = mean_ci(scores.tolist()) if not failed else (math.nan, math.nan)
        rows.append({
            "method": name, "setting": describe(choice), "val_mean": mean, "val_ci95": ci,
            "diverged": failed, "per_seed": scores.tolist(), "chosen": False,
        })  # fmt: skip
    trials = pd.DataFrame(rows)
    chosen, unchosen = choose_on_validation(trials, drawn, budget, "val_mean")
    return Tuning(
        list(methods), trials, chosen, unchosen, budget, seeds, student, data, dict(fit_kwargs),
        setting,
    )  # fmt: skip


def tune_procedure(
    name: str,
    space: Mapping[str, Sequence[Any]],
    train: Callable[..., tuple[Any, Any]],
    data: Dataset,
    *,
    budget: int,
    seeds: Sequence[int],
    device: str = "cpu",
    setting: str = "",
    progress: bool = True,
) -> Tuning:
    """The protocol of :func:`tune` for a method that is not one ``fit`` call (mutual
    learning, born-again generations): ``budget`` settings of ``space``, each trained over
    ``seeds`` by ``train(seeds=[...], **setting) -> [(model, history), ...]`` (one pair per
    seed, in order: the seeds may train side by side) and scored by the models' mean
    **validation** accuracy; a setting with a diverged run cannot be chosen.

    The result's tables (:meth:`Tuning.table`, :meth:`~Tuning.choices`,
    :meth:`~Tuning.best_so_far`) read like :func:`tune`'s; its ``chosen[name]`` is the
    setting the final runs use (the notebook trains them: :meth:`Tuning.compare` has no
    ``fit`` recipe to run and refuses).

    Raises:
        ValueError: a budget below 1, an empty or too small space, or a setting ``train``
            does not take, before any training.
    """
    from kdbook.evaluate import accuracy, predict
    from kdbook.paired_runs import chance_accuracy, diverged

    method = Method(name, space)
    check_budget(budget)
    accepted = set(inspect.signature(train).parameters) - {"seeds"}
    check_space(method, budget, accepted, f"{sorted(accepted)}")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one tuning seed, got []")
    drawn = {name: draw(method, budget)}
    chance = chance_accuracy(data.val.labels)
    label = f"tuning {name}{', ' + setting if setting else ''}"
    bar = tqdm(total=budget * len(seeds), desc=label, disable=not progress)
    rows = []
    for choice in drawn[name]:
        scores, failed = [], 0
        runs = train(seeds=seeds, **choice)
        if len(runs) != len(seeds):
            raise ValueError(f"{name}: train returned {len(runs)} runs for {len(seeds)} seeds")
        for model, history in runs:
            val = accuracy(predict(model, data, "val", device), data.val.labels)
            if diverged(history, val, chance):
                failed, val = failed + 1, math.nan
            scores.append(val)
            bar.update()
        mean, ci = mean_ci(scores) if not failed else (math.nan, math.nan)
        rows.append({
            "method": name, "setting": describe(choice), "val_mean": mean, "val_ci95": ci,
            "diverged": failed, "per_seed": scores, "chosen": False,
        })  # fmt: skip
    bar.close()
    trials = pd.DataFrame(rows)
    chosen, unchosen = choose_on_validation(trials, drawn, budget, "val_mean")
    return Tuning([method], trials, chosen, unchosen, budget, seeds, "", data, {}, setting)


def choose_on_validation(
    trials: pd.DataFrame,
    drawn: Mapping[str, Sequence[dict[str, Any]]],
    budget: int,
    score: str,
    *,
    lower_is_better: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Mark each method's best trial ``chosen`` (the highest ``score``, or the lowest with
    ``lower_is_better``; a trial with a diverged run is never chosen; the first of equals in
    the draw's order) and return ``(chosen settings, why a method has none)``.

    ``trials`` has a row per method and setting, in the order of ``drawn[method]``, with the
    columns ``method``, ``diverged``, ``chosen`` and ``score``.
    """
    chosen, unchosen = {}, {}
    for name in drawn:
        mine = trials[(trials["method"] == name) & (trials["diverged"] == 0)]
        if mine.empty:
            unchosen[name] = f"none: diverged at every one of its {budget} settings"
            continue
        best = mine[score].idxmin() if lower_is_better else mine[score].idxmax()
        trials.loc[best, "chosen"] = True
        chosen[name] = drawn[name][_position(trials, best)]
    return chosen, unchosen


def _position(trials: pd.DataFrame, row: int) -> int:
    """The index, within its method's draw, of a trials row."""
    method = trials.loc[row, "method"]
    return list(trials.index[trials["method"] == method]).index(row)
