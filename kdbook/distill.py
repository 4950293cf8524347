"""What a student learns from: the teacher source and the loss terms, as one :class:`Distiller`.

The teacher source is a model, an ensemble (a list of models) or a :class:`LogitCache`, with
an optional strong view (``teacher_augment``) drawn from its own random generator. The loss
is a sum of terms: cross-entropy alone without a teacher, :class:`LogitKD` (Hinton's loss)
with one, plus :class:`FeatureKD` (a hint / attention / token term with its adapter) and any
registered :class:`Term`. :meth:`Distiller.loss` turns a batch and the training progress into
the loss and the numbers to log; :func:`kdbook.train.fit` only loops over it.

A new loss is one class::

    @register_term("prob_l2")
    class ProbL2(Term):
        def __init__(self, weight=1.0):
            super().__init__()
            self.weight = weight

        def forward(self, out, progress):
            p, q = out.logits.softmax(1), out.teacher_logits.softmax(1)
            l2 = (p - q).pow(2).sum(1).mean()
            return self.weight * l2, {"prob_l2": l2}

and ``fit(student, data, teacher=t, terms=[ProbL2(0.5)])`` trains with it, logs it, records
its settings and resumes it; neither ``fit`` nor the checkpoint code changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdbook.checkpoint import tensor_digest
from kdbook.config import check_params, default, resolve_device
from kdbook.data import UNLABELED, Augment, Dataset
from kdbook.io import atomic_write
from kdbook.losses import (
    DKD_BETA,
    DKD_WARMUP,
    _check_beta,
    dkd_loss,
    dkd_warmup_weight,
    ensemble_logits,
    kd_loss,
    soft_kd_term,
)
from kdbook.models import check_model_fits
from kdbook.runtime import Runtime, autocast, resolve_precision
from kdbook.schedules import value_at

Schedulable = float | Callable[[float], float]
TEMPERATURE, ALPHA = default("temperature"), default("alpha")  # declared in kdbook.config


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


# --- the loss terms ----------------------------------------------------------------------


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


@register_term("cross_entropy")
class CrossEntropy(Term):
    """Cross-entropy on the labels: the student trained alone."""

    needs_teacher = False

    def settings(self) -> dict[str, Any]:
        return {}

    def forward(self, out: Outputs, progress: float):
        return F.cross_entropy(out.logits, out.targets), {}


def _kl_log(out: Outputs, t: float) -> float:
    """The KL at T without the T^2 factor: how far the student is from its teacher."""
    return soft_kd_term(out.logits.detach(), out.teacher_logits, t).item() / t**2


@register_term("logit_kd")
class LogitKD(Term):
    """Hinton's loss :func:`kdbook.losses.kd_loss` at T and alpha (numbers or schedules).

    The Distiller builds one from its ``temperature`` and ``alpha``. Given in ``terms``, a
    LogitKD replaces that one: ``terms=[LogitKD(4.0, 0.7, standardize=True)]`` is logit
    standardisation (Sun et al. 2024, :func:`kdbook.losses.standardize_logits`).
    """

    replaces_logit_kd = True

    def __init__(
        self, temperature: Schedulable, alpha: Schedulable, *, standardize: bool = False
    ) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("alpha", alpha)):
            check_schedule(name, value, lambda v, n=name: check_params({n: v}))
        if not isinstance(standardize, bool):
            raise ValueError(f"standardize must be True or False, got {standardize!r}")
        self.temperature, self.alpha, self.standardize = temperature, alpha, standardize

    def settings(self) -> dict[str, Any]:
        recorded = {"temperature": setting(self.temperature), "alpha": setting(self.alpha)}
        return recorded | ({"standardize": True} if self.standardize else {})

    def scheduled(self) -> dict[str, Schedulable]:
        values = {"temperature": self.temperature, "alpha": self.alpha}
        return {k: v for k, v in values.items() if callable(v)}

    def forward(self, out: Outputs, progress: float):
        t, a = value_at(self.temperature, progress), value_at(self.alpha, progress)
        loss = kd_loss(
            out.logits, out.teacher_logits, out.targets, t, a, standardize=self.standardize
        )
        return loss, {"kl": _kl_log(out, t)}


@register_term("dkd")
class DKD(Term):
    """Decoupled KD (Zhao et al., CVPR 2022) as the paper trains it, cross-entropy included:

    ``loss = CE(s, y) + min(progress / warmup, 1) * (TCKD + beta * NCKD)`` at T

    (:func:`kdbook.losses.dkd_objective`). It replaces the Distiller's LogitKD:
    ``fit(student, data, teacher=t, terms=[DKD()])``. The paper's defaults: T 4, beta 8,
    warm-up over the first 20 of 240 epochs. Every training sample needs its label.
    """

    replaces_logit_kd = True

    def __init__(
        self, temperature: float = 4.0, beta: float = DKD_BETA, warmup: float = DKD_WARMUP
    ) -> None:
        super().__init__()
        check_params({"temperature": temperature})
        _check_beta(beta)
        dkd_warmup_weight(0.0, warmup)  # checks warmup
        self.temperature, self.beta, self.warmup = temperature, beta, warmup

    def check(self, model: nn.Module, teachers: list[nn.Module], data: Dataset, device) -> None:
        hidden = int((data.train.labels == UNLABELED).sum())
        if hidden:
            raise ValueError(
                f"loss term 'dkd' needs every training label (TCKD and NCKD split the classes "
                f"on the label), got {hidden} unlabelled training images"
            )

    def forward(self, out: Outputs, progress: float):
        t = self.temperature
        dkd = dkd_loss(out.logits, out.teacher_logits, out.targets, t, self.beta)
        weight = dkd_warmup_weight(progress, self.warmup)
        loss = F.cross_entropy(out.logits, out.targets) + weight * dkd
        return loss, {"kl": _kl_log(out, t), "dkd": dkd.item()}


@register_term("feature_kd")
class FeatureKD(Term):
    """``weight * loss(student_features, teacher_features)``, e.g. :class:`HintLoss`."""

    needs_features = True

    def __init__(self, loss: nn.Module, weight: Schedulable = 1.0) -> None:
        super().__init__()
        self.loss, self.weight = loss, weight

    def settings(self) -> dict[str, Any]:
        return {"feature_loss": setting(self.loss), "feature_weight": setting(self.weight)}

    def scheduled(self) -> dict[str, Schedulable]:
        return {"feature_weight": self.weight}

    def forward(self, out: Outputs, progress: float):
        value = self.loss(out.features, out.teacher_features)
        return value_at(self.weight, progress) * value.float(), {"feature_loss": value}

    @torch.no_grad()
    def check(self, model: nn.Module, teachers: list[nn.Module], data: Dataset, device) -> None:
        """One eval-mode pass on two images: the student's and teacher's features fit."""
        for role, net in (("model", model), ("teacher", teachers[0])):
            if not callable(getattr(net, "forward_features", None)):
                raise ValueError(
                    f"feature_loss needs {role}.forward_features and forward_head "
                    "(kdbook.models' split); this one has none"
                )
        self.loss.to(device)
        x = data.normalize(data.train.images[:2].to(device))
        modes = [m.training for m in (model, self.loss)]
        model.eval()
        self.loss.eval()
        try:
            fs, ft = model.forward_features(x), teachers[0].forward_features(x)
            try:
                self.loss(fs, ft)
            except (RuntimeError, ValueError) as e:
                raise ValueError(
                    f"feature_loss {type(self.loss).__name__} cannot compare the student's "
                    f"features {tuple(fs.shape[1:])} with the teacher's {tuple(ft.shape[1:])}: "
                    f"{e}"
                ) from None
        finally:
            model.train(modes[0])
            self.loss.train(modes[1])


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


# --- the teacher's logits, cached --------------------------------------------------------


@dataclass
class LogitCache:
    """A teacher's logits on every training image, computed once (:func:`cache_teacher_logits`).

    ``logits`` is fp32 ``(V, N, C)``: V views of the N training images. ``views`` holds each
    view's augmentation parameters ``(V, N, 5)`` (:meth:`kdbook.data.Augment.sample`), or is
    None for one view of the plain images. ``images`` and ``fingerprint`` are digests of the
    training images and of images plus teacher weights, so a stale cache is recognised.
    """

    logits: torch.Tensor
    views: torch.Tensor | None
    images: str
    fingerprint: str
    teacher: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits,
            "views": self.views,
            "images": self.images,
            "fingerprint": self.fingerprint,
            "teacher": self.teacher,
        }

    def check(self, data: Dataset) -> None:
        """Raise ValueError unless this cache was computed on ``data``'s training images."""
        if self.logits.shape[1:] != (len(data.train), data.num_classes):
            raise ValueError(
                f"teacher cache holds logits of shape {tuple(self.logits.shape[1:])}, data set "
                f"{data.name!r} has {len(data.train)} training images of {data.num_classes} "
                "classes"
            )
        if self.images != tensor_digest([data.train.images]):
            raise ValueError(
                f"teacher cache was computed on other training images than data set {data.name!r}'s"
            )


