"""Values that change over training, as functions of progress ``p`` in [0, 1].

``p = step / total_steps``: 0 at the first step, close to 1 at the last, whatever the
number of epochs. The sources state their schedules per epoch with no bound (SOURCES.md
bug 12: past the planned epochs source 5's weights go negative); here ``p`` outside
[0, 1] is clamped, so a schedule never leaves the range it was written for.
:func:`kdbook.train.fit` takes a schedule wherever it takes ``temperature``, ``alpha`` or
``feature_weight``, evaluates it at every step, and records it in a checkpoint by its
``repr`` (stable: the call that made it), so that a resumed run recomputes it.

>>> decay = temperature_decay(num_epochs=100)
>>> decay
temperature_decay(start=4.0, floor=2.0, per_epoch=0.02, num_epochs=100)
>>> decay(0.0), decay(0.5), decay(1.0), decay(1.5)
(4.0, 3.0, 2.0, 2.0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class Schedule:
    """A value as a function of training progress; ``p`` is clamped to [0, 1]."""

    def __init__(self, fn: Callable[[float], float], text: str) -> None:
        self._fn, self._text = fn, text

    def __call__(self, progress: float) -> float:
        return float(self._fn(min(max(float(progress), 0.0), 1.0)))

    def __repr__(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and repr(other) == self._text

    def __hash__(self) -> int:
        return hash(self._text)


def linear(start: float, end: float) -> Schedule:
    """``start + (end - start) * p``: from ``start`` at p = 0 to ``end`` at p = 1.

    >>> linear(0.7, 0.3)(0.5)
    0.5
    """
    return Schedule(lambda p: start + (end - start) * p, f"linear({start!r}, {end!r})")


def temperature_decay(
    start: float = 4.0, floor: float = 2.0, per_epoch: float = 0.02, num_epochs: int = 100
) -> Schedule:
    """Source 2's ``T = max(floor, start - per_epoch * epoch)`` over ``num_epochs`` planned epochs.

    ``T(p) = max(floor, start - per_epoch * num_epochs * p)``: the source's curve when the
    run lasts ``num_epochs``, stretched to a run of any length, and bounded: past the end it
    stays at its value at p = 1 (with ``num_epochs=50``, T ends at 3, not at the floor).
    """
    if not (floor > 0 and start >= floor):
        raise ValueError(f"need start >= floor > 0, got start={start!r}, floor={floor!r}")
    if not (isinstance(num_epochs, int) and num_epochs >= 1):
        raise ValueError(f"num_epochs must be an integer >= 1, got {num_epochs!r}")
    text = (
        f"temperature_decay(start={start!r}, floor={floor!r}, per_epoch={per_epoch!r}, "
        f"num_epochs={num_epochs!r})"
    )
    return Schedule(lambda p: max(floor, start - per_epoch * num_epochs * p), text)


def stages(steps: Sequence[tuple[float, float]]) -> Schedule:
    """Progressive training: a constant value per stage, ``[(until_p, value), ...]``.

    A stage holds for ``p < until_p``; the ``until_p`` increase and the last is 1.
    ``stages([(0.5, 0.0), (1.0, 1.0)])`` as ``feature_weight`` is "logits first, then
    features" (source 2); ``stages([(0.5, 0.75), (1.0, 0.5)])`` as ``alpha`` raises the
    cross-entropy from 1:3 to 1:1 of the KD term for the last half (source 5's fine-tuning).

    >>> s = stages([(0.5, 0.0), (1.0, 1.0)])
    >>> s(0.0), s(0.5), s(1.0)
    (0.0, 1.0, 1.0)
    """
    steps = [(float(u), float(v)) for u, v in steps]
    ends = [u for u, _ in steps]
    if (
        not steps
        or ends[-1] != 1.0
        or any(b <= a for a, b in zip(ends, ends[1:], strict=False))
        or ends[0] <= 0
    ):
        raise ValueError(
            f"steps must be [(until_p, value), ...] with until_p increasing in (0, 1] "
            f"and the last 1.0, got {steps!r}"
        )

    def value(p: float) -> float:
        return next((v for u, v in steps if p < u), steps[-1][1])

    return Schedule(value, f"stages({steps!r})")


def dynamic_weights(
    feature: tuple[float, float] = (0.7, 0.3), output: tuple[float, float] = (0.3, 0.7)
) -> dict[str, Schedule]:
    """Source 5's dynamic loss weights as ``fit`` arguments: features first, outputs later.

    Returns ``{"feature_weight": linear(*feature), "alpha": linear(*output)}``: the feature
    loss weight goes 0.7 -> 0.3 and the KD term's weight (``alpha``; the cross-entropy gets
    ``1 - alpha``) 0.3 -> 0.7 over training. Use as ``fit(..., **dynamic_weights())``.
    """
    return {"feature_weight": linear(*feature), "alpha": linear(*output)}


def value_at(value: float | Callable[[float], float], progress: float) -> float:
    """A number as it is, or a schedule evaluated at ``progress``."""
    return float(value(progress)) if callable(value) else value
