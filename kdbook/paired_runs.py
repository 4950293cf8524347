"""Paired runs: one student per seed, copied once per recipe, every copy of a seed from the
same weights, trained (side by side where they stack, :mod:`kdbook.stack`) and measured.

The machinery under :func:`kdbook.compare.compare_methods` and :func:`kdbook.tuning.tune`:
the plan (what stacks, what trains alone, the time estimate) and the rule that names a run
that diverged (:func:`diverged`), so that no verdict averages it.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.config import default
from kdbook.data import Dataset
from kdbook.evaluate import accuracy, predict
from kdbook.models import build_model
from kdbook.stack import TRAIN_DATA as TRAIN_DATA
from kdbook.train import TimeEstimate

SECONDS = " s/epoch"  # per_seed column suffix: a run's mean seconds per epoch
CHANCE_MARGIN = 5.0  # points above chance at or below which a run's end counts as diverged


def first_layer_norm(model: nn.Module) -> float:
    """Norm of the first weight tensor: equal numbers show two models start alike.

    Introduced in notebook 05_distillation.
    """
    return next(p for p in model.parameters() if p.dim() > 1).norm().item()


@dataclass
class Runs:
    """What :func:`train_recipes` trained: ``per_seed`` (indexed by seed: ``init_norm``, one
    accuracy column per run and split, its seconds per epoch when it trained alone), the
    runs that diverged (:func:`diverged`: ``{run: [seeds]}``, their accuracies NaN in
    ``per_seed``), and the models when kept (``{seed: {run: model}}``)."""

    per_seed: pd.DataFrame
    diverged: dict[str, list[int]]
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)


def chance_accuracy(labels: torch.Tensor) -> float:
    """The accuracy (%) of always answering the most frequent class of ``labels``."""
    labels = labels[labels >= 0]
    return 100.0 * torch.bincount(labels).max().item() / max(len(labels), 1)


def diverged(history: Any, val_accuracy: float, chance: float) -> bool:
    """A run diverged when a training loss went non-finite, or its validation accuracy ends
    at or below ``chance`` + :data:`CHANCE_MARGIN` points (one constant answer, or close)."""
    losses = [e.get("train_loss", 0.0) for e in history.epochs]
    return not all(math.isfinite(x) for x in losses) or not val_accuracy > chance + CHANCE_MARGIN


def train_recipes(
    student: str,
    data: Dataset,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    splits: Sequence[str] = ("test",),
    setting: str = "",
    progress: bool = True,
    keep_models: bool = False,
    stack: bool = True,
    **fit_kwargs: Any,
) -> Runs:
    """Train one copy of ``student`` per recipe and seed, every copy of a seed from the same
    weights, and measure each on ``splits`` (``("val",)`` while tuning: the test split
    unread). The machinery of :func:`kdbook.compare.compare_methods` (its plan, what stacks,
    the time estimate); a run that :func:`diverged` is named in ``Runs.diverged`` and its
    accuracies are NaN, never a number averaged into a verdict. A recipe may train on its own
    data (``{TRAIN_DATA: dataset}``, the same validation and test splits), side by side with
    the others too."""
    for name, recipe in recipes.items():
        own = recipe.get(TRAIN_DATA)
        if own is not None and not (own.val is data.val and own.test is data.test):
            raise ValueError(
                f"{name}: its {TRAIN_DATA} must share the comparison's validation and test "
                "splits (change only the training split)"
            )
    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    if not splits or not set(splits) <= {"val", "test"}:
        raise ValueError(f"splits must name 'val' and/or 'test', got {splits!r}")
    fit_kwargs.setdefault("progress", False)
    plan = _Plan(student, data, recipes, seeds, fit_kwargs, stack)
    if progress:
        print(plan.describe(setting))
    rows: dict[int, dict[str, Any]] = {}
    models: dict[int, dict[str, nn.Module]] = {}
    failed: dict[str, list[int]] = {}
    chance = chance_accuracy(data.val.labels)
    desc = f"{setting}: runs" if setting else "runs"
    bar = tqdm(total=len(seeds) * len(recipes), desc=desc, disable=not progress)
    main = "test" if "test" in splits else "val"  # the split whose accuracy is the run's column

    def record(run: _Run, history: Any) -> None:
        row = rows[run.seed]
        accuracies = {
            split: accuracy(
                predict(run.model, data, split, plan.device), getattr(data, split).labels
            )
            for split in splits
        }
        val = accuracies.get("val", history.epochs[-1].get("val_acc", math.inf))
        if diverged(history, val, chance):
            failed.setdefault(run.name, []).append(run.seed)
            accuracies = dict.fromkeys(accuracies, math.nan)
        for split, acc in accuracies.items():
            row[run.name if split == main else f"{run.name} ({split})"] = acc
        row[f"{run.name}{SECONDS}"] = statistics.fmean(e["seconds"] for e in history.epochs)
        if keep_models:
            models.setdefault(run.seed, {})[run.name] = run.model
        bar.update()

    stacked: list[_Run] = []
    for seed in seeds:
        torch.manual_seed(seed)
        init = build_model(student, data)
        rows[seed] = {"seed": seed, "init_norm": first_layer_norm(init)}
        for name, extra in recipes.items():
            run = _Run(seed, name, copy.deepcopy(init), {**fit_kwargs, **extra, "seed": seed})
            loss = run.kwargs.get("feature_loss")
            if loss is not None and not isinstance(loss, nn.Module):
                run.kwargs["feature_loss"] = loss()  # a fresh adapter for this seed
            if plan.stacked(name):
                stacked.append(run)
                torch.manual_seed(seed)  # the global RNG as the run's own fit would leave it
                continue
            record(run, plan.fit(run))
    for group in plan.groups(stacked):
        for run, history in zip(group, plan.fit_stack(group, progress, setting), strict=True):
            record(run, history)
    bar.close()
    per_seed = pd.DataFrame([rows[seed] for seed in seeds]).set_index("seed")
    if stacked:  # runs that shared a step have no time of their own
        per_seed = per_seed.drop(columns=[c for c in per_seed.columns if c.endswith(SECONDS)])
    return Runs(per_seed, {name: sorted(s) for name, s in failed.items()}, models)


def seconds_alone(
    student: str,
    data: Dataset,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    epochs: int = 2,
    **fit_kwargs: Any,
) -> pd.Series:
    """Seconds per epoch of one run of each recipe trained alone, from the same initial
    weights: what a method costs, where its comparison trained side by side and its runs
    shared their steps. Each run trains ``epochs`` epochs; the last one's seconds are kept
    (the first also pays set-up: a teacher's table of views, checks). A feature loss given
    as a class or factory is built afresh, as in :func:`train_recipes`.

    Introduced in notebook 10_vit_to_resnet.
    """
    from kdbook.train import fit

    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    seconds = {}
    for name, recipe in recipes.items():
        recipe = dict(recipe)
        loss = recipe.get("feature_loss")
        if loss is not None and not isinstance(loss, nn.Module):
            recipe["feature_loss"] = loss()
        torch.manual_seed(seed)
        model = build_model(student, data)
        kwargs = {**fit_kwargs, **recipe, "num_epochs": epochs, "seed": seed, "progress": False}
        history = fit(
            model,
            recipe.pop(TRAIN_DATA, data),
            **{k: v for k, v in kwargs.items() if k != TRAIN_DATA},
        )
        seconds[name] = history.epochs[-1]["seconds"]
    return pd.Series(seconds, name="s / epoch, one run alone")


@dataclass
class _Run:
    seed: int
    name: str
    model: nn.Module
    kwargs: dict[str, Any]


class _Plan:
    """Which recipes of a comparison train side by side (:mod:`kdbook.stack`), which alone."""

    def __init__(self, student, data, recipes, seeds, fit_kwargs, stack: bool) -> None:
        from kdbook.stack import why_not_stacked
        from kdbook.stack_features import why_adapters_not_stacked

        self.student, self.data, self.seeds = student, data, seeds
        self.epochs = fit_kwargs.get("num_epochs", default("num_epochs"))
        self.device = fit_kwargs.get("device", "cpu")
        probe = build_model(student, data)
        self.reasons = {
            name: why_not_stacked(probe, {**fit_kwargs, **extra}) if stack else "stack=False"
            for name, extra in recipes.items()
        }
        runs = {name: {**fit_kwargs, **extra} for name, extra in recipes.items()}
        for name, kw in runs.items():  # one adapter module for several runs: seeds, recipes
            same = [r for r in runs.values() if r.get("feature_loss") is kw.get("feature_loss")]
            self.reasons[name] = self.reasons[name] or why_adapters_not_stacked(same * len(seeds))
        if len(seeds) * sum(r is None for r in self.reasons.values()) < 2:
            self.reasons = {name: r or "one run" for name, r in self.reasons.items()}
        self.alone = sum(r is not None for r in self.reasons.values()) * len(seeds)
        self.timed = False

    def stacked(self, name: str) -> bool:
        return self.reasons[name] is None

    def describe(self, setting: str) -> str:
        """The plan in one line: models x seeds x epochs on which device, and how."""
        together = len(self.seeds) * len(self.reasons) - self.alone
        line = (
            f"{setting or 'comparison'}: {len(self.reasons)} recipes x {len(self.seeds)} seeds "
            f"of {self.student}, {self.epochs} epochs each on {self.device}"
        )
        if together:
            line += f"; {together} runs side by side"
        alone = {name: r for name, r in self.reasons.items() if r is not None}
        if alone and together:
            why = "; ".join(f"{name!r}: {r}" for name, r in alone.items())
            line += f"; {self.alone} one at a time ({why})"
        return line

    def fit(self, run: _Run) -> Any:
        """One run alone; the first one says how long the runs alone will take."""
        from kdbook.train import fit

        kwargs = dict(run.kwargs)
        data = kwargs.pop(TRAIN_DATA, self.data)  # a recipe's own training images or labels
        if not self.timed and kwargs.get("progress") is False:
            kwargs["hooks"] = [*kwargs.get("hooks", ()), TimeEstimate(self.alone, self.epochs)]
            self.timed = True
        return fit(run.model, data, **kwargs)

    def groups(self, runs: list[_Run]) -> list[list[_Run]]:
        """The stacked runs by architecture and shared settings, in order."""
        from kdbook.stack import stack_key

        groups: dict[tuple, list[_Run]] = {}
        for run in runs:
            groups.setdefault(stack_key(run.model, run.kwargs), []).append(run)
        return list(groups.values())

    def fit_stack(self, group: list[_Run], progress: bool, setting: str) -> list[Any]:
        """The runs side by side; one at a time (same result) where vmap refuses the model."""
        from kdbook.stack import SHARED_KEYWORDS, NotStackable, fit_stacked

        shared = {k: group[0].kwargs[k] for k in SHARED_KEYWORDS if k in group[0].kwargs}
        own = [{k: v for k, v in r.kwargs.items() if k not in shared} for r in group]
        desc = f"{setting}: {len(group)} runs side by side" if setting else None
        try:
            return fit_stacked(
                [r.model for r in group], self.data, own, progress=progress, desc=desc,
                announce=progress, **shared,
            )  # fmt: skip
        except NotStackable as e:
            print(f"kdbook: {len(group)} runs train one at a time instead ({e})")
            return [self.fit(run) for run in group]