def _plain_note(views: int) -> None:
    if not views:
        print("teacher cache holds the plain images' logits: training without augmentation")


def _load_cache(path: Path, fingerprint: str) -> LogitCache | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("fingerprint") == fingerprint:
            print(f"teacher cache: loaded {path}")
            return LogitCache(**blob)
        print(f"teacher cache: {path} is stale (other images, teacher or views); recomputing")
    except Exception as e:  # a damaged or foreign file is recomputed
        print(f"teacher cache: {path} is not readable ({e}); recomputing")
    return None


@torch.no_grad()
def cache_teacher_logits(
    teacher: nn.Module,
    data: Dataset,
    *,
    views: int = 0,
    seed: int = 0,
    path: str | Path | None = None,
    device: str = "cpu",
    precision: str = "auto",
    batch_size: int = 512,
    progress: bool = True,
) -> LogitCache:
    """The teacher's logits on ``data.train``, computed once, for ``fit(teacher=cache)``.

    A cache is valid only while the student sees exactly the images the teacher saw. With
    ``views=0`` those are the plain images (the student then trains without augmentation,
    and this says so once). With ``views=k``, k augmented views of every image are drawn
    with the data set's augmentation and their parameters are kept, so that ``fit`` replays
    view ``e mod k`` in epoch ``e``: augmentation with a valid cache.

    With ``path`` (e.g. ``run_dir/teacher_logits.pt``) the cache is loaded from the file when
    it was made from the same images, teacher weights and views, and computed and saved
    (atomically, loadable with ``weights_only=True``) otherwise.

    Args:
        teacher: the trained teacher (run in eval mode, under no_grad, autocast per precision).
        data: the data set whose training images are cached.
        views: 0 for the plain images, or the number of stored augmented views.
        seed: seeds the views' augmentation parameters.
        path: a file to keep the cache in, or None for memory only.
    """
    if not (isinstance(views, int) and views >= 0):
        raise ValueError(f"views must be an integer >= 0, got {views!r}")
    check_params({"seed": seed, "device": device, "batch_size": batch_size})
    dev = torch.device(resolve_device(device))
    precision = resolve_precision(precision, dev)
    teacher.to(dev).eval()
    check_model_fits(teacher, data, dev, "teacher")
    images = tensor_digest([data.train.images])
    weights = tensor_digest(list(teacher.state_dict().values()))
    fingerprint = hashlib.sha1(f"{images} {weights} {views} {seed}".encode()).hexdigest()
    name = getattr(teacher, "kdbook_name", type(teacher).__name__)
    if path is not None and Path(path).is_file():
        cache = _load_cache(Path(path), fingerprint)
        if cache is not None:
            _plain_note(views)
            return cache
    generator = torch.Generator().manual_seed(seed)
    n = len(data.train)
    params = (
        torch.stack([data.augment.sample(n, generator) for _ in range(views)]) if views else None
    )
    logits = torch.empty(max(1, views), n, data.num_classes)
    batches = [(v, b) for v in range(max(1, views)) for b in torch.arange(n).split(batch_size)]
    source = data.train.images.to(dev)
    for v, b in tqdm(batches, desc="teacher logits", disable=not progress):
        x = source[b.to(dev)]
        if params is not None:
            x = data.augment.apply(x, params[v, b])
        with autocast(precision, dev):
            logits[v, b] = teacher(data.normalize(x)).float().cpu()
    cache = LogitCache(logits, params, images, fingerprint, name)
    if path is not None:
        atomic_write(path, lambda f: torch.save(cache.to_dict(), f))
    _plain_note(views)
    return cache


