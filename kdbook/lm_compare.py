"""Fair comparisons of language-model students, in bits per character.

The image chapters' protocol (:mod:`kdbook.tuning`, :mod:`kdbook.compare`) for
:func:`kdbook.train.fit_lm`: each method (a :class:`kdbook.tuning.Method`: its search space
over ``lr``, ``temperature``, ``alpha``, and its fixed ``fit_lm`` arguments such as the
teacher's logits or text) gets the same budget of settings, scored by the mean validation
bits per character over the tuning seeds (lower is better); the final runs train every
method at its chosen setting from the same initial weights per seed and read the test split
once. A run whose training loss went non-finite, or whose validation score is no better
than guessing every character uniformly (``log2(vocab_size)`` bits), diverged: it is named
and never averaged. A method's gain is the bits per character it saves over the student
alone, seed by seed, with its 95 % interval; the verdict words are :mod:`kdbook.stats`'s.

Introduced in notebook 15_language_model_kd.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.compare import SCRATCH
from kdbook.evaluate import lm_logits, lm_metrics
from kdbook.models import build_model
from kdbook.paired_runs import first_layer_norm
from kdbook.stats import finite_mean_ci, format_interval, method_verdict
from kdbook.text import TextData, tiled_windows
from kdbook.train import fit_lm
from kdbook.tuning import Method, check_methods, describe, draw


def lm_diverged(history: Any, val_bpc: float, vocab_size: int) -> bool:
    """A language model diverged when a training loss went non-finite or its validation
    bits per character are no better than a uniform guess (``log2(vocab_size)``)."""
    losses = [e["train_loss"] for e in history.epochs]
    return not all(math.isfinite(x) for x in losses) or not val_bpc < math.log2(vocab_size)


def split_bpc(model: nn.Module, data: TextData, split: str, device: str = "cpu") -> float:
    """Bits per character of ``model`` on every window of a split (read once)."""
    x, y = tiled_windows(data.split(split), model.context)
    return lm_metrics(lm_logits(model, x, device=device), y)["bpc"]


@dataclass
class LMRuns:
    """What :func:`train_lm_recipes` trained: ``per_seed`` (indexed by seed: ``init_norm``
    and one bits-per-character column per run, NaN for a diverged run), the diverged runs
    ``{run: [seeds]}`` and, when kept, the models ``{seed: {run: model}}``."""

    per_seed: pd.DataFrame
    diverged: dict[str, list[int]]
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)


def train_lm_recipes(
    student: str,
    data: TextData,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    context: int,
    split: str = "test",
    keep_models: bool = False,
    progress: bool = True,
    desc: str = "runs",
    **shared: Any,
) -> LMRuns:
    """Train one copy of ``student`` per recipe (``fit_lm``'s arguments) and seed, every copy
    of a seed from the same weights (built after ``torch.manual_seed(seed)``), and score each
    on ``split`` in bits per character. ``shared``: ``fit_lm`` arguments of every run."""
    if not seeds:
        raise ValueError("seeds must name at least one seed, got []")
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    device = shared.get("device", "cpu")
    rows, models, failed = {}, {}, {}
    bar = tqdm(total=len(seeds) * len(recipes), desc=desc, disable=not progress)
    for seed in seeds:
        torch.manual_seed(seed)
        init = build_model(student, data, context=context)
        rows[seed] = {"seed": seed, "init_norm": first_layer_norm(init)}
        for name, recipe in recipes.items():
            model = copy.deepcopy(init)
            history = fit_lm(model, data, **{**shared, **recipe, "seed": seed, "progress": False})
            val = history.final["val_bpc"]
            score = val if split == "val" else split_bpc(model, data, split, device)
            if lm_diverged(history, val, data.vocab_size):
                failed.setdefault(name, []).append(seed)
                score = math.nan
            rows[seed][name] = score
            if keep_models:
                models.setdefault(seed, {})[name] = model
            bar.update()
    bar.close()
    per_seed = pd.DataFrame([rows[s] for s in seeds]).set_index("seed")
    return LMRuns(per_seed, failed, models)


def bits_saved(per_seed: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Per method: bits per character (mean, 95 % interval, runs kept) and the bits it saves
    over :data:`~kdbook.compare.SCRATCH` seed by seed (mean and interval; positive: the
    method is better), with the verdict in words."""
    rows = {}
    for name in methods:
        bpc, bpc_ci = finite_mean_ci(per_seed[name].tolist())
        row = {"bpc": bpc, "bpc_ci95": bpc_ci, "n": int(per_seed[name].notna().sum())}
        if name != SCRATCH:
            saved, saved_ci = finite_mean_ci((per_seed[SCRATCH] - per_seed[name]).tolist())
            row |= {"saved": saved, "saved_ci95": saved_ci,
                    "verdict": method_verdict(name, saved, saved_ci)}  # fmt: skip
        rows[name] = row
    return pd.DataFrame(rows).T


@dataclass
class LMComparison:
    """Students alone and distilled, from the same weights per seed, scored on one split."""

    per_seed: pd.DataFrame
    diverged: dict[str, list[int]]
    methods: list[str]
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)

    @property
    def summary(self) -> pd.DataFrame:
        return bits_saved(self.per_seed, self.methods)

    def table(self) -> pd.DataFrame:
        """One readable row per method: bits per character and bits saved, each as mean ± 95 %
        interval, the verdict and the diverged runs."""
        s, rows = self.summary, []
        for name in self.methods:
            r = s.loc[name]
            rows.append({
                "method": name,
                "bits per character": format_interval(r["bpc"], r["bpc_ci95"], unit="", digits=3),
                "bits saved vs alone": "(reference)" if name == SCRATCH else format_interval(
                    r["saved"], r["saved_ci95"], signed=True, unit="", digits=3),
                "verdict": "" if name == SCRATCH else r["verdict"],
                "diverged": ", ".join(f"seed {x}" for x in self.diverged.get(name, [])),
            })  # fmt: skip
        return pd.DataFrame(rows).set_index("method")

    def verdict(self, method: str) -> str:
        """The method's verdict against the student alone, naming diverged runs."""
        word = self.summary.loc[method, "verdict"]
        out = [f"seed {x}" for x in self.diverged.get(method, [])]
        return f"{word} ({len(out)} diverged run(s) left out: {', '.join(out)})" if out else word


