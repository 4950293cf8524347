"""One training loop for the teacher, the student alone and the distilled student.

>>> from kdbook.data import load_dataset
>>> from kdbook.models import build_model
>>> data = load_dataset("digits")
>>> model = build_model("tiny_cnn", 10, in_channels=1, image_size=8)
>>> history = fit(model, data, num_epochs=1, progress=False)
>>> len(history.epochs)
1
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdbook.config import check_params, resolve_device
from kdbook.data import UNLABELED, Augment, Dataset, Loader, Split
from kdbook.io import atomic_write
from kdbook.losses import ensemble_logits, kd_loss
from kdbook.schedules import value_at

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class History:
    """Per-epoch records of a :func:`fit` call, plus its settings."""

    settings: dict[str, Any]
    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's record (the model kdbook keeps: no selection on test)."""
        return self.epochs[-1]

    def to_frame(self):
        """The records as a pandas DataFrame indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.epochs).set_index("epoch")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 on a CUDA GPU that has it, fp16 on one without, fp32 elsewhere.

    fp16 needs a CUDA device (fit guards its gradients with ``torch.amp.GradScaler``);
    bf16 works on CPUs too (its range is fp32's, so no scaler is needed).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device, got device {device.type!r}: "
            "use 'bf16' or 'fp32' there"
        )
    return precision


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for a resolved precision (a no-op context for fp32)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def world_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group torchrun set up, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _data_parallel(student: nn.Module, device: torch.device) -> nn.Module:
    """``student`` as DistributedDataParallel (SyncBatchNorm on GPUs: one batch, one BN)."""
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        return DistributedDataParallel(student, device_ids=[device])
    return DistributedDataParallel(student)


def _all_reduce(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The sum over ranks of a small CPU tensor (sent through ``device`` for NCCL)."""
    import torch.distributed as dist

    values = values.to(device)
    dist.all_reduce(values)
    return values.cpu()


def _broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics on CPUs, per rank)."""
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


class _Student(nn.Module):
    """What the optimizer trains, as one module (the one DDP wraps): model and feature loss.

    ``forward(x, teacher_features)`` returns the logits and the feature loss (None without one).
    """

    def __init__(self, model: nn.Module, feature_loss: nn.Module | None) -> None:
        super().__init__()
        self.model, self.feature_loss = model, feature_loss

    def forward(
        self, x: torch.Tensor, teacher_features: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.feature_loss is None:
            return self.model(x), None
        features = self.model.forward_features(x)
        return self.model.forward_head(features), self.feature_loss(features, teacher_features)


@torch.no_grad()
def _teach(
    teachers: list[nn.Module],
    x: torch.Tensor,
    temperature: float,
    weights: list[float] | None,
    with_features: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teachers' logits (fp32, as source 5 keeps them) and, when asked, the features."""
    if with_features:
        features = teachers[0].forward_features(x)
        return teachers[0].forward_head(features).float(), features.float()
    if len(teachers) == 1:
        return teachers[0](x).float(), None
    outputs = [t(x).float() for t in teachers]
    return ensemble_logits(outputs, temperature, weights), None


