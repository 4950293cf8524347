"""The training loop: :func:`fit` for the teacher, the student alone and the distilled student.

``fit`` checks its arguments, sets up (:func:`make_loop`), then loops over epochs. What the
student learns from is a :class:`kdbook.distill.Distiller` (built from ``teacher``,
``temperature``, ``alpha`` and the rest of the distillation keywords); how a step runs is a
:class:`kdbook.runtime.Runtime`; what else happens around the steps is a hook
(:mod:`kdbook.train.hooks`).

>>> from kdbook.data import load_dataset
>>> from kdbook.models import build_model
>>> data = load_dataset("digits")
>>> model = build_model("tiny_cnn", data)
>>> history = fit(model, data, num_epochs=1, progress=False)
>>> len(history.epochs)
1
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdbook.checkpoint import History
from kdbook.config import check_params, default, resolve_device
from kdbook.data import UNLABELED, Dataset, Loader, Split
from kdbook.distill import ALPHA, TEMPERATURE, Distiller, LogitCache, Schedulable
from kdbook.io import tensor_digest
from kdbook.models import check_model_fits
from kdbook.runtime import Runtime, all_reduce, autocast, broadcast_buffers, choose_threads
from kdbook.schedules import value_at
from kdbook.train.hooks import Checkpoint, Hook, Loop


def _check_inputs(model: Any, data: Any, params: dict[str, Any]) -> None:
    check_params(params)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(data, Dataset):
        raise TypeError(
            f"data must be a kdbook.data.Dataset (from load_dataset), got {type(data).__name__}"
        )
    steps, batch_size = params["accumulation_steps"], params["batch_size"]
    if not (isinstance(steps, int) and 1 <= steps <= batch_size):
        raise ValueError(
            f"accumulation_steps must be an integer in [1, batch_size={batch_size}], got {steps!r}"
        )


def _distiller(teacher: Any, temperature: Any, alpha: Any, options: dict) -> Distiller:
    if not isinstance(teacher, Distiller):
        temperature = TEMPERATURE if temperature is None else temperature
        alpha = ALPHA if alpha is None else alpha
        return Distiller(teacher, temperature=temperature, alpha=alpha, **options)
    given = {"temperature": temperature, "alpha": alpha} | options
    given = sorted(k for k, v in given.items() if v is not None or k in options)
    if given:
        raise ValueError(f"teacher is a Distiller: give {given} to the Distiller, not to fit")
    return teacher


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    teacher: nn.Module | Sequence[nn.Module] | LogitCache | Distiller | None = None,
    num_epochs: int = default("num_epochs"),
    lr: float = default("lr"),
    batch_size: int = default("batch_size"),
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    temperature: Schedulable | None = None,
    alpha: Schedulable | None = None,
    augment: bool = True,
    precision: str = "auto",
    accumulation_steps: int = 1,
    channels_last: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool | None = None,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    desc: str | None = None,
    **distill: Any,
) -> History:
    """Train ``model`` on ``data.train``; distil from ``teacher`` when one is given.

    Introduced in notebook 02_teacher; 05_distillation writes its distillation step out by
    hand and checks that it leaves the same weights.

    Without a teacher the loss is cross-entropy on the labelled samples. With one, it is
    :func:`kdbook.losses.kd_loss` at ``temperature`` and ``alpha`` (numbers or schedules of
    the training progress ``step / total_steps``; None: the book's 4.0 and 0.7, declared in
    :mod:`kdbook.config`) on every sample, plus the terms the
    distillation keywords add (``**distill``, passed to :class:`kdbook.distill.Distiller`:
    ``teacher_weights``, ``feature_loss``, ``feature_weight``, ``teacher_augment``,
    ``terms``). ``teacher`` may be a model, a list of models, a
    :class:`kdbook.distill.LogitCache` or a ready Distiller.

    An epoch is ``ceil(len(data.train) / batch_size)`` steps whatever the labels; the
    learning rate follows a cosine over all steps; the final model is kept (no selection).
    ``accumulation_steps`` splits each batch into chunks whose gradients add up to the
    batch's. ``precision="auto"`` is bf16 autocast on GPUs (fp16 with a GradScaler where
    bf16 is missing) and fp32 on CPUs; ``channels_last`` and the fused optimizer default to
    on for GPUs (:class:`kdbook.runtime.Runtime`). Under ``torchrun`` the student trains in
    DistributedDataParallel on each rank's slice of the same global batch; metrics are
    summed over ranks and rank 0 writes the checkpoint.

    ``checkpoint``: the file rewritten atomically after every epoch; ``resume`` (default
    True) continues an unfinished run of the same settings or returns a finished one
    (:class:`kdbook.train.hooks.Checkpoint`). ``hooks``: :class:`FreezeHead`,
    :class:`ClipGradNorm`, :class:`TensorBoard` or your own (:class:`Hook`).

    Every argument is checked before any work, with one eval-mode forward pass of the model
    and teachers on the data. On the CPU the same seed gives bit-identical weights,
    interrupted and resumed or not; on a GPU some kernels are not bit-reproducible.

    Returns:
        A :class:`kdbook.checkpoint.History`: per epoch train loss and accuracy, val loss
        and accuracy, learning rate, seconds, and the terms' logs (``kl`` with a teacher,
        ``feature_loss``) and the epoch means of scheduled values.
    """
    args = {k: v for k, v in locals().items() if k not in ("model", "data")}  # fit's keywords
    loop, hooks = make_loop(model, data, args)
    done = max([hook.start(loop) for hook in hooks], default=0)
    try:
        if done < num_epochs:
            bar = tqdm(
                range(done + 1, num_epochs + 1),
                desc=desc or "train",
                disable=not progress or loop.runtime.rank != 0,
                total=num_epochs,
                initial=done,
            )
            for epoch in bar:
                record = _train_epoch(loop, epoch, hooks, accumulation_steps)
                loop.history.epochs.append(record)
                for hook in hooks:
                    hook.end_epoch(loop, record)
                bar.set_postfix(
                    loss=f"{record['train_loss']:.3f}", val_acc=f"{record['val_acc']:.1f}"
                )
    finally:  # a finished checkpoint (no epoch to train) or an interrupt too: writers close
        for hook in hooks:
            hook.end(loop)
    loop.student.eval()
    return loop.history


def make_loop(model: nn.Module, data: Dataset, args: dict[str, Any]) -> tuple[Loop, list[Hook]]:
    """What :func:`fit` does before its first epoch, for ``args`` (all of fit's keywords,
    ``distill`` the dict of distillation keywords): every check, then the set-up run."""
    a = args
    distiller = _distiller(a["teacher"], a["temperature"], a["alpha"], a["distill"])
    params = {k: a[k] for k in ("num_epochs", "lr", "batch_size", "seed", "device")}
    params["accumulation_steps"] = a["accumulation_steps"]
    _check_inputs(model, data, params)
    device = torch.device(resolve_device(a["device"]))
    runtime = Runtime.create(device, a["precision"], a["channels_last"])
    hooks = [*a["hooks"]]
    if a["checkpoint"] is not None:
        hooks.append(Checkpoint(a["checkpoint"], a["resume"]))
    for hook in hooks:
        hook.check(model)
    runtime.prepare(model)
    check_model_fits(model, data, runtime.device, "model")
    distiller.check(model, data, runtime.device)
    choose_threads(model, *distiller.teachers, data=data, batch_size=a["batch_size"])
    torch.manual_seed(a["seed"])
    optim = {k: a[k] for k in ("optimizer", "momentum", "weight_decay")}
    return _setup(model, data, distiller, runtime, hooks, a["augment"], params | optim), hooks


_FIT_SIGNATURE = inspect.signature(fit)  # fit's own, even where a test wraps kdbook.train.fit


def fit_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for :func:`fit` completed with fit's defaults, as :func:`make_loop` takes them
    (the distillation keywords gathered under ``distill``)."""
    bound = _FIT_SIGNATURE.bind(None, None, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("model", "data")}


