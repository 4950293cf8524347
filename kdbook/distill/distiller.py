"""The :class:`Distiller`: the teacher source and the loss terms, as one object.

The teacher source is a model, an ensemble (a list of models) or a
:class:`~kdbook.distill.cache.LogitCache`, with an optional strong view (``teacher_augment``)
drawn from its own random generator. The loss is a sum of terms (:mod:`kdbook.losses`):
cross-entropy alone without a teacher, :class:`~kdbook.losses.logit.LogitKD` (Hinton's loss)
with one, plus :class:`~kdbook.losses.features.FeatureKD` (a hint / attention / token term
with its adapter) and any registered :class:`~kdbook.losses.base.Term`.
:meth:`Distiller.loss` turns a batch and the training progress into the loss and the numbers
to log; :func:`kdbook.train.fit` only loops over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdbook.config import check_params, default
from kdbook.data import Augment, Dataset
from kdbook.distill.cache import LogitCache
from kdbook.distill.views import View
from kdbook.io import tensor_digest
from kdbook.losses.base import Outputs, Schedulable, Term, check_schedule, setting
from kdbook.losses.features import FeatureKD
from kdbook.losses.logit import CrossEntropy, LogitKD, ensemble_logits
from kdbook.models import check_model_fits
from kdbook.runtime import Runtime
from kdbook.schedules import value_at

TEMPERATURE, ALPHA = default("temperature"), default("alpha")  # declared in kdbook.config


def _check_feature_args(feature_loss: Any, feature_weight: Any, teachers: list) -> None:
    if feature_loss is not None and not isinstance(feature_loss, nn.Module):
        kind = type(feature_loss).__name__
        raise TypeError(f"feature_loss must be a torch.nn.Module or None, got {kind}")
    if feature_loss is not None and len(teachers) != 1:
        raise ValueError(f"feature_loss needs exactly one teacher, got {len(teachers)}")
    points = [i / 10 for i in range(11)] if callable(feature_weight) else [0.0]
    for p in points:
        value = value_at(feature_weight, p)
        if not (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0):
            where = (
                f" (schedule {feature_weight!r} at progress {p})"
                if callable(feature_weight)
                else ""
            )
            raise ValueError(f"feature_weight must be a number >= 0{where}, got {value!r}")
    if feature_loss is None and feature_weight != 0:
        raise ValueError(f"feature_weight={feature_weight!r} needs a feature_loss, got None")


class _Student(nn.Module):
    """What the optimizer trains, as one module (the one DDP wraps): model and loss terms.

    ``forward(x, y, teacher_logits, teacher_features, temperature, progress)`` returns the
    loss, the student's logits and the terms' logs.
    """

    def __init__(self, model: nn.Module, terms: Sequence[Term]) -> None:
        super().__init__()
        self.model, self.terms = model, nn.ModuleList(terms)
        self.features = any(t.needs_features for t in terms)

    def forward(self, x, y, teacher_logits, teacher_features, temperature, progress):
        features = None
        if self.features:
            features = self.model.forward_features(x)
            logits = self.model.forward_head(features)
        else:
            logits = self.model(x)
        out = Outputs(logits.float(), y, temperature, features, teacher_logits, teacher_features)
        loss, logs = None, {}
        for term in self.terms:
            value, term_logs = term(out, progress)
            loss = value if loss is None else loss + value
            logs |= term_logs
        return loss, out.logits, logs


def _as_teachers(teacher: Any) -> list[Any]:
    """``teacher`` as a list: [] for None, [m] for one model, the models of a list or tuple."""
    if teacher is None:
        return []
    if isinstance(teacher, list | tuple):
        if not teacher:
            raise ValueError("teacher must name at least one model, got an empty list")
        return list(teacher)
    return [teacher]


def _check_teacher_weights(weights: Any, teachers: list[nn.Module]) -> list[float] | None:
    if weights is None:
        return None
    weights = [float(w) for w in weights]
    if len(weights) != len(teachers) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"teacher_weights must be {len(teachers)} numbers >= 0 (one per teacher) with a "
            f"positive sum, got {weights!r}"
        )
    return weights


@dataclass
class _Source:
    """The teachers (one, an ensemble) or a cache, and the strong view's generator."""

    teachers: list[nn.Module]
    cache: LogitCache | None
    weights: list[float] | None
    augment: Augment | None
    views: torch.Generator = field(default_factory=torch.Generator)
    view: int = 0  # the cache view of this epoch
    black: torch.Tensor | None = None  # black in normalised units
    logits: torch.Tensor | None = None  # the cache's, on the device

    @torch.no_grad()
    def teach(self, x: torch.Tensor, idx, temperature: float, features: bool):
        """The teachers' logits (fp32) and, when asked, the features; None without one."""
        if self.cache is not None:
            return self.logits[self.view][idx], None
        if not self.teachers:
            return None, None
        if self.augment is not None:  # padding and cutout fill black
            x = self.augment(x - self.black, self.views) + self.black
        if features:
            f = self.teachers[0].forward_features(x)
            return self.teachers[0].forward_head(f).float(), f.float()
        if len(self.teachers) == 1:
            return self.teachers[0](x).float(), None
        outputs = [t(x).float() for t in self.teachers]
        return ensemble_logits(outputs, temperature, self.weights), None


