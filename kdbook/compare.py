"""Honest comparisons: the student alone and with each method, from the same weights per seed.

For each seed the student is built once (after ``torch.manual_seed(seed)``); the run alone
("scratch") and one run per method train copies of those weights with the same
:func:`kdbook.train.fit`. A :class:`Comparison` holds the test accuracy of every run per
seed and reports mean and 95% interval (Student's t) over seeds, the paired gain over
scratch (and over a baseline method), verdicts in words and the training cost.

>>> mean_ci([93.0, 94.0, 95.0])
(94.0, 2.484...)
>>> relative_verdict(1.5, 0.5, than="logit KD"), relative_verdict(0.2, 0.5)
('better than logit KD', 'inside seed noise')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from kdbook.data import Dataset
from kdbook.paired_runs import SECONDS as SECONDS
from kdbook.paired_runs import Runs as Runs
from kdbook.paired_runs import first_layer_norm as first_layer_norm
from kdbook.paired_runs import seconds_alone as seconds_alone
from kdbook.paired_runs import train_recipes
from kdbook.stats import ACCURACY_RANGE, finite_mean_ci, format_interval, method_verdict, verdict
from kdbook.stats import mean_ci as mean_ci
from kdbook.stats import relative_verdict as relative_verdict

SCRATCH = "student (scratch)"  # the student trained alone: every comparison's reference
KD = "student (KD)"  # the one method of :func:`compare`
GAIN = "gain (KD - scratch)"  # :func:`compare`'s per-seed difference
REFERENCE = "(reference)"  # a table's cell comparing a run with itself


def summarize(per_seed: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean, 95% interval and n over seeds for each of ``columns``."""
    rows = {}
    for col in columns:
        mean, ci = finite_mean_ci(per_seed[col].tolist())
        rows[col] = {"mean": mean, "ci95": ci, "n": int(per_seed[col].notna().sum())}
    return pd.DataFrame(rows).T.astype({"n": int})


def summarize_methods(
    per_seed: pd.DataFrame, methods: Sequence[str], baseline: str | None = None
) -> pd.DataFrame:
    """Per method: accuracy mean and 95% interval, paired gains, seconds per epoch.

    ``per_seed`` has one accuracy column per method (:data:`SCRATCH` among them) and, when
    each has one, its ``"<method> s/epoch"`` column. The result, indexed by method, has
    ``accuracy``, ``accuracy_ci95``, ``gain_vs_scratch`` (paired, seed by seed) and its
    ``_ci95``, the same over ``baseline`` (``gain_vs_<baseline>``) when one is named, and
    ``s_per_epoch`` with ``time_ratio_vs_scratch`` when the seconds are there.
    """
    needed = [SCRATCH, *methods, *([baseline] if baseline else [])]
    missing = [m for m in needed if m not in per_seed.columns]
    if missing:
        raise ValueError(f"per_seed must have a column per method, missing {missing}")
    timed = all(f"{m}{SECONDS}" in per_seed.columns for m in [SCRATCH, *methods])
    summary = []
    for name in methods:
        acc, acc_ci = finite_mean_ci(per_seed[name].tolist())
        gain, gain_ci = finite_mean_ci((per_seed[name] - per_seed[SCRATCH]).tolist())
        entry = {
            "method": name,
            "accuracy": acc,
            "accuracy_ci95": acc_ci,
            "gain_vs_scratch": gain,
            "gain_vs_scratch_ci95": gain_ci,
        }
        if baseline is not None:
            vs, vs_ci = finite_mean_ci((per_seed[name] - per_seed[baseline]).tolist())
            entry |= {f"gain_vs_{baseline}": vs, f"gain_vs_{baseline}_ci95": vs_ci}
        if timed:
            seconds = per_seed[f"{name}{SECONDS}"].mean()
            entry |= {
                "s_per_epoch": seconds,
                "time_ratio_vs_scratch": seconds / per_seed[f"{SCRATCH}{SECONDS}"].mean(),
            }
        entry["n"] = int(per_seed[name].notna().sum())  # runs that did not diverge
        summary.append(entry)
    return pd.DataFrame(summary).set_index("method")


def paired_gain(with_it: pd.Series, without_it: pd.Series) -> tuple[pd.Series, float, float]:
    """``with_it - without_it`` seed by seed, its mean and 95% half-width (:func:`mean_ci`
    over the seeds where both runs finished: a diverged run's NaN is left out)."""
    diff = with_it - without_it
    gain, ci95 = finite_mean_ci(diff.tolist())
    return diff, gain, ci95


