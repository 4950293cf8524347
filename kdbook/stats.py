"""Statistics in words: a mean and its 95% interval over seeds, and the one verdict rule.

The one place for them: :mod:`kdbook.compare` (tables of methods), :mod:`kdbook.report`
(summary.md), :mod:`kdbook.widgets` and :mod:`kdbook.doctor` (the reader's own ``mean_ci``)
all read these. Notebook 05 introduces the interval, notebook 06 the verdict.

>>> mean, ci95 = mean_ci([1.0, 2.0, 3.0])
>>> format_interval(mean, ci95, signed=True)
'+2.0 ± 2.5 %'
>>> verdict(mean, ci95)
'inside seed noise'
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

MISSING = "–"  # a number that is not there (no run, no interval)


def finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``confidence`` interval (Student's t over len(values) - 1).

    With one value the half-width is NaN: one seed says nothing about the spread. With a
    NaN among the values (a run that diverged) both are NaN: see :func:`finite_mean_ci`.
    """
    from scipy.stats import t

    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one number, got []")
    if any(math.isnan(v) for v in values):  # a run that diverged: nothing to say over all
        return math.nan, math.nan
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


TOO_FEW_SEEDS = "too few seeds to say"
ACCURACY_RANGE = (0.0, 100.0)  # where an accuracy in percent lives


def format_interval(
    mean: Any,
    ci95: Any,
    *,
    signed: bool = False,
    unit: str = " %",
    within: tuple[float, float] | None = None,
    digits: int = 1,
) -> str:
    """Format a percentage and its 95% half-width: (93.42, 1.5) -> '93.4 ± 1.5 %'.

    ``within``: the range the quantity lives in (:data:`ACCURACY_RANGE` for an accuracy);
    an interval that runs past it says so: '62.6 ± 112.5 % (too few seeds to say)'.
    ``digits``: decimals (3 for bits per character).
    """
    m = finite(mean)
    if m is None:
        return MISSING
    text = f"{m:+.{digits}f}" if signed else f"{m:.{digits}f}"
    c = finite(ci95)
    if c is not None:
        text += f" ± {c:.{digits}f}"
    text += unit
    if c is not None and within is not None and (m - c < within[0] or m + c > within[1]):
        text += f" ({TOO_FEW_SEEDS})"
    return text


def finite_mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """:func:`mean_ci` over the values that are numbers (a diverged run's NaN left out; the
    caller names it); NaN and NaN when none is."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return mean_ci(kept) if kept else (math.nan, math.nan)


def format_seconds(x: Any) -> str:
    """Seconds with one decimal and thousands separators, or '–' when missing."""
    v = finite(x)
    return MISSING if v is None else f"{v:,.1f}"


def verdict(gain_mean: Any, gain_ci95: Any) -> str:
    """Say in words whether a gain's 95% interval excludes zero.

    Returns:
        ``"KD helps"`` (interval above 0), ``"KD hurts"`` (below 0), ``"inside seed noise"``
        (it contains 0) or ``'–'`` when the mean or interval is missing.
    """
    m, c = finite(gain_mean), finite(gain_ci95)
    if m is None or c is None:
        return MISSING
    if m - abs(c) > 0:
        return "KD helps"
    if m + abs(c) < 0:
        return "KD hurts"
    return "inside seed noise"


def method_verdict(method: str, gain_mean: Any, gain_ci95: Any) -> str:
    """:func:`verdict` naming the method compared: ``'DKD hurts'``, ``'KD helps'``,
    ``'inside seed noise'`` (never "KD hurts" on a DKD row)."""
    word = verdict(gain_mean, gain_ci95)
    return word.replace("KD ", f"{method} ", 1) if word.startswith("KD ") else word


def relative_verdict(gain_mean: Any, gain_ci95: Any, than: str | None = None) -> str:
    """kdbook's verdict rule (:func:`verdict`) for any two recipes, in words.

    ``'better'`` (the interval of the paired difference is above 0), ``'worse'`` (below),
    with ``' than <than>'`` when a name is given, else the rule's own words
    (``'inside seed noise'``, or ``'–'`` for a missing number).
    """
    word = verdict(gain_mean, gain_ci95)
    suffix = f" than {than}" if than else ""
    return {"KD helps": f"better{suffix}", "KD hurts": f"worse{suffix}"}.get(word, word)