class Distiller:
    """The teacher source and the loss terms of a training run; see the module docstring.

    Args:
        teacher: a trained model, a list of them (their ``teacher_weights``-weighted mean of
            probabilities at T, :func:`kdbook.losses.ensemble_logits`), a :class:`LogitCache`,
            or None (cross-entropy on the labels only).
        temperature, alpha: Hinton's T and soft-term weight, numbers or schedules.
        feature_loss, feature_weight: a feature term (:class:`FeatureKD`) and its weight.
        teacher_augment: a stronger view for the teacher: the student's view augmented
            further (source 5's split views), from a generator seeded per rank.
        terms: more :class:`Term` objects, added to the loss. One whose class sets
            ``replaces_logit_kd`` (:class:`DKD`, a :class:`LogitKD` of its own settings) is
            the whole logit loss and takes the place of the LogitKD built from
            ``temperature`` and ``alpha`` (an ensemble still mixes at ``temperature``).
        view: what teacher and student see of a batch (:class:`View`): None for the same
            images, :class:`IndependentViews`, :class:`Mixup`.
    """

    def __init__(
        self,
        teacher: nn.Module | Sequence[nn.Module] | LogitCache | None = None,
        *,
        temperature: Schedulable = TEMPERATURE,
        alpha: Schedulable = ALPHA,
        teacher_weights: Sequence[float] | None = None,
        feature_loss: nn.Module | None = None,
        feature_weight: Schedulable = 0.0,
        teacher_augment: Augment | None = None,
        terms: Sequence[Term] = (),
        view: View | None = None,
    ) -> None:
        cache = teacher if isinstance(teacher, LogitCache) else None
        teachers = [] if cache is not None else _as_teachers(teacher)
        self.distilling = bool(teachers) or cache is not None
        for name, value in (("temperature", temperature), ("alpha", alpha)):
            check_schedule(name, value, lambda v, n=name: check_params({n: v}))
        for t in teachers:
            if not isinstance(t, nn.Module):
                raise TypeError(
                    "teacher must be a torch.nn.Module, a list of them, or None, got "
                    f"{type(t).__name__}"
                )
        if teacher_augment is not None and not isinstance(teacher_augment, Augment):
            kind = type(teacher_augment).__name__
            raise TypeError(f"teacher_augment must be a kdbook.data.Augment or None, got {kind}")
        if teacher_augment is not None and not self.distilling:
            raise ValueError("teacher_augment needs a teacher, got teacher=None")
        if cache is not None and (feature_loss is not None or teacher_augment is not None):
            raise ValueError(
                "a teacher cache holds logits only: feature_loss and teacher_augment need the "
                "teacher itself (pass the model as teacher)"
            )
        weights = _check_teacher_weights(teacher_weights, teachers)
        _check_feature_args(feature_loss, feature_weight, teachers)
        terms = list(terms)
        for term in terms:
            if not isinstance(term, Term):
                raise TypeError(f"terms must be kdbook.distill.Term objects, got {term!r}")
            if term.needs_teacher and not self.distilling:
                raise ValueError(f"loss term {term.name!r} needs a teacher, got teacher=None")
            if term.needs_features and (cache is not None or len(teachers) != 1):
                got = "a logit cache" if cache is not None else f"{len(teachers)} teachers"
                raise ValueError(
                    f"loss term {term.name!r} compares features: it needs exactly one "
                    f"teacher model, got {got}"
                )
        self.temperature = temperature
        self.source = _Source(teachers, cache, weights, teacher_augment)
        replaced = [t for t in terms if t.replaces_logit_kd]
        if len(replaced) > 1:
            names = [t.name for t in replaced]
            raise ValueError(f"terms may hold one logit loss (dkd, logit_kd), got {names}")
        own = self.distilling and not replaced
        self.own_logit_term = bool(replaced)  # the logit loss is a term given in ``terms``
        first: list[Term] = [LogitKD(temperature, alpha)] if own else []
        first = first if self.distilling else [CrossEntropy()]
        features = [FeatureKD(feature_loss, feature_weight)] if feature_loss is not None else []
        self.terms: list[Term] = [
            *first,
            *replaced,
            *features,
            *(t for t in terms if t not in replaced),
        ]
        self._settings = {
            "teacher": self._teacher_name(),
            "temperature": setting(temperature) if own else None,
            "alpha": setting(alpha) if own else None,
            "teacher_weights": weights,
            "feature_loss": setting(feature_loss),
            "feature_weight": setting(feature_weight) if feature_loss is not None else None,
            "teacher_augment": setting(teacher_augment),
        }
        for term in terms:
            self._settings |= term.settings()
        self.view = self._check_view(view, cache)
        if view is not None:
            self._settings["view"] = repr(view)

    def _check_view(self, view: View | None, cache: LogitCache | None) -> View | None:
        if view is None:
            return None
        if not isinstance(view, View):
            raise TypeError(f"view must be a kdbook.distill.View or None, got {view!r}")
        if not self.distilling or cache is not None:
            got = "a logit cache" if cache is not None else "teacher=None"
            raise ValueError(f"view={view!r} needs a teacher model, got {got}")
        view.check(self.terms)
        return view

    def _teacher_name(self) -> str | list[str] | None:
        if self.source.cache is not None:
            return f"cache:{self.source.cache.teacher}"
        names = [getattr(t, "kdbook_name", None) for t in self.source.teachers]
        return (names[0] if len(names) == 1 else names) if names else None

    @property
    def teachers(self) -> list[nn.Module]:
        return self.source.teachers

    def settings(self) -> dict[str, Any]:
        """The teacher and every term's settings, as the history records them."""
        return dict(self._settings)

    def scheduled(self) -> dict[str, Schedulable]:
        """The scheduled values (and feature weights) whose epoch means the history keeps."""
        out: dict[str, Schedulable] = {}
        for term in self.terms:
            out |= term.scheduled()
        return out

    def fingerprint(self) -> str | None:
        """What the settings do not say: the teachers' weights (or the cache's fingerprint)."""
        if self.source.cache is not None:
            return self.source.cache.fingerprint
        weights = [v for t in self.source.teachers for v in t.state_dict().values()]
        return tensor_digest(weights) if weights else None

    def augments(self, augment: bool) -> bool:
        """Whether the loader augments: a cache of the plain images allows no augmentation."""
        cache = self.source.cache
        return augment and (cache is None or cache.views is not None)

    def check(self, model: nn.Module, data: Dataset, device: torch.device) -> None:
        """Before any work: the teachers fit the data, every term can run."""
        if self.source.cache is not None:
            self.source.cache.check(data)
        for t in self.source.teachers:
            t.to(device).eval()
            check_model_fits(t, data, device, "teacher")
        for term in self.terms:
            term.check(model, self.source.teachers, data, device)

    def student(self, model: nn.Module, data: Dataset, runtime: Runtime, seed: int) -> _Student:
        """Set up for a run: the module the optimizer trains (model and terms), on the device."""
        source, dev = self.source, runtime.device
        runtime.prepare(*source.teachers)
        source.views.manual_seed(seed + 1_000_003 * (runtime.rank + 1))
        zeros = torch.zeros(1, data.in_channels, 1, 1, dtype=torch.uint8, device=dev)
        source.black = data.normalize(zeros)
        source.logits = None if source.cache is None else source.cache.logits.to(dev)
        if self.view is not None:
            self.view.setup(data, dev)
        return _Student(model, self.terms).to(dev)

    def start_epoch(self, epoch: int, loader) -> None:
        """Epoch ``epoch`` (from 1) of a cache of stored views replays view ``(e-1) mod k``."""
        cache = self.source.cache
        if cache is not None and cache.views is not None:
            self.source.view = (epoch - 1) % len(cache.views)
            loader.replay = cache.views[self.source.view]

    def loss(self, student: nn.Module, x, y, idx, progress: float):
        """One chunk: ``(loss, student logits, logs)``; ``student`` from :meth:`student`."""
        t = value_at(self.temperature, progress)
        features = any(term.needs_features for term in self.terms)
        x_teacher = x
        if self.view is not None:
            x, x_teacher = self.view(x, idx, self.source.views)
        teacher_logits, teacher_features = self.source.teach(x_teacher, idx, t, features)
        return student(x, y, teacher_logits, teacher_features, t, progress)

    def rng_state(self) -> dict[str, torch.Tensor]:
        return {"teacher_views": self.source.views.get_state()}

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        if "teacher_views" in state:
            self.source.views.set_state(state["teacher_views"])