def paired(
    table: pd.DataFrame,
    measure: str,
    first: tuple,
    second: tuple,
    *,
    by: Sequence[str] = ("run", "when", "seed"),
) -> str:
    """``first - second`` of ``measure``, seed by seed, in words: mean, 95% interval, verdict.

    ``table`` holds one row per run and seed (columns ``by``, the last one the seed);
    ``first`` and ``second`` name two runs by the other columns, e.g. ``(KD, "after")``
    (notebook 13's class bias). :meth:`Comparison.differences` is the same rule for the runs
    of a comparison.

    Returns:
        e.g. ``'+2.1 ± 1.3 points -> better'``.
    """
    values = table.set_index(list(by))[measure].sort_index()
    _, gain, ci95 = paired_gain(values.loc[first], values.loc[second])
    verdict_words = relative_verdict(gain, ci95)
    return f"{format_interval(gain, ci95, signed=True, unit=' points')} -> {verdict_words}"


@dataclass
class Comparison:
    """Paired runs over seeds from the same initial weights: the student alone and methods.

    ``per_seed`` is indexed by seed, one test-accuracy column per run (and ``init_norm``,
    the shared start's fingerprint). ``summary`` is :func:`compare`'s mean/ci95/n table
    (rows scratch, KD, gain) or :func:`compare_methods`' per-method table
    (:func:`summarize_methods`). ``setting`` names the data setting ("5% labels"),
    ``baseline`` the method the others are also measured against. ``models``, when the
    comparison kept them (``keep_models=True``): the trained runs, ``{seed: {run: model}}``.
    ``diverged``: the runs that diverged, ``{run: [seeds]}`` (NaN in ``per_seed``, left out
    of every mean and named in every verdict).
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    setting: str = ""
    baseline: str | None = None
    models: dict[int, dict[str, nn.Module]] = field(default_factory=dict, repr=False)
    diverged: dict[str, list[int]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # method -> why it has no runs

    @classmethod
    def from_per_seed(
        cls,
        per_seed: pd.DataFrame,
        methods: Sequence[str],
        *,
        baseline: str | None = None,
        setting: str = "",
        diverged: Mapping[str, Sequence[int]] | None = None,
    ) -> Comparison:
        """A comparison of runs gathered by hand (e.g. joined from several comparisons)."""
        methods = [SCRATCH, *(m for m in methods if m != SCRATCH)]
        summary = summarize_methods(per_seed, methods, baseline)
        failed = {k: list(v) for k, v in (diverged or {}).items()}
        return cls(per_seed, summary, setting, baseline, diverged=failed)

    @property
    def _pair(self) -> bool:
        return GAIN in self.summary.index  # compare()'s face

    @property
    def methods(self) -> list[str]:
        """The compared runs, scratch first."""
        return [SCRATCH, KD] if self._pair else list(self.summary.index)

    def stats(self) -> pd.DataFrame:
        """The per-method table of :func:`summarize_methods` (computed for compare's face)."""
        if self._pair:
            return summarize_methods(self.per_seed, self.methods, self.baseline)
        return self.summary

    def intervals(self) -> pd.DataFrame:
        """Accuracy ``mean`` and ``ci95`` per method, as :func:`kdbook.plots.interval_plot`
        takes them (with ``per_seed``)."""
        return self.stats().rename(columns={"accuracy": "mean", "accuracy_ci95": "ci95"})

    def plot(self, *, title: str, xlabel: str = "test accuracy (%)") -> Any:
        """Each seed as a dot and each run's mean with its 95% interval, one row per run
        (:func:`kdbook.plots.interval_plot`); returns the matplotlib figure."""
        from kdbook.plots import interval_plot

        return interval_plot(self.per_seed, self.intervals(), title=title, xlabel=xlabel)

    def _gain(self, method: str) -> tuple[float, float]:
        if self._pair:
            return tuple(self.summary.loc[GAIN, ["mean", "ci95"]])  # type: ignore[return-value]
        row = self.summary.loc[method]
        return row["gain_vs_scratch"], row["gain_vs_scratch_ci95"]

    def _method(self, method: str | None) -> str:
        others = [m for m in self.methods if m != SCRATCH]
        if method is None:
            if len(others) != 1:
                raise ValueError(f"method must be named, one of {others}, got None")
            return others[0]
        if method not in self.methods:
            raise ValueError(f"method must be one of {self.methods}, got {method!r}")
        return method

    def _label(self, method: str) -> str:
        """The ``setting`` of a method's rows: compare's own setting, else the method's name
        (followed by the setting, when the comparison has one)."""
        if self._pair:
            return self.setting
        return f"{method}, {self.setting}" if self.setting else method

    def row(self, method: str | None = None) -> dict[str, float | int | str]:
        """One flat row for results.json ("comparisons"): ``method`` (default: the only one)
        against scratch, and, where the comparison has a baseline method, against it too
        (``reference``, ``vs_reference_mean``, ``vs_reference_ci95``, ``vs_reference``:
        better, worse or inside seed noise). Its ``setting`` is the comparison's setting for
        :func:`compare`, the method's name (with the setting after a comma, when there is
        one) otherwise."""
        method = self._method(method)
        s = self.stats()
        name = "KD" if self._pair else method
        gain, ci95 = self._gain(method)
        caveats = [self.diverged_note(m) for m in (SCRATCH, method) if self.diverged_note(m)]
        if math.isnan(ci95) and method not in self.excluded:
            caveats.append("one seed: no interval")
        row = {
            "setting": self._label(method),
            "method": name,
            "baseline": "student alone",
            "split": "test",
            "num_seeds": len(self.per_seed),
            "scratch_mean": s.loc[SCRATCH, "accuracy"],
            "scratch_ci95": s.loc[SCRATCH, "accuracy_ci95"],
            "kd_mean": s.loc[method, "accuracy"],
            "kd_ci95": s.loc[method, "accuracy_ci95"],
            "gain_mean": gain,
            "gain_ci95": ci95,
            "verdict": method_verdict(name, gain, ci95),
            "caveat": "; ".join(caveats),
        }
        if self.baseline is not None and method != self.baseline:
            # the notebook's own reference method, beside the student alone
            versus = s.loc[method, f"gain_vs_{self.baseline}"]
            versus_ci95 = s.loc[method, f"gain_vs_{self.baseline}_ci95"]
            row |= {
                "reference": self.baseline,
                "vs_reference_mean": versus,
                "vs_reference_ci95": versus_ci95,
                "vs_reference": relative_verdict(versus, versus_ci95),
            }
        return row

    def rows(self) -> list[dict[str, float | int | str]]:
        """:meth:`row` for every method but scratch, in order."""
        return [self.row(m) for m in self.methods if m != SCRATCH]

    def seed_rows(self) -> list[dict[str, float | int | str]]:
        """One flat row per method and seed (test accuracies, percent), for results and sweep
        tables."""
        return [
            {
                "setting": self._label(m),
                "seed": int(seed),
                "scratch_test_accuracy": row[SCRATCH],
                "kd_test_accuracy": row[m],
                "gain": row[GAIN] if self._pair else row[m] - row[SCRATCH],
            }
            for m in self.methods
            if m != SCRATCH
            for seed, row in self.per_seed.iterrows()
        ]

    def verdict(self, method: str | None = None) -> str:
        """Plain words for a method's gain over scratch: helps, inside seed noise, or hurts."""
        method = self._method(method)
        gain, ci = self._gain(method)
        failed = self.diverged_note(method)
        if math.isnan(gain):
            return failed or "no run finished: nothing to judge"
        prefix = f"{failed}; on the others: " if failed else ""
        if math.isnan(ci):
            return (
                f"{prefix}one seed, no interval: gain {gain:+.1f} points (run more seeds to judge)"
            )
        word = verdict(gain, ci)
        relation = "includes" if word == "inside seed noise" else "excludes"
        return f"{prefix}{word}: gain {gain:+.1f} ± {ci:.1f} points {relation} 0"

    def diverged_note(self, method: str) -> str:
        """``'DKD diverged on 7 of 10 seeds (1, 2, ...)'`` for a method (or scratch) with
        diverged runs, why it has no runs when it was left out (:attr:`excluded`), else
        ``''``."""
        if method in self.excluded:
            return f"{method}: {self.excluded[method]}"
        seeds = self.diverged.get(method, [])
        if not seeds:
            return ""
        listed = ", ".join(str(s) for s in seeds)
        return f"{method} diverged on {len(seeds)} of {len(self.per_seed)} seeds ({listed})"

    def verdicts(self, *, key: str | None = None) -> dict[str, dict]:
        """Per run: the verdict against scratch in the method's name (``"vs_scratch"``:
        ``"DKD helps"``, ``"KD hurts"``, ``"inside seed noise"``) and, with a baseline,
        against it under ``key`` (default ``"vs_<baseline>"``), in the words of
        :func:`relative_verdict` (``"better"``, ``"worse"``): a run below another method is
        worse than it, not a case of KD hurting."""
        s, out = self.stats(), {}
        for name, row in s.iterrows():
            word = method_verdict(_short(name), row["gain_vs_scratch"], row["gain_vs_scratch_ci95"])
            out[name] = {"vs_scratch": self._flagged(name, word)}
            if self.baseline is not None:
                gain = row[f"gain_vs_{self.baseline}"], row[f"gain_vs_{self.baseline}_ci95"]
                word = relative_verdict(*gain)
                out[name][key or f"vs_{self.baseline}"] = self._flagged(name, word)
        return out

    def _flagged(self, method: str, word: str) -> str:
        """``word`` after the count of ``method``'s diverged seeds, where it has any: a mean
        of the seeds that finished is never read as the method's."""
        seeds = self.diverged.get(method, [])
        if not seeds or word == REFERENCE:
            return word
        return f"diverged on {len(seeds)} of {len(self.per_seed)} seeds; on the others: {word}"

    def differences(self, pairs: Mapping[str, tuple[str, str]]) -> pd.DataFrame:
        """Paired differences between runs that differ in one setting only.

        ``pairs`` maps a name to ``(with_it, without_it)``, two runs of this comparison. Per
        pair: the difference seed by seed, its mean and 95% interval, the verdict
        (:func:`relative_verdict`) and the ratio of their seconds per epoch.
        """
        s, rows = self.stats(), {}
        for what, (with_it, without_it) in pairs.items():
            for run in (with_it, without_it):
                self._method(run)
            diff, gain, ci95 = paired_gain(self.per_seed[with_it], self.per_seed[without_it])
            rows[what] = {
                "with it - without it, per seed (points)": ", ".join(f"{d:+.1f}" for d in diff),
                "mean ± 95% interval (points)": format_interval(gain, ci95, signed=True, unit=""),
                "verdict": relative_verdict(gain, ci95),
            }
            if "s_per_epoch" in s.columns:
                ratio = s.loc[with_it, "s_per_epoch"] / s.loc[without_it, "s_per_epoch"]
                rows[what]["time ratio (x)"] = round(ratio, 2)
        return pd.DataFrame(rows).T

    def table(self, *, relative: bool = False, scratch: str = "scratch") -> pd.DataFrame:
        """The comparison as readable columns: accuracy (mean ± 95% interval), the paired gain
        over scratch with its verdict, over the baseline (``better than ...``, ``worse than
        ...``, ``inside seed noise``), and the time per epoch and its ratios.

        Args:
            relative: say the verdicts against scratch as "better/worse than <scratch>" (for
                two recipes of one student, e.g. fp32 and bf16) instead of "KD helps/hurts".
            scratch: what the columns call the reference run.
        """
        s, base = self.stats(), self.baseline

        def gains(column: str) -> list[str]:
            return [format_interval(m, c, signed=True, unit="") for m, c in _pairs(s, column)]

        cols: dict[str, Any] = {
            "accuracy (%)": [
                format_interval(m, c, unit="", within=ACCURACY_RANGE)
                for m, c in _pairs(s, "accuracy")
            ],
            f"gain over {scratch} (points)": gains("gain_vs_scratch"),
            f"vs {scratch}": [
                relative_verdict(m, c, scratch) if relative else method_verdict(_short(n), m, c)
                for n, (m, c) in zip(s.index, _pairs(s, "gain_vs_scratch"), strict=True)
            ],
        }
        if base is not None:
            cols[f"gain over {base} (points)"] = gains(f"gain_vs_{base}")
            cols[f"vs {base}"] = [
                relative_verdict(m, c, base) for m, c in _pairs(s, f"gain_vs_{base}")
            ]
        if "s_per_epoch" in s.columns:
            cols["s / epoch"] = s["s_per_epoch"].round(3)
            cols[f"time vs {scratch} (x)"] = s["time_ratio_vs_scratch"].round(2)
            if base is not None:
                cols[f"time vs {base} (x)"] = (s["s_per_epoch"] / s.loc[base, "s_per_epoch"]).round(
                    2
                )
        for column in [c for c in cols if c.startswith("vs ")]:
            cols[column] = [self._flagged(n, w) for n, w in zip(s.index, cols[column], strict=True)]
        table = pd.DataFrame(cols, index=s.index)
        table.loc[SCRATCH, [f"gain over {scratch} (points)", f"vs {scratch}"]] = REFERENCE
        if base is not None:
            table.loc[base, [f"gain over {base} (points)", f"vs {base}"]] = REFERENCE
        return table


def _short(method: str) -> str:
    """A method's name in a verdict: ``'KD'`` for :func:`compare`'s ``student (KD)``."""
    return "KD" if method == KD else method


def _pairs(summary: pd.DataFrame, column: str) -> list[tuple[float, float]]:
    """(mean, 95% half-width) of a summary column, one pair per method."""
    return list(zip(summary[column], summary[f"{column}_ci95"], strict=True))


def compare_methods(
    student: str,
    data: Dataset,
    methods: Mapping[str, Mapping[str, Any]],
    *,
    seeds: Sequence[int],
    baseline: str | None = None,
    setting: str = "",
    progress: bool = True,
    keep_models: bool = False,
    splits: Sequence[str] = ("test",),
    stack: bool = True,
    **fit_kwargs: Any,
) -> Comparison:
    """Train ``student`` alone and with each method, from the same weights per seed.

    For each seed the student is built once; the scratch copy and one copy per method train
    from those weights with :func:`kdbook.train.fit`. A method is a dict of extra ``fit``
    arguments, e.g. ``{"teacher": t}``, ``{"teacher": t, "feature_loss": HintLoss(...),
    "feature_weight": 1.0}`` or ``{"teacher": t, "hooks": [FreezeHead(1 / 3)]}``. A
    ``feature_loss`` given as a class or factory (not a module) is called once per seed, so
    that every run gets a fresh adapter. A method's own
    arguments override the shared ``fit_kwargs`` (e.g. its own ``alpha``). With
    ``keep_models`` the trained models stay in the result's ``models``. ``splits``: where
    each run's accuracy is measured; the test split's is the run's column of ``per_seed``,
    another split's the column ``"<run> (<split>)"`` (e.g. validation accuracies to choose
    on, next to the test ones to report).

    ``stack``: train the runs that can share a step side by side (:mod:`kdbook.stack`:
    every seed and recipe as one stacked model, each run's weights as if trained alone);
    the others, or all with ``stack=False``, train one at a time. Before training it
    prints the plan, and after a first epoch the time the rest will take.

    Returns:
        A :class:`Comparison`: ``per_seed`` holds each run's test accuracy and seconds per
        epoch; ``summary`` (:func:`summarize_methods`) has, per method, test accuracy mean
        and 95% interval, the paired gain over scratch and over ``baseline`` (e.g. plain
        logit KD), and the mean seconds per epoch with its ratio to scratch.
    """
    if baseline is not None and baseline not in methods:
        raise ValueError(f"baseline must be one of {list(methods)}, got {baseline!r}")
    if "test" not in splits or not set(splits) <= {"val", "test"}:
        raise ValueError(f"splits must be ('test',) or ('val', 'test'), got {splits!r}")
    runs = train_recipes(
        student, data, {SCRATCH: {}, **methods}, seeds=seeds, splits=splits, setting=setting,
        progress=progress, keep_models=keep_models, stack=stack, **fit_kwargs,
    )  # fmt: skip
    result = Comparison.from_per_seed(
        runs.per_seed, list(methods), baseline=baseline, setting=setting, diverged=runs.diverged
    )
    result.models = runs.models
    return result


def compare(
    student: str,
    teacher: Any,
    data: Dataset,
    *,
    seeds: Sequence[int],
    setting: str = "all labels",
    progress: bool = True,
    keep_models: bool = False,
    **fit_kwargs: Any,
) -> Comparison:
    """Train ``student`` alone and distilled from ``teacher``, from the same weights per seed.

    The one-method case of :func:`compare_methods` (the method ``{"teacher": teacher}``):
    for each seed, seed the RNG, build the student once, copy it, train one copy with
    cross-entropy and another with the KD loss, and measure both on the test split.

    Args:
        student: a registered model name.
        teacher: the trained teacher (a model, a list of models or a logit cache).
        data: the data set (with hidden labels for a scarce-label setting).
        seeds: one run per seed.
        setting: a label for the table ("all labels", "5% labels", ...).
        keep_models: keep the trained students in the result's ``models``.
        **fit_kwargs: passed to :func:`kdbook.train.fit` (num_epochs, lr, temperature...).

    Returns:
        A :class:`Comparison`: ``per_seed`` with ``init_norm``, the test accuracy (%) of
        ``student (scratch)`` and ``student (KD)`` and their ``gain (KD - scratch)``;
        ``summary`` with their ``mean``, ``ci95`` and ``n``.
    """
    runs = compare_methods(
        student,
        data,
        {KD: {"teacher": teacher}},
        seeds=seeds,
        setting=setting,
        progress=progress,
        keep_models=keep_models,
        **fit_kwargs,
    )
    per_seed = runs.per_seed[["init_norm", SCRATCH, KD]].copy()
    per_seed[GAIN] = per_seed[KD] - per_seed[SCRATCH]
    summary = summarize(per_seed, [SCRATCH, KD, GAIN])
    return Comparison(per_seed, summary, setting, models=runs.models, diverged=runs.diverged)