def _setup(
    model: nn.Module,
    data: Dataset,
    distiller: Distiller,
    runtime: Runtime,
    hooks: Sequence[Hook],
    augment: bool,
    params: dict[str, Any],
) -> Loop:
    """The loader, the student module, optimizer, schedule and history of a fit call."""
    batch_size, seed = params["batch_size"], params["seed"]
    train = data.train
    if not distiller.distilling:
        train = train.subset(train.labels != UNLABELED)
    augment = distiller.augments(augment)
    # An epoch is as many steps as one pass over the whole training set, labelled or not,
    # so that a student that sees only the labelled few gets as many updates as the rest.
    loader = Loader(
        data,
        train,
        batch_size,
        shuffle=True,
        augment=augment and distiller.source.cache is None,  # a cache replays its views
        device=runtime.device,
        seed=seed,
        num_batches=math.ceil(len(data.train) / batch_size),
        shard=(runtime.rank, runtime.world),
    )
    student = distiller.student(model, data, runtime, seed)
    module = runtime.wrap(student)
    opt = runtime.optimizer(
        list(module.parameters()),
        params["optimizer"],
        params["lr"],
        params["weight_decay"],
        params["momentum"],
    )
    total_steps = params["num_epochs"] * len(loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    settings = {"model": getattr(model, "kdbook_name", type(model).__name__)}
    settings |= {"dataset": data.name, "train_samples": len(train), "augment": bool(augment)}
    settings |= {k: params[k] for k in ("num_epochs", "lr", "batch_size", "optimizer", "seed")}
    settings |= {k: params[k] for k in ("momentum", "weight_decay", "accumulation_steps")}
    settings |= distiller.settings()
    for hook in hooks:
        settings |= hook.settings()
    settings |= {"precision": runtime.precision, "world_size": runtime.world}
    fingerprint = {"train_labels": tensor_digest([data.train.labels])}
    fingerprint["teacher"] = distiller.fingerprint()
    return Loop(
        model, data, distiller, student, module, runtime, opt, sched, loader,
        History(settings), fingerprint,
    )  # fmt: skip


def _train_epoch(
    loop: Loop, epoch: int, hooks: Sequence[Hook], accumulation_steps: int
) -> dict[str, float]:
    """Train one epoch and evaluate on the validation split: the epoch's record."""
    start = time.perf_counter()
    loader, runtime = loop.loader, loop.runtime
    loop.module.train()
    loop.distiller.start_epoch(epoch, loader)
    total_steps = loop.history.settings["num_epochs"] * len(loader)
    step = (epoch - 1) * len(loader)
    scheduled = loop.distiller.scheduled()
    used = dict.fromkeys(scheduled, 0.0)
    before_step = [lambda hook=hook: hook.before_step(loop) for hook in hooks]

    def loss_fn(x, y, idx):
        return loop.distiller.loss(loop.module, x, y, idx, loop.progress)

    sums: dict[str, float] = {}
    for batch in loader:
        loop.progress = step / total_steps
        result = runtime.step(
            loop.module,
            loss_fn,
            batch,
            loop.opt,
            accumulation_steps=accumulation_steps,
            global_size=loader.global_size,
            before_step=before_step,
        )
        for name, value in (
            ("loss", result.loss),
            ("correct", result.correct),
            ("seen", result.seen),
            ("labelled", result.labelled),
            *result.logs.items(),
        ):
            sums[name] = sums.get(name, 0.0) + value
        for name, value in scheduled.items():
            used[name] += value_at(value, loop.progress)
        loop.sched.step()
        step += 1
    if runtime.world > 1:
        reduced = all_reduce(torch.tensor(list(sums.values()), dtype=torch.float64), runtime.device)
        sums = dict(zip(sums, reduced.tolist(), strict=True))
        broadcast_buffers(loop.model)
    shard = (runtime.rank, runtime.world)
    val_loss, val_acc = _evaluate(loop.model, loop.data, loop.data.val, runtime, shard)
    record = {
        "epoch": epoch,
        "lr": loop.sched.get_last_lr()[0],
        "train_loss": sums["loss"] / sums["seen"],
        "train_acc": 100.0 * sums["correct"] / max(1.0, sums["labelled"]),
        "val_loss": val_loss,
        "val_acc": val_acc,
        "seconds": time.perf_counter() - start,
    }
    record |= {name: sums[name] / sums["seen"] for name in sums if name not in _COUNTS}
    record |= {name: total / len(loader) for name, total in used.items()}
    return record


_COUNTS = ("loss", "correct", "seen", "labelled")


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: Dataset,
    split: Split,
    runtime: Runtime,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, float]:
    """Loss and accuracy (%) of ``model`` on a split, in eval mode (summed over the ranks)."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for x, y, _ in Loader(data, split, 512, device=runtime.device, shard=shard):
        with autocast(runtime.precision, runtime.device):
            logits = model(x).float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        sums[1] += (logits.argmax(1) == y).sum().item()
    if shard[1] > 1:
        sums = all_reduce(sums, runtime.device)
    return sums[0].item() / len(split), 100.0 * sums[1].item() / len(split)
