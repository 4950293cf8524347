"""A chapter's comparisons on a second data set, side by side with its own.

Notebooks 05, 09, 13 and 14 run their key comparisons on the classroom's digits and again on
``glyphs``, the harder look-alike characters (:mod:`kdbook.glyphs`), and print one table:
per data set the teacher's test accuracy, its mean non-target mass at T 4 (the probability
it leaves on the other classes, what distillation has to pass on), the student alone's gap
to it, and each verdict. :func:`where_it_shows` says in words, from those numbers, on
which set each effect shows.

The second set's teacher is trained once per run folder (``teacher_<dataset>.pt``, by
:func:`kdbook.recipes.trained_in_run`) and shared by the notebooks that need it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kdbook.compare import KD, SCRATCH, Comparison, compare, paired_gain
from kdbook.config import PRESETS, check_dataset_spec, cpu_sizes, dataset_preset, make_config
from kdbook.data import Dataset, load_dataset
from kdbook.evaluate import accuracy, best_class_bias, predict, with_class_bias
from kdbook.recipes import trained_in_run
from kdbook.stats import format_interval, relative_verdict, verdict

NON_TARGET_T = 4.0  # the temperature of the table's non-target mass (the book's default T)
TEACHER = "teacher accuracy (%)"
MASS = f"non-target mass at T {NON_TARGET_T:g}"
ALONE = "student alone (%)"
GAP = "student alone's gap (points)"


def non_target_mass(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = NON_TARGET_T
) -> float:
    """Mean over images of ``1 - p_y``: the probability the softened teacher puts on the
    classes other than the true one (DKD's weight on NCKD in classic KD, notebook 13).

    >>> round(non_target_mass(torch.tensor([[0.0, 0.0]]), torch.tensor([0])), 2)
    0.5
    """
    p_y = F.softmax(logits.float() / temperature, dim=1).gather(1, labels.view(-1, 1))
    return float(1 - p_y.mean())


@dataclasses.dataclass(frozen=True)
class DataSetSide:
    """One data set of a side-by-side comparison: its configuration, data and teacher, and
    the teacher's test accuracy and mean non-target mass at T 4 (test split)."""

    cfg: Any
    data: Dataset
    teacher: nn.Module
    teacher_accuracy: float
    non_target_mass: float
    teacher_epochs: int | None = None  # what the teacher trained (second_set's: its preset's)

    @property
    def name(self) -> str:
        """The data set's name (``cfg.dataset``)."""
        return self.cfg.dataset

    @property
    def seeds(self) -> list[int]:
        """The comparison's seeds on this set: ``cfg.seed`` and the next ``num_seeds - 1``."""
        return list(range(self.cfg.seed, self.cfg.seed + self.cfg.num_seeds))


def describe(cfg: Any, data: Dataset, teacher: nn.Module) -> DataSetSide:
    """The :class:`DataSetSide` of a data set whose teacher the notebook already has."""
    logits = predict(teacher, data, "test", cfg.device)
    return DataSetSide(
        cfg,
        data,
        teacher,
        accuracy(logits, data.test.labels),
        non_target_mass(logits, data.test.labels),
    )


def second_set(
    cfg: Any,
    dataset: str | None,
    *,
    num_epochs: int | None = None,
    num_seeds: int | None = None,
    epoch_share: float | None = None,
    progress: bool = False,
) -> DataSetSide | None:
    """The second data set of a notebook run on ``cfg``: its own preset's sizes, the run's
    seed, device, threads and folder, and its teacher, trained once and kept in
    ``run_dir/teacher_<dataset>.pt`` (a rerun or the next notebook loads it).

    Args:
        cfg: the notebook's :class:`kdbook.config.Config`.
        dataset: the notebook's ``second_dataset`` parameter; None skips the second set, and
            so does the notebook's own data set (nothing to set beside it). Both print why.
        num_epochs, num_seeds: the notebook's own parameters when it lowers them to fit its
            time (None: the second set's preset's).
        epoch_share: instead of ``num_epochs``, this share of the preset's epochs (in (0, 1]),
            to keep the notebook near its time; the line printed says so. The teacher always
            trains the preset's epochs.

    Returns:
        The :class:`DataSetSide`, or None when skipped.
    """
    if dataset is not None:
        try:
            check_dataset_spec(dataset)
        except ValueError:
            raise ValueError(
                f"second_dataset must be None or a data set such as 'glyphs' or 'digits', "
                f"got {dataset!r}"
            ) from None
    if epoch_share is not None and not (
        isinstance(epoch_share, (int, float)) and 0 < epoch_share <= 1
    ):
        raise ValueError(f"epoch_share must be None or a number in (0, 1], got {epoch_share!r}")
    if dataset is None or dataset == cfg.dataset:
        why = "second_dataset is None" if dataset is None else f"this run is on {dataset} already"
        print(f"second data set: none ({why}); the verdicts below are on {cfg.dataset} alone")
        return None
    preset = dataset_preset(dataset)
    sizes = PRESETS[preset] | cpu_sizes(preset, cfg.device)
    why = ""
    if epoch_share is not None:
        num_epochs = max(1, round(epoch_share * sizes["num_epochs"]))
        why = f" ({epoch_share:.0%} of its preset's {sizes['num_epochs']}: this notebook's time)"
    other = make_config(
        preset=preset,
        dataset=dataset,
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        run_dir=cfg.run_dir,
        num_epochs=num_epochs,
        num_seeds=num_seeds,
    )
    data = load_dataset(dataset)
    teacher, _ = trained_in_run(  # the preset's epochs, whatever the notebook's students get
        other,
        data,
        other.teacher,
        f"teacher_{dataset}.pt",
        num_epochs=sizes["num_epochs"],
        progress=progress,
        desc=f"teacher {other.teacher} on {dataset}",
    )
    side = dataclasses.replace(describe(other, data, teacher), teacher_epochs=sizes["num_epochs"])
    print(
        f"second data set {dataset} (preset {other.preset!r}: {other.teacher} -> {other.student}, "
        f"{other.num_epochs} epochs{why}, {other.num_seeds} seeds, "
        f"{other.label_fraction:.0%} labels in the few-label setting): "
        f"teacher test accuracy {side.teacher_accuracy:.1f} %, "
        f"non-target mass at T {NON_TARGET_T:g} {side.non_target_mass:.3f}"
    )
    return side


def gain(comparison: Comparison, method: str, against: str = SCRATCH) -> dict[str, Any]:
    """``method`` minus ``against`` in ``comparison``, paired by seed: ``gain_mean``,
    ``gain_ci95`` and the verdict words, without the numbers the table prints beside them
    (:meth:`Comparison.verdicts`' ``"KD helps"`` against the student alone,
    :func:`kdbook.stats.relative_verdict` against another method). A diverged run is named
    in the words."""
    _, mean, ci95 = paired_gain(comparison.per_seed[method], comparison.per_seed[against])
    if against == SCRATCH:  # the method's own words ("KD helps"), a diverged run named
        words = comparison.verdicts()[method]["vs_scratch"]
    else:
        words = relative_verdict(mean, ci95, than=against)
        notes = [comparison.diverged_note(m) for m in (method, against)]
        words = "; ".join([*filter(None, notes), words])
    return {"gain_mean": mean, "gain_ci95": ci95, "verdict": words}


def side_column(side: DataSetSide, alone: float, verdicts: Mapping[str, Mapping[str, Any]]) -> dict:
    """One data set's column of :func:`side_by_side`: the teacher's accuracy and non-target
    mass, the student alone's mean test accuracy ``alone`` and its gap to the teacher, and
    per verdict (:func:`gain`'s dicts, or :meth:`Comparison.row`) its numbers."""
    return {
        "data set": side.name,
        TEACHER: side.teacher_accuracy,
        MASS: side.non_target_mass,
        ALONE: alone,
        GAP: side.teacher_accuracy - alone,
        "verdicts": {
            k: {n: v[n] for n in ("gain_mean", "gain_ci95", "verdict")} for k, v in verdicts.items()
        },  # fmt: skip
    }


def side_by_side(columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The table the notebooks print: one column per data set (:func:`side_column`), one row per
    measure and per verdict (``mean ± 95 % interval: words``)."""
    table = {}
    for col in columns:
        cells = {
            TEACHER: f"{col[TEACHER]:.1f}",
            MASS: f"{col[MASS]:.3f}",
            ALONE: f"{col[ALONE]:.1f}",
            GAP: f"{col[GAP]:.1f}",
        }
        for what, v in col["verdicts"].items():
            interval = format_interval(v["gain_mean"], v["gain_ci95"], signed=True, unit="")
            cells[what] = f"{interval}: {v['verdict']}"
        table[col["data set"]] = cells
    return pd.DataFrame(table)


def _shows(v: Mapping[str, Any]) -> bool:
    return verdict(v["gain_mean"], v["gain_ci95"]) != "inside seed noise" and not pd.isna(
        v["gain_ci95"]
    )


def where_it_shows(columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per verdict, from the numbers: on which data set the effect's interval
    excludes 0 (on both, on one, on none), with each set's teacher accuracy, non-target
    mass and student gap beside it, the measures that explain a difference."""
    if not columns:
        return []
    context = "; ".join(
        f"{c['data set']}: teacher {c[TEACHER]:.1f} %, non-target mass {c[MASS]:.3f}, "
        f"student alone {c[GAP]:.1f} points below it"
        for c in columns
    )
    sentences = []
    for what in dict.fromkeys(k for c in columns for k in c["verdicts"]):  # in order, once
        found = [c for c in columns if what in c["verdicts"]]
        shown = [c["data set"] for c in found if _shows(c["verdicts"][what])]
        numbers = ", ".join(
            f"{c['data set']} "
            + format_interval(
                c["verdicts"][what]["gain_mean"],
                c["verdicts"][what]["gain_ci95"],
                signed=True,
                unit="",
            )  # fmt: skip
            for c in found
        )
        roomiest = max(found, key=lambda c: c[GAP])["data set"]
        if len(found) < 2:
            where = f"measured on {found[0]['data set']} only"
        elif not shown:
            where = "the interval includes 0 on every data set: the effect shows on none"
        elif len(shown) == len(found):
            largest = max(found, key=lambda c: abs(c["verdicts"][what]["gain_mean"]))
            where = (
                f"the interval excludes 0 on every data set: it shows on each, "
                f"largest on {largest['data set']}"
            )
        else:
            where = f"it shows on {', '.join(shown)} only"
            if shown == [roomiest]:
                where += ", the set whose student alone stays furthest below its teacher"
        sentences.append(f"{what} ({numbers} points): {where}.")
    if len(columns) > 1:
        sentences.append(f"What differs between the sets: {context}.")
    return sentences


def omitted_class_runs(
    side: DataSetSide,
    omitted_class: int,
    *,
    candidates: Sequence[float],
    views: Any = None,
    **fit_kwargs: Any,
) -> dict[str, Comparison]:
    """Hinton's omitted-class experiment (notebook 13) on ``side``: the student alone and
    the distilled one, both trained without any image of ``omitted_class``, over the side's
    seeds from the same weights; each student's bias for the class chosen on validation
    among ``candidates`` and applied once to its test logits.

    Args:
        views: the teacher as the students see it on the transfer set (e.g. stored views,
            :func:`kdbook.distill.stored_views`); None: the live teacher.
        **fit_kwargs: passed to :func:`kdbook.compare.compare` (default: ``cfg.fit_kwargs()``).

    Returns:
        ``{"omitted class right": ..., "test accuracy": ...}``: per seed, after the bias
        fix, the student alone (scratch) and the distilled one (``"KD"``): compare with
        :meth:`Comparison.row` or :func:`gain`.
    """
    cfg, data = side.cfg, side.data
    if not 0 <= omitted_class < data.num_classes:
        raise ValueError(
            f"omitted_class must be a class index in [0, {data.num_classes}), got {omitted_class!r}"
        )
    transfer = data.without_class(omitted_class)
    teacher = side.teacher if views is None else views
    runs = compare(cfg.student, teacher, transfer, seeds=side.seeds, keep_models=True,
                   progress=False, **(fit_kwargs or cfg.fit_kwargs()))  # fmt: skip
    is_omitted = data.test.labels == omitted_class
    diverged = {"KD" if run == KD else SCRATCH: seeds for run, seeds in runs.diverged.items()}
    rows: dict[str, dict[int, dict[str, float]]] = {"omitted class right": {}, "test accuracy": {}}
    for seed, models in runs.models.items():
        for run, model in models.items():
            val = predict(model, data, "val", cfg.device)
            test = predict(model, data, "test", cfg.device)
            bias = best_class_bias(val, data.val.labels, omitted_class, candidates)
            fixed = with_class_bias(test, omitted_class, bias)
            name = "KD" if run == KD else SCRATCH
            failed = seed in diverged.get(name, [])  # named by the verdicts, not averaged
            right = accuracy(fixed[is_omitted], data.test.labels[is_omitted])
            rows["test accuracy"].setdefault(seed, {})[name] = (
                math.nan if failed else accuracy(fixed, data.test.labels)
            )
            rows["omitted class right"].setdefault(seed, {})[name] = math.nan if failed else right
    setting = f"no {data.classes[omitted_class]}s, bias chosen on validation"
    return {
        what: Comparison.from_per_seed(
            pd.DataFrame.from_dict(per_seed, orient="index").rename_axis("seed"),
            ["KD"],
            setting=f"{setting}: {what}",
            diverged=diverged,
        )
        for what, per_seed in rows.items()
    }