def make_optimizer(
    params: list[nn.Parameter],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW; ``fused`` (one kernel for all parameters) on GPUs."""
    extra = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **extra)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: Dataset,
    split: Split,
    device: torch.device,
    precision: str = "fp32",
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, float]:
    """Loss and accuracy (%) of ``model`` on a split, in eval mode (summed over the ranks)."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for x, y, _ in Loader(data, split, 512, device=device, shard=shard):
        with autocast(precision, device):
            logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        sums[1] += (logits.argmax(1) == y).sum().item()
    if shard[1] > 1:
        sums = _all_reduce(sums, device)
    return sums[0].item() / len(split), 100.0 * sums[1].item() / len(split)


# The settings that must agree for a checkpoint to continue (or stand for) a run.
RESUME_SETTINGS = (
    "model",
    "teacher",
    "dataset",
    "seed",
    "num_epochs",
    "lr",
    "batch_size",
    "optimizer",
    "temperature",
    "alpha",
    "train_samples",
    "teacher_weights",
    "feature_loss",
    "feature_weight",
    "max_grad_norm",
    "augment",
    "teacher_augment",
    "freeze_head",
    "precision",
    "accumulation_steps",
)


def _tensor_digest(tensors: list[torch.Tensor]) -> str:
    """sha1 of the tensors' bytes (any dtype, any device)."""
    h = hashlib.sha1()
    for t in tensors:
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fingerprint(data: Dataset, teachers: list[nn.Module]) -> dict[str, str | None]:
    """What settings do not say: the training labels (label fraction) and the teachers' weights."""
    weights = [v for t in teachers for v in t.state_dict().values()]
    return {
        "train_labels": _tensor_digest([data.train.labels]),
        "teacher": _tensor_digest(weights) if teachers else None,
    }


@torch.no_grad()
def _check_outputs(model: nn.Module, data: Dataset, device: torch.device, role: str) -> None:
    """One forward pass in eval mode (no state changes): ``model`` fits the data's classes."""
    was_training = model.training
    model.eval()
    x = data.normalize(data.train.images[:2].to(device))
    try:
        out = model(x)
    except RuntimeError as e:
        raise ValueError(
            f"{role} cannot run on data set {data.name!r}'s images of shape "
            f"{tuple(x.shape[1:])}: {e}"
        ) from None
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ValueError(
            f"{role} outputs {out.shape[-1]} classes, data set {data.name!r} has "
            f"{data.num_classes}: build it with num_classes={data.num_classes}"
        )


def _check_fit_inputs(
    model: Any, data: Any, teachers: list[Any], optimizer: str, params: dict[str, Any]
) -> None:
    check_params({k: v for k, v in params.items() if not callable(v)})
    for name in ("temperature", "alpha"):
        if callable(params[name]):
            _check_schedule(name, params[name])
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for teacher in teachers:
        if not isinstance(teacher, nn.Module):
            raise TypeError(
                "teacher must be a torch.nn.Module, a list of them, or None, got "
                f"{type(teacher).__name__}"
            )
    if not isinstance(data, Dataset):
        raise TypeError(
            f"data must be a kdbook.data.Dataset (from load_dataset), got {type(data).__name__}"
        )


def _check_schedule(name: str, schedule: Callable[[float], float]) -> None:
    """Check a schedule's values at progress 0, 0.1, ..., 1 as check_params checks a number."""
    for p in [i / 10 for i in range(11)]:
        try:
            value = schedule(p)
            check_params({name: value})
        except (ValueError, TypeError) as e:
            raise ValueError(f"{name} schedule {schedule!r} at progress {p}: {e}") from None


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


@torch.no_grad()
def _check_features(
    model: nn.Module, teacher: nn.Module, feature_loss: nn.Module, data: Dataset, device
) -> None:
    """One eval-mode pass of ``feature_loss`` on two images: the features fit together."""
    for role, net in (("model", model), ("teacher", teacher)):
        if not callable(getattr(net, "forward_features", None)):
            raise ValueError(
                f"feature_loss needs {role}.forward_features and forward_head "
                "(kdbook.models' split); this one has none"
            )
    x = data.normalize(data.train.images[:2].to(device))
    modes = [m.training for m in (model, feature_loss)]
    model.eval()
    feature_loss.eval()
    try:
        # forward_features runs: _check_outputs has run the whole forward pass already
        fs, ft = model.forward_features(x), teacher.forward_features(x)
        try:
            feature_loss(fs, ft)
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"feature_loss {type(feature_loss).__name__} cannot compare the student's "
                f"features {tuple(fs.shape[1:])} with the teacher's {tuple(ft.shape[1:])}: {e}"
            ) from None
    finally:
        model.train(modes[0])
        feature_loss.train(modes[1])


def _setting(value: Any) -> Any:
    """A number as it is, a schedule (or module) by its repr: what a checkpoint records."""
    return value if value is None or isinstance(value, int | float) else repr(value)


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
    announced: bool = field(default=False, repr=False, compare=False)  # fit's note printed

    def to_dict(self) -> dict[str, Any]:
        return {
            "logits": self.logits,
            "views": self.views,
            "images": self.images,
            "fingerprint": self.fingerprint,
            "teacher": self.teacher,
        }


