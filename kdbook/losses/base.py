"""The loss-term protocol: what a term reads (:class:`Outputs`), the :class:`Term` base, and
the registry (:func:`register_term`, :func:`list_terms`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from kdbook.data import Dataset

Schedulable = float | Callable[[float], float]


def setting(value: Any) -> Any:
    """A number as it is, a schedule (or module) by its repr: what a checkpoint records."""
    return value if value is None or isinstance(value, int | float) else repr(value)


def check_schedule(name: str, schedule: Schedulable, accept: Callable[[Any], None]) -> None:
    """Check a number, or a schedule's values at progress 0, 0.1, ..., 1, with ``accept``."""
    if not callable(schedule):
        accept(schedule)
        return
    for p in [i / 10 for i in range(11)]:
        try:
            accept(schedule(p))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name} schedule {schedule!r} at progress {p}: {e}") from None


@dataclass
class Outputs:
    """One chunk's student and teacher outputs, what every term reads."""

    logits: torch.Tensor  # the student's, fp32
    targets: torch.Tensor
    temperature: float  # the distiller's at this step
    features: torch.Tensor | None = None  # the student's, when a term needs them
    teacher_logits: torch.Tensor | None = None  # fp32; None without a teacher
    teacher_features: torch.Tensor | None = None


TERMS: dict[str, type[Term]] = {}


def register_term(name: str) -> Callable[[type[Term]], type[Term]]:
    """Class decorator: make a :class:`Term` known by ``name`` (see :func:`list_terms`)."""

    def add(cls: type[Term]) -> type[Term]:
        if name in TERMS:
            raise ValueError(f"a loss term named {name!r} is registered already")
        cls.name = name
        TERMS[name] = cls
        return cls

    return add


def list_terms() -> list[str]:
    """The registered loss terms' names."""
    return sorted(TERMS)


class Term(nn.Module):
    """One part of the loss: ``forward(outputs, progress) -> (weighted loss, logs)``.

    A term is an ``nn.Module``: its parameters (an adapter) train with the student's, in
    the same optimizer, under DDP with them, and are saved in the checkpoint.
    """

    name: ClassVar[str] = "term"
    needs_teacher: ClassVar[bool] = True
    needs_features: ClassVar[bool] = False  # the student's and teacher's features
    # the whole logit loss, cross-entropy included: given in ``terms``, it takes the place
    # of the Distiller's own LogitKD (DKD, or a LogitKD of other settings)
    replaces_logit_kd: ClassVar[bool] = False

    def settings(self) -> dict[str, Any]:
        """What this term records in the history (and what a resumed run must match)."""
        return {self.name: repr(self)}

    def extra_repr(self) -> str:
        """The term's own settings (public attributes, submodules aside), e.g. ``weight=0.5``."""
        fields = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "training"}
        return ", ".join(f"{k}={v!r}" for k, v in fields.items())

    def scheduled(self) -> dict[str, Schedulable]:
        """Values whose per-epoch mean the history records, by name."""
        return {}

    def check(self, model: nn.Module, teachers: list[nn.Module], data: Dataset, device) -> None:
        """Raise ValueError before any work when this term cannot run."""