# --- the teacher source ------------------------------------------------------------------


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


# --- what the teacher and the student see of a batch ------------------------------------


class View:
    """What the student and the teacher see of the loader's batch ``x`` (normalised images).

    Without a view both see ``x``, the same augmented images: Beyer et al.'s "consistent"
    teaching. A view returns ``(student's images, teacher's images)``; it draws its random
    numbers from the Distiller's generator (seeded per run and rank, resumed with it).
    """

    def setup(self, data: Dataset, device: torch.device) -> None:
        """Before the first batch: what the view needs of the data set, on the device."""

    def check(self, distiller: Distiller) -> None:
        """Raise ValueError when this view cannot be used with the distiller's loss."""

    def __call__(
        self, x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class IndependentViews(View):
    """The teacher sees its own random view of each image, drawn apart from the student's.

    Beyer et al.'s "independent noise": each training image is augmented twice with the
    data set's augmentation (``data.augment``), once for the student (the loader's batch)
    and once, independently, for the teacher. Compare with ``teacher_augment``, which
    augments the student's view further.
    """

    def setup(self, data: Dataset, device: torch.device) -> None:
        self._images = data.train.images.to(device)
        self._augment, self._normalize = data.augment, data.normalize

    def __call__(self, x, idx, generator):
        fresh = self._augment(self._images[idx.to(self._images.device)], generator)
        return x, self._normalize(fresh)


class Mixup(View):
    """Mixup of the batch (Zhang et al. 2018), the same mixed images for teacher and student.

    ``x' = lam * x + (1 - lam) * x[perm]`` with one ``lam ~ Beta(concentration,
    concentration)`` per batch and a random pairing ``perm``: Beyer et al.'s "function
    matching" shows the teacher images that are between the training images. The labels
    are not mixed, so the loss must not use them: it needs alpha = 1 (the teacher's
    targets only, as in the paper).
    """

    def __init__(self, concentration: float = 1.0) -> None:
        if not (isinstance(concentration, int | float) and concentration > 0):
            raise ValueError(f"concentration must be a number > 0, got {concentration!r}")
        self.concentration = float(concentration)

    def check(self, distiller: Distiller) -> None:
        first = distiller.terms[0]
        alpha = first.alpha if isinstance(first, LogitKD) else None
        if callable(alpha) or alpha != 1:
            raise ValueError(
                "view=Mixup(...) mixes the images, not the labels: it needs the logit KD term "
                f"with alpha=1 (the teacher's targets only), got {alpha!r}"
            )

    def __call__(self, x, idx, generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # Beta draws from the global RNG: keep it
            torch.manual_seed(seed)
            lam = float(torch.distributions.Beta(self.concentration, self.concentration).sample())
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        mixed = lam * x + (1 - lam) * x[perm]
        return mixed, mixed


# --- the distiller -----------------------------------------------------------------------


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
        view.check(self)
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