def _check_cache(cache: LogitCache, data: Dataset, feature_loss: Any, teacher_augment: Any) -> None:
    if cache.logits.shape[1:] != (len(data.train), data.num_classes):
        raise ValueError(
            f"teacher cache holds logits of shape {tuple(cache.logits.shape[1:])}, data set "
            f"{data.name!r} has {len(data.train)} training images of {data.num_classes} classes"
        )
    if cache.images != _tensor_digest([data.train.images]):
        raise ValueError(
            f"teacher cache was computed on other training images than data set {data.name!r}'s"
        )
    if feature_loss is not None or teacher_augment is not None:
        raise ValueError(
            "a teacher cache holds logits only: feature_loss and teacher_augment need the "
            "teacher itself (pass the model as teacher)"
        )


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
    ``views=0`` those are the plain images (the student then trains without augmentation).
    With ``views=k``, k augmented views of every image are drawn with the data set's
    augmentation and their parameters are kept, so that ``fit`` replays view ``e mod k`` in
    epoch ``e``: augmentation with a valid cache (k views instead of a fresh one each epoch).

    With ``path`` (e.g. ``run_dir/teacher_logits.pt``) the cache is loaded from the file when
    it was made from the same images, teacher weights and views, and computed and saved
    (atomically, loadable with ``weights_only=True``) otherwise.

    Args:
        teacher: the trained teacher (run in eval mode, under no_grad, autocast per precision).
        data: the data set whose training images are cached.
        views: 0 for the plain images, or the number of stored augmented views.
        seed: seeds the views' augmentation parameters.
        path: a file to keep the cache in, or None for memory only.

    Returns:
        A :class:`LogitCache`.
    """
    if not (isinstance(views, int) and views >= 0):
        raise ValueError(f"views must be an integer >= 0, got {views!r}")
    check_params({"seed": seed, "device": device, "batch_size": batch_size})
    dev = torch.device(resolve_device(device))
    precision = resolve_precision(precision, dev)
    teacher.to(dev).eval()
    _check_outputs(teacher, data, dev, "teacher")
    images = _tensor_digest([data.train.images])
    weights = _tensor_digest(list(teacher.state_dict().values()))
    fingerprint = hashlib.sha1(f"{images} {weights} {views} {seed}".encode()).hexdigest()
    name = getattr(teacher, "kdbook_name", type(teacher).__name__)
    if path is not None and Path(path).is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("fingerprint") == fingerprint:
                print(f"teacher cache: loaded {path}")
                return LogitCache(**blob)
            print(f"teacher cache: {path} is stale (other images, teacher or views); recomputing")
        except Exception as e:  # a damaged or foreign file is recomputed
            print(f"teacher cache: {path} is not readable ({e}); recomputing")
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
    return cache


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    teacher: nn.Module | Sequence[nn.Module] | LogitCache | None = None,
    num_epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    temperature: float | Callable[[float], float] = 4.0,
    alpha: float | Callable[[float], float] = 0.7,
    teacher_weights: Sequence[float] | None = None,
    feature_loss: nn.Module | None = None,
    feature_weight: float | Callable[[float], float] = 0.0,
    max_grad_norm: float | None = None,
    augment: bool = True,
    teacher_augment: Augment | None = None,
    freeze_head: float = 0.0,
    precision: str = "auto",
    accumulation_steps: int = 1,
    channels_last: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    log_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    resume: bool | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``model`` on ``data.train``; distil from ``teacher`` when one is given.

    Without a teacher the loss is cross-entropy on the labelled samples (samples marked
    UNLABELED are skipped). With a teacher it is :func:`kdbook.losses.kd_loss` on every
    sample, the teacher in eval mode under ``torch.no_grad()``. An epoch is
    ``ceil(len(data.train) / batch_size)`` steps whatever the labels. The learning rate follows
    a cosine schedule over all steps. The final model is kept (no selection on any split).

    ``temperature``, ``alpha`` and ``feature_weight`` each take a number or a schedule (a
    callable of training progress ``p = step / total_steps``, see :mod:`kdbook.schedules`),
    evaluated at every step; the history then records the mean value used in each epoch.
    ``teacher`` may be a list of models: the student learns the (``teacher_weights``-weighted)
    mean of their probabilities at T (:func:`kdbook.losses.ensemble_logits`).

    Feature distillation: with ``feature_loss`` (an ``nn.Module`` called as
    ``feature_loss(student_features, teacher_features)``, e.g.
    :class:`kdbook.losses.HintLoss`), fit runs both models as
    ``forward_head(forward_features(x))`` (the kdbook models' split), so the features come
    with the logits, and adds ``feature_weight * feature_loss`` to the KD loss. The feature
    loss's parameters (its adapter) train with the model's, in the same optimizer, and are
    saved in the checkpoint. It needs exactly one teacher.

    The teacher may also be a :class:`LogitCache` (:func:`cache_teacher_logits`): its logits,
    computed once, are looked up by sample index instead of running the teacher every step.
    A cache of the plain images trains without augmentation; a cache of stored views shows
    the student, in epoch ``e``, exactly the view ``e mod views`` the teacher saw.

    Split augmentation (source 5): with ``teacher_augment`` (an :class:`kdbook.data.Augment`),
    the teacher sees the student's (light) view further augmented by it (a strong view),
    padding and cutout filled with black as the light view's are. Its random draws are
    seeded per rank: under torchrun they do not repeat the single-process run's.
    ``freeze_head``: for this first fraction of training the student's classifier
    (``model.head``) is not updated (source 5's stage 1: align the features, head frozen).

    Speed (the same loop on every device): on a GPU the uint8 data sit on the device and
    each batch is augmented there (:class:`kdbook.data.Loader`); ``precision="auto"`` is
    bf16 autocast there (fp16 with ``torch.amp.GradScaler`` on GPUs without bf16) and fp32
    on CPUs; ``channels_last`` defaults to on for GPUs; the optimizer is the fused kernel on
    GPUs. The loss is always computed in fp32 on fp32 teacher logits.
    ``accumulation_steps`` splits each batch into that many chunks whose gradients add up
    to the batch's (less memory, the same recipe: exact for models without BatchNorm).

    Under ``torchrun`` (a process group initialised, see ``kdbook train``) the student is
    wrapped in DistributedDataParallel: every rank draws the same global batch of
    ``batch_size`` and trains on its slice, the gradients are averaged, BatchNorm is
    synchronised on GPUs (per rank on CPUs, rank 0's statistics kept), the metrics are
    summed over ranks, and only rank 0 shows progress and writes the checkpoint.

    Every argument is checked before any work, and one forward pass in eval mode checks that
    ``model`` (and ``teacher``) output ``data.num_classes`` scores.

    With ``checkpoint``, the file is rewritten atomically after every epoch with the model,
    optimizer, schedule, history and random states, and ``resume`` (default: True) continues
    an unfinished run of the same settings from its next epoch, or returns a finished one
    as it is, without training. A run that starts afresh over a checkpoint of other
    settings says why (and overwrites it). Schedules count as the same setting when their
    ``repr`` is the same (kdbook's schedules print the call that made them).

    Determinism: on the CPU the same seed gives bit-identical metrics and weights,
    interrupted and resumed or not (tested). On a GPU some cuDNN and atomic-add kernels are
    not bit-reproducible: two runs of the same seed differ by float rounding that grows
    over training, so compare GPU metrics with a tolerance, not for equality, or call
    ``torch.use_deterministic_algorithms(True)`` (with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``)
    to make them identical at some cost in speed.

    Args:
        model: the network to train (modified in place).
        data: a :class:`kdbook.data.Dataset`.
        teacher: a trained network, a list of them, or None to train ``model`` alone.
        num_epochs, lr, batch_size: the usual; ``optimizer`` is ``"sgd"`` or ``"adamw"``.
        temperature, alpha: of the KD loss (ignored without a teacher); numbers or schedules.
        teacher_weights: one weight per teacher of a list (default: equal).
        feature_loss: a feature distillation loss module, or None.
        feature_weight: its weight in the loss, a number or a schedule.
        max_grad_norm: clip the gradient's global norm to this before each step (source 2's
            remedy for unstable steps), or None for no clipping.
        augment: apply the data set's training augmentation.
        teacher_augment: a stronger augmentation for the teacher's view, or None.
        freeze_head: fraction of training (0 to 1) before the head starts to learn.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
        accumulation_steps: chunks per batch, their gradients accumulated before the step.
        channels_last: NHWC memory format (default: on GPUs).
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...
        seed: seeds shuffling, augmentation and dropout.
        log_dir: a folder for TensorBoard scalars (every record of the history, per
            epoch; ``tensorboard --logdir DIR`` shows them), or None.
        checkpoint: the file to save the model in, with metadata, after every epoch.
        resume: continue from ``checkpoint`` when it holds a run of the same settings
            (default True when ``checkpoint`` is given); False starts afresh and overwrites it.
        progress: show a tqdm bar over epochs.

    Returns:
        A :class:`History` with per-epoch train loss and accuracy, val loss and accuracy,
        learning rate, seconds; with a teacher, the teacher-student KL at T; with a schedule,
        the mean scheduled value; with a feature loss, its mean (unweighted) and weight.
    """
    cache = teacher if isinstance(teacher, LogitCache) else None
    teachers = [] if cache is not None else _as_teachers(teacher)
    if max_grad_norm is not None and not (
        isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0
    ):
        raise ValueError(f"max_grad_norm must be a number > 0 or None, got {max_grad_norm!r}")
    _check_fit_inputs(
        model,
        data,
        teachers,
        optimizer,
        {
            "num_epochs": num_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "temperature": temperature,
            "alpha": alpha,
            "seed": seed,
            "device": device,
        },
    )
    if not (isinstance(accumulation_steps, int) and 1 <= accumulation_steps <= batch_size):
        raise ValueError(
            f"accumulation_steps must be an integer in [1, batch_size={batch_size}], "
            f"got {accumulation_steps!r}"
        )
    if not (isinstance(freeze_head, int | float) and 0 <= freeze_head < 1):
        raise ValueError(
            f"freeze_head must be a fraction of training in [0, 1), got {freeze_head!r}"
        )
    if freeze_head and not isinstance(getattr(model, "head", None), nn.Module):
        raise ValueError(
            "freeze_head needs model.head (the kdbook models' classifier); this one has none"
        )
    if teacher_augment is not None and not isinstance(teacher_augment, Augment):
        kind = type(teacher_augment).__name__
        raise TypeError(f"teacher_augment must be a kdbook.data.Augment or None, got {kind}")
    if teacher_augment is not None and not (teachers or cache):
        raise ValueError("teacher_augment needs a teacher, got teacher=None")
    dev = torch.device(resolve_device(device))
    precision = resolve_precision(precision, dev)
    if cache is not None:
        _check_cache(cache, data, feature_loss, teacher_augment)
    teacher_weights = _check_teacher_weights(teacher_weights, teachers)
    _check_feature_args(feature_loss, feature_weight, teachers)
    rank, world = world_info()
    model.to(dev)
    _check_outputs(model, data, dev, "model")
    for t in teachers:
        t.to(dev).eval()
        _check_outputs(t, data, dev, "teacher")
    if feature_loss is not None:
        feature_loss.to(dev)
        _check_features(model, teachers[0], feature_loss, data, dev)
    if channels_last is None:
        channels_last = dev.type == "cuda"
    if channels_last:
        for net in (model, *teachers):
            net.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)
    train = data.train
    if not (teachers or cache):
        train = train.subset(train.labels != UNLABELED)
    if cache is not None and cache.views is None and augment:
        if rank == 0 and not cache.announced:  # said once per cache, not once per seed
            print("teacher cache holds the plain images' logits: training without augmentation")
            cache.announced = True
        augment = False
    # An epoch is as many steps as one pass over the whole training set, labelled or not,
    # so that a student that sees only the labelled few gets as many updates as the rest.
    loader = Loader(
        data,
        train,
        batch_size,
        shuffle=True,
        augment=augment and cache is None,
        device=dev,
        seed=seed,
        num_batches=math.ceil(len(data.train) / batch_size),
        shard=(rank, world),
    )
    student = _Student(model, feature_loss)
    if world > 1:
        student = _data_parallel(student, dev)
    opt = make_optimizer(
        list(student.parameters()), optimizer, lr, weight_decay, momentum, dev.type == "cuda"
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
    total_steps = num_epochs * len(loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    names = [getattr(t, "kdbook_name", None) for t in teachers]
    distilling = bool(teachers) or cache is not None
    if cache is not None:
        names = [f"cache:{cache.teacher}"]
    history = History(
        settings={
            "model": getattr(model, "kdbook_name", type(model).__name__),
            "teacher": (names[0] if len(names) == 1 else names) if distilling else None,
            "dataset": data.name,
            "num_epochs": num_epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "temperature": _setting(temperature) if distilling else None,
            "alpha": _setting(alpha) if distilling else None,
            "seed": seed,
            "train_samples": len(train),
            "teacher_weights": teacher_weights,
            "feature_loss": _setting(feature_loss),
            "feature_weight": _setting(feature_weight) if feature_loss is not None else None,
            "max_grad_norm": max_grad_norm,
            "augment": bool(augment),
            "teacher_augment": _setting(teacher_augment),
            "freeze_head": freeze_head,
            "precision": precision,
            "accumulation_steps": accumulation_steps,
            "world_size": world,
        }
    )
    fingerprint = _fingerprint(data, teachers)
    if cache is not None:
        fingerprint["teacher"] = cache.fingerprint
    run = _Run(
        checkpoint,
        model,
        data,
        history,
        opt,
        sched,
        loader,
        dev,
        fingerprint,
        feature_loss,
        scaler,
        rank,
    )
    done = run.restore() if checkpoint is not None and resume is not False else 0
    if done == num_epochs:
        model.eval()
        return history
    epochs = tqdm(
        range(done + 1, num_epochs + 1),
        desc=desc or "train",
        disable=not progress or rank != 0,
        total=num_epochs,
        initial=done,
    )
    scheduled = {
        name: value
        for name, value in (("temperature", temperature), ("alpha", alpha))
        if distilling and callable(value)
    }
    if feature_loss is not None:
        scheduled["feature_weight"] = feature_weight
    head = list(model.head.parameters()) if freeze_head else []
    writer = _tensorboard(log_dir) if log_dir is not None and rank == 0 else None
    cached_logits = None if cache is None else cache.logits.to(dev)
    # black in normalised units: shifting, flipping and cutting out commute with removing it
    black = data.normalize(torch.zeros(1, data.in_channels, 1, 1, dtype=torch.uint8, device=dev))
    for epoch in epochs:
        start = time.perf_counter()
        student.train()
        view = 0
        if cache is not None and cache.views is not None:
            view = (epoch - 1) % len(cache.views)
            loader.replay = cache.views[view]
        step = (epoch - 1) * len(loader)
        # loss, KL, feature loss, correct, seen, seen labelled: summed, reduced across ranks
        sums = [0.0] * 6
        used = dict.fromkeys(scheduled, 0.0)
        for x, y, idx in loader:
            progress_now = step / total_steps
            t_now = value_at(temperature, progress_now)
            a_now = value_at(alpha, progress_now)
            w_now = value_at(feature_weight, progress_now) if feature_loss is not None else 0.0
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            chunks = [(x, y, idx)]
            if accumulation_steps > 1:
                parts = (t.tensor_split(accumulation_steps) for t in (x, y, idx))
                chunks = [c for c in zip(*parts, strict=True) if len(c[1])]
            opt.zero_grad(set_to_none=True)
            for i, (xc, yc, ic) in enumerate(chunks):
                # Each chunk's mean loss, weighted by its share of the global batch (times the
                # ranks, which DDP averages over): the gradients sum to the global batch's.
                share = len(yc) * world / loader.global_size
                sync = i == len(chunks) - 1 or world == 1
                with nullcontext() if sync else student.no_sync():
                    with autocast(precision, dev):
                        teacher_logits = teacher_features = None
                        if cache is not None:
                            teacher_logits = cached_logits[view][ic]
                        elif teachers:
                            xt = xc
                            if teacher_augment is not None:  # padding and cutout fill black
                                xt = teacher_augment(xc - black, run.teacher_views) + black
                            teacher_logits, teacher_features = _teach(
                                teachers, xt, t_now, teacher_weights, feature_loss is not None
                            )
                        logits, hint = student(xc, teacher_features)
                        logits = logits.float()
                        if teacher_logits is None:
                            loss = F.cross_entropy(logits, yc)
                        else:
                            loss = kd_loss(logits, teacher_logits, yc, t_now, a_now)
                        if hint is not None:
                            loss = loss + w_now * hint.float()
                    scaler.scale(loss if share == 1 else loss * share).backward()
                labelled = yc != UNLABELED
                n = len(yc)
                sums[0] += loss.item() * n
                if teacher_logits is not None:
                    sums[1] += _kl(logits.detach(), teacher_logits, t_now) * n
                if hint is not None:
                    sums[2] += hint.item() * n
                sums[3] += (logits.argmax(1)[labelled] == yc[labelled]).sum().item()
                sums[4] += n
                sums[5] += int(labelled.sum())
            for name, value in scheduled.items():
                used[name] += value_at(value, progress_now)
            if progress_now < freeze_head:
                for p in head:
                    p.grad = None
            if max_grad_norm is not None:
                scaler.unscale_(opt)
                params = [p for group in opt.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
        if world > 1:
            sums = _all_reduce(torch.tensor(sums, dtype=torch.float64), dev).tolist()
            _broadcast_buffers(model)
        val_loss, val_acc = _evaluate(model, data, data.val, dev, precision, (rank, world))
        record = {
            "epoch": epoch,
            "lr": sched.get_last_lr()[0],
            "train_loss": sums[0] / sums[4],
            "train_acc": 100.0 * sums[3] / max(1.0, sums[5]),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "seconds": time.perf_counter() - start,
        }
        if distilling:
            record["kl"] = sums[1] / sums[4]
        if feature_loss is not None:
            record["feature_loss"] = sums[2] / sums[4]
        record |= {name: total / len(loader) for name, total in used.items()}
        history.epochs.append(record)
        if writer is not None:
            for name, value in record.items():
                if name != "epoch":
                    writer.add_scalar(name, value, epoch)
            writer.flush()
        epochs.set_postfix(loss=f"{record['train_loss']:.3f}", val_acc=f"{val_acc:.1f}")
        if checkpoint is not None and rank == 0:
            run.save(finished=epoch == num_epochs)
    if writer is not None:
        writer.close()
    model.eval()
    if feature_loss is not None:
        feature_loss.eval()
    return history


def _tensorboard(log_dir: str | Path):
    """A TensorBoard ``SummaryWriter`` writing into ``log_dir``."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


@dataclass
class _Run:
    """A :func:`fit` call's checkpoint: saving its state after an epoch, restoring it."""

    path: str | Path | None
    model: nn.Module
    data: Dataset
    history: History
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loader: Loader
    device: torch.device
    fingerprint: dict[str, str | None]
    feature_loss: nn.Module | None = None  # its parameters (an adapter) are saved with the run
    scaler: torch.amp.GradScaler | None = None
    rank: int = 0
    teacher_views: torch.Generator = field(default_factory=torch.Generator)

    def __post_init__(self) -> None:
        seed = self.history.settings["seed"]
        self.teacher_views.manual_seed(seed + 1_000_003 * (self.rank + 1))

    def say(self, message: str) -> None:
        if self.rank == 0:
            print(message)

    def save(self, finished: bool) -> None:
        run: dict[str, Any] = {
            "epoch": len(self.history.epochs),
            "finished": finished,
            "history": [dict(e) for e in self.history.epochs],
            "fingerprint": self.fingerprint,
        }
        if self.feature_loss is not None:
            run["feature_loss"] = {
                k: v.detach().cpu() for k, v in self.feature_loss.state_dict().items()
            }
        if not finished:  # what continuing needs; a finished run keeps only its result
            rng = {
                "torch": torch.get_rng_state(),
                "loader": self.loader.generator.get_state(),
                "teacher_views": self.teacher_views.get_state(),
            }
            if self.device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(self.device)
            run["optimizer"] = self.opt.state_dict()
            run["scheduler"] = self.sched.state_dict()
            if self.scaler is not None and self.scaler.is_enabled():
                run["scaler"] = self.scaler.state_dict()
            run["rng"] = rng
        _save(self.path, self.model, self.data, self.history, run)

    def restore(self) -> int:
        """Load a matching run from the checkpoint; return its epochs done (0: start afresh)."""
        path = Path(self.path)
        if not path.exists():
            return 0
        try:
            blob = _read_checkpoint(path)
            run = blob.get("run")
            if not isinstance(run, dict):
                raise ValueError("it holds no training run (saved by save_checkpoint)")
            mismatch = _mismatch(blob["meta"].get("settings", {}), self.history.settings)
            if mismatch:
                raise ValueError(f"its settings differ: {mismatch}")
            if run.get("fingerprint") != self.fingerprint:
                raise ValueError("its training labels or teacher weights differ")
            _check_fits(blob["state_dict"], self.model)
            if self.feature_loss is not None:
                _check_fits(run["feature_loss"], self.feature_loss)
            if not run["finished"]:  # load nothing until every check has passed
                self.opt.load_state_dict(run["optimizer"])
                self.sched.load_state_dict(run["scheduler"])
                if "scaler" in run and self.scaler is not None:
                    self.scaler.load_state_dict(run["scaler"])
            self.model.load_state_dict(blob["state_dict"])
            if self.feature_loss is not None:
                self.feature_loss.load_state_dict(run["feature_loss"])
        except (ValueError, RuntimeError, KeyError) as e:
            self.say(f"checkpoint {path}: not resuming ({e}); training from epoch 1")
            return 0
        self.history.epochs[:] = run["history"]
        done = run["epoch"]
        if run["finished"]:
            self.say(f"checkpoint {path}: this run already finished ({done} epochs); not training")
            return done
        torch.set_rng_state(run["rng"]["torch"])
        self.loader.generator.set_state(run["rng"]["loader"])
        if "teacher_views" in run["rng"]:
            self.teacher_views.set_state(run["rng"]["teacher_views"])
        if self.device.type == "cuda" and "cuda" in run["rng"]:
            torch.cuda.set_rng_state(run["rng"]["cuda"], self.device)
        total = self.history.settings["num_epochs"]
        self.say(f"checkpoint {path}: resuming after epoch {done} of {total}")
        return done


def _mismatch(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    """The resume settings that differ, as ``name=saved (this run: wanted)``, or ''."""
    return ", ".join(
        f"{k}={saved.get(k)!r} (this run: {wanted.get(k)!r})"
        for k in RESUME_SETTINGS
        if saved.get(k) != wanted.get(k)
    )


def _check_fits(state_dict: dict[str, torch.Tensor], model: nn.Module) -> None:
    """Raise ValueError unless ``state_dict`` has exactly ``model``'s tensor names and shapes."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state_dict.items()}
    if own != saved:
        diff = sorted(k for k in own.keys() | saved.keys() if own.get(k) != saved.get(k))
        raise ValueError(
            f"its weights do not fit this model ({len(diff)} tensors differ, first "
            f"{diff[0]}: saved {saved.get(diff[0])}, model {own.get(diff[0])})"
        )


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> float:
    """KL(teacher || student) at temperature T, batch mean, without the T^2 factor."""
    return F.kl_div(
        F.log_softmax(student_logits / temperature, 1),
        F.log_softmax(teacher_logits / temperature, 1),
        reduction="batchmean",
        log_target=True,
    ).item()


def _meta(model: nn.Module, data: Dataset, history: History | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model": getattr(model, "kdbook_name", type(model).__name__),
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "image_size": data.image_size,
        "dataset": data.name,
        "classes": list(data.classes),
    }
    if history is not None:
        meta["settings"] = history.settings
        if history.epochs:
            meta["metrics"] = history.final
    return meta


def _save(
    path: str | Path,
    model: nn.Module,
    data: Dataset,
    history: History | None,
    run: dict[str, Any] | None,
) -> Path:
    blob: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _meta(model, data, history),
    }
    if run is not None:
        blob["run"] = run
    return atomic_write(path, lambda f: torch.save(blob, f))


def save_checkpoint(
    path: str | Path, model: nn.Module, data: Dataset, history: History | None = None
) -> Path:
    """Save ``model``'s state_dict with the metadata needed to rebuild and check it.

    The file loads with ``torch.load(path, weights_only=True)`` and is written atomically.
    (:func:`fit` with ``checkpoint=`` writes the same file plus the run needed to resume.)
    """
    return _save(path, model, data, history, None)


CHECKPOINT_META = ("model", "num_classes", "in_channels", "image_size", "dataset", "classes")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, loaded with ``weights_only=True``; ValueError naming the file."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} is not a readable kdbook checkpoint: {e}") from None
    if not isinstance(blob, dict) or not {"state_dict", "meta"} <= blob.keys():
        raise ValueError(f"checkpoint {path} is not a kdbook checkpoint (no state_dict/meta)")
    meta = blob["meta"]
    missing = [k for k in CHECKPOINT_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise ValueError(f"checkpoint {path} is not a kdbook checkpoint (meta lacks {missing})")
    return blob


def load_checkpoint(
    path: str | Path, data: Dataset | None = None, *, expect_model: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a kdbook checkpoint (``weights_only=True``) and return it with meta.

    Args:
        path: a file written by :func:`save_checkpoint` or :func:`fit`.
        data: when given, the checkpoint must have been trained on this data set, with its
            number of classes and class names.
        expect_model: when given, the registered model name the checkpoint must hold.

    Returns:
        The model in eval mode on the CPU, and the checkpoint's metadata.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a damaged file, not a checkpoint, or a mismatch; the message names the
            file and the mismatch.
    """
    from kdbook.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    blob = _read_checkpoint(path)
    meta = blob["meta"]
    if expect_model is not None and meta["model"] != expect_model:
        raise ValueError(
            f"checkpoint {path} holds model {meta['model']!r}, expected {expect_model!r}"
        )
    if data is not None:
        for key, want in (
            ("dataset", data.name),
            ("num_classes", data.num_classes),
            ("classes", list(data.classes)),
        ):
            if meta.get(key) != want:
                raise ValueError(
                    f"checkpoint {path} was trained with {key}={meta.get(key)!r}, "
                    f"this data set has {want!r}"
                )
    try:
        model = build_model(
            meta["model"],
            meta["num_classes"],
            in_channels=meta["in_channels"],
            image_size=meta["image_size"],
        )
        _check_fits(blob["state_dict"], model)
    except ValueError as e:
        raise ValueError(f"checkpoint {path} does not rebuild: {e}") from None
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


def _is_unfinished(path: Path) -> bool:
    """Whether ``path`` holds a :func:`fit` run stopped before its last epoch."""
    try:
        run = _read_checkpoint(path).get("run")
    except ValueError:
        return False
    return isinstance(run, dict) and not run.get("finished", True)


def teacher_from_run(
    cfg, data: Dataset, *, num_epochs: int | None = None, progress: bool = True
) -> tuple[nn.Module, dict]:
    """The teacher of this run: loaded from ``run_dir/teacher.pt``, or trained and saved there.

    A notebook opened on its own calls this and gets the teacher 02_teacher would have
    left, with a message saying which happened. A checkpoint of another architecture or
    data set is not reused: it is retrained (and the message says why). An unfinished
    checkpoint (a training that was interrupted) is continued from its last epoch.

    A teacher trained here gets the preset's number of epochs, not ``cfg.num_epochs``: a
    notebook that shortens its students' training still gets the teacher 02 would train.

    Args:
        cfg: a :class:`kdbook.config.Config`.
        data: the data set of ``cfg.dataset``.
        num_epochs: the teacher's epochs when it must be trained (default: the preset's).

    Returns:
        The teacher in eval mode and its checkpoint metadata.
    """
    from kdbook.config import PRESETS
    from kdbook.models import build_model

    num_epochs = num_epochs or PRESETS[cfg.preset]["num_epochs"]
    path = Path(cfg.run_dir) / "teacher.pt"
    unfinished = _is_unfinished(path) if path.is_file() else False
    if unfinished:
        print(f"teacher: {path} holds an unfinished run of {cfg.teacher}; continuing it")
    elif path.is_file():
        try:
            teacher, meta = load_checkpoint(path, data)
            if meta["model"] == cfg.teacher:
                print(f"teacher: loaded {path} ({meta['model']}, trained on {meta['dataset']})")
                return teacher.to(resolve_device(cfg.device)), meta
            reason = f"it holds {meta['model']}, this run's teacher is {cfg.teacher}"
        except ValueError as e:
            reason = str(e)
        print(f"teacher: not reusing {path}: {reason}")
    if not unfinished:
        print(f"teacher: training {cfg.teacher} ({num_epochs} epochs), saving to {path}")
    torch.manual_seed(cfg.seed)
    teacher = build_model(
        cfg.teacher, data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    fit(
        teacher,
        data,
        num_epochs=num_epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        device=cfg.device,
        seed=cfg.seed,
        checkpoint=path,
        resume=unfinished,
        progress=progress,
        desc=f"teacher {cfg.teacher}",
    )
    return teacher, load_checkpoint(path, data)[1]


# ----------------------------------------------------------------------------------------
# Variants of distillation, each a few calls of fit (SOURCES.md sources 2 and 3). The
# multi-teacher variant needs no function: fit(teacher=[t1, t2], teacher_weights=...).


def born_again(
    student: str,
    data: Dataset,
    *,
    generations: int = 3,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    **fit_kwargs: Any,
) -> list[tuple[nn.Module, History]]:
    """Self-distillation (born-again networks, Furlanello et al. 2018, arXiv:1805.04770).

    Generation 1 is ``student`` trained alone; generation k is the same architecture
    distilled from generation k - 1 (``fit(teacher=previous)``). Every generation starts
    from the same initial weights (the model built after ``torch.manual_seed(seed)``), so
    that what differs between them is only what they were taught.

    Args:
        student: a registered model name.
        data: the data set.
        generations: how many models to train (>= 1).
        seed: seeds the initial weights and every fit.
        checkpoint_dir: when given, generation k is checkpointed in ``gen{k}.pt`` there (and
            resumed by a rerun).
        **fit_kwargs: passed to every :func:`fit` (num_epochs, lr, temperature, alpha...).

    Returns:
        ``[(model, history), ...]``, one pair per generation, models in eval mode.
    """
    from kdbook.models import build_model

    if not (isinstance(generations, int) and generations >= 1):
        raise ValueError(f"generations must be an integer >= 1, got {generations!r}")
    if "teacher" in fit_kwargs:
        raise ValueError("born_again trains its own teachers: pass no teacher")
    results: list[tuple[nn.Module, History]] = []
    for k in range(1, generations + 1):
        torch.manual_seed(seed)
        model = build_model(
            student, data.num_classes, in_channels=data.in_channels, image_size=data.image_size
        )
        history = fit(
            model,
            data,
            teacher=results[-1][0] if results else None,
            seed=seed,
            checkpoint=None if checkpoint_dir is None else Path(checkpoint_dir) / f"gen{k}.pt",
            progress=progress,
            desc=f"generation {k}",
            **fit_kwargs,
        )
        results.append((model, history))
    return results


def mutual_learning(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Dataset,
    *,
    num_epochs: int = 10,
    lr: float = 0.05,
    temperature: float = 1.0,
    alpha: float = 0.5,
    seed: int = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> tuple[History, History]:
    """Deep mutual learning (Zhang et al. 2018, arXiv:1706.00384): two students teach each other.

    Each epoch: ``model_a`` trains one epoch distilled from ``model_b`` (frozen for that
    epoch), then ``model_b`` one epoch from the updated ``model_a``. Each loss is
    :func:`kdbook.losses.kd_loss`: ``alpha * T^2 * KL(other || self) + (1 - alpha) * CE``;
    the paper's ``CE + KL`` at T = 1 is alpha = 0.5 with the learning rate doubled.

    An approximation, stated plainly: the paper updates both networks at every step, each
    from the other's current predictions. Here ``fit`` is the one loop, so they take turns
    by epoch, and each epoch is its own ``fit`` call: its optimizer state (momentum) starts
    afresh and its cosine learning rate runs from that epoch's peak to 0 (warm restarts
    whose peaks follow a cosine from ``lr`` over ``num_epochs``). The shuffling seed is
    ``seed + epoch``. Each record's ``seconds`` is the whole turn, set-up included, so that
    time ratios against one ``fit`` count what this approximation costs.

    Returns:
        The two histories, one record per epoch each (epochs numbered 1..num_epochs).
    """
    check_params({"num_epochs": num_epochs, "lr": lr, "seed": seed})
    histories = (History(settings={"mode": "mutual"}), History(settings={"mode": "mutual"}))
    for epoch in tqdm(range(1, num_epochs + 1), desc="mutual", disable=not progress):
        peak = lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / num_epochs))
        for model, peer, history in (
            (model_a, model_b, histories[0]),
            (model_b, model_a, histories[1]),
        ):
            start = time.perf_counter()
            turn = fit(
                model,
                data,
                teacher=peer,
                num_epochs=1,
                lr=peak,
                temperature=temperature,
                alpha=alpha,
                seed=seed + epoch,
                progress=False,
                **fit_kwargs,
            )
            history.settings |= turn.settings | {"lr": lr, "num_epochs": num_epochs, "seed": seed}
            # the whole turn, set-up included (a fresh optimizer and checks every epoch)
            seconds = time.perf_counter() - start
            history.epochs.append({**turn.final, "epoch": epoch, "seconds": seconds})
    return histories