def compare_lm(
    student: str,
    data: TextData,
    recipes: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    context: int,
    keep_models: bool = False,
    progress: bool = True,
    **shared: Any,
) -> LMComparison:
    """The final comparison: ``recipes`` (the student alone under
    :data:`~kdbook.compare.SCRATCH` among them) over ``seeds`` from identical weights, scored
    once on the test split."""
    if SCRATCH not in recipes:
        raise ValueError(f"recipes must include the student alone, {SCRATCH!r}")
    runs = train_lm_recipes(
        student, data, recipes, seeds=seeds, context=context, split="test",
        keep_models=keep_models, progress=progress, desc="final runs", **shared,
    )  # fmt: skip
    return LMComparison(runs.per_seed, runs.diverged, list(recipes), runs.models)


@dataclass
class LMTuning:
    """What :func:`tune_lm` tried (``trials``: one row per method and setting, its mean
    validation bits per character, diverged runs, whether chosen) and chose."""

    methods: list[Method]
    trials: pd.DataFrame
    chosen: dict[str, dict[str, Any]]
    unchosen: dict[str, str]
    budget: int
    seeds: list[int]

    def recipes(self) -> dict[str, dict[str, Any]]:
        """``fit_lm``'s arguments of every method at its chosen setting."""
        return {m.name: m.fit_arguments(self.chosen[m.name]) for m in self.methods
                if m.name in self.chosen}  # fmt: skip

    def choices(self) -> pd.DataFrame:
        """One row per method: settings tried (the budget), the choice and its score."""
        rows = {}
        for method in self.methods:
            tried = self.trials[self.trials["method"] == method.name]
            best = tried[tried["chosen"]]
            rows[method.name] = {
                "settings tried (budget)": len(tried),
                "chosen on validation": best["setting"].iloc[0] if len(best)
                else self.unchosen[method.name],
                "mean val bits per character": round(best["val_bpc"].iloc[0], 3) if len(best)
                else "–",
                "diverged runs": int(tried["diverged"].sum()),
            }  # fmt: skip
        return pd.DataFrame(rows).T


def tune_lm(
    student: str,
    data: TextData,
    methods: Sequence[Method],
    *,
    budget: int,
    seeds: Sequence[int],
    context: int,
    progress: bool = True,
    **shared: Any,
) -> LMTuning:
    """Try ``budget`` settings of every method (:func:`kdbook.tuning.draw`: the same number
    for each) over the tuning ``seeds`` and choose each method's lowest mean validation bits
    per character (the test split unread; a setting with a diverged run cannot be chosen).

    Raises:
        ValueError: a bad budget or search space (:func:`kdbook.tuning.check_methods`),
            before any training.
    """
    check_methods(methods, budget)
    seeds = list(seeds)
    drawn = {m.name: draw(m, budget) for m in methods}
    recipes, keys = {}, {}
    for method in methods:
        for i, choice in enumerate(drawn[method.name]):
            recipes[f"{method.name} [{i + 1}]"] = method.fit_arguments(choice)
            keys[f"{method.name} [{i + 1}]"] = (method.name, choice)
    runs = train_lm_recipes(
        student, data, recipes, seeds=seeds, context=context, split="val", progress=progress,
        desc="tuning runs", **shared,
    )  # fmt: skip
    rows = []
    for run, (name, choice) in keys.items():
        failed = len(runs.diverged.get(run, []))
        score = runs.per_seed[run].mean() if not failed else math.nan
        rows.append({"method": name, "setting": describe(choice), "val_bpc": score,
                     "diverged": failed, "chosen": False})  # fmt: skip
    trials = pd.DataFrame(rows)
    chosen, unchosen = {}, {}
    for method in methods:
        mine = trials[(trials["method"] == method.name) & (trials["diverged"] == 0)]
        if mine.empty:
            unchosen[method.name] = f"none: diverged at every one of its {budget} settings"
            continue
        best = mine["val_bpc"].idxmin()  # the first of equals: the draw's order
        trials.loc[best, "chosen"] = True
        position = list(trials.index[trials["method"] == method.name]).index(best)
        chosen[method.name] = drawn[method.name][position]
    return LMTuning(list(methods), trials, chosen, unchosen, budget, seeds)
