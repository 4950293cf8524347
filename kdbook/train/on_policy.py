"""On-policy distillation of a causal language model (GKD, Agarwal et al., ICLR 2024): the
student writes sequences, the teacher scores every position, and the student minimises a
divergence on its own samples; :func:`fit_on_policy` with TRL ``GKDTrainer``'s knobs.

Why a loop of its own and not a hook on :func:`kdbook.train.fit`: fit's batches come from a
data set's loader before any hook runs, while here each batch is *generated*, by the student
(with probability ``lmbda``) or by the teacher (``seq_kd``), with the weights of that step.
The step itself is fit's (:meth:`kdbook.runtime.Runtime.step`: device, precision, the
optimizer, the cosine schedule over all steps), and so is what comes back (a
:class:`kdbook.checkpoint.History`).

A task says how to read and write sequences (:class:`SequenceTask`); the synthetic language's
is :func:`kdbook.synthetic_language.language_task`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.checkpoint import History
from kdbook.config import resolve_device
from kdbook.losses.tokens import check_jsd_beta, generalized_jsd_loss, token_cross_entropy
from kdbook.runtime import OPTIMIZERS, Runtime, threads_for_flops

LMBDA = 0.5  # TRL GKDConfig's default fraction of on-policy batches


@dataclass(frozen=True)
class SequenceTask:
    """How a model reads and writes the task's sequences.

    ``logits(model, sequences[N, L]) -> [N, L, V]``: position l's logits for token l of each
    sequence (a causal model's, shifted as the task needs); ``sample(model, n, generator,
    temperature) -> [n, L]``: sequences drawn from the model.
    """

    logits: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    sample: Callable[[nn.Module, int, torch.Generator, float], torch.Tensor]


def check_on_policy(lmbda: Any, beta: Any, temperature: Any, seq_kd: Any, teacher: Any) -> None:
    """Raise ValueError naming the first bad knob of :func:`fit_on_policy`."""
    if not (isinstance(lmbda, int | float) and not isinstance(lmbda, bool) and 0 <= lmbda <= 1):
        raise ValueError(
            f"lmbda must be a number in [0, 1] (the fraction of on-policy batches), got {lmbda!r}"
        )
    check_jsd_beta(beta)
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be > 0 (the sampling temperature), got {temperature!r}")
    if not isinstance(seq_kd, bool):
        raise ValueError(f"seq_kd must be True or False, got {seq_kd!r}")
    if teacher is None and (lmbda > 0 or seq_kd):
        raise ValueError(
            f"without a teacher lmbda must be 0 and seq_kd False (the student alone learns "
            f"from the data), got lmbda={lmbda!r}, seq_kd={seq_kd!r}"
        )


def _check_run(data: torch.Tensor, *, lr: Any, optimizer: Any, **counts: Any) -> None:
    """Raise ValueError, naming it, for a count below 1, a bad lr or optimizer, or data that
    is not a LongTensor of sequences: before any work."""
    for name, value in counts.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (isinstance(lr, int | float) and lr > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if data.dim() != 2 or data.dtype != torch.long or len(data) < 1:
        raise ValueError(f"data must be a LongTensor [N, L] of sequences, got {data.dtype} "
                         f"of shape {tuple(data.shape)}")  # fmt: skip


def _next_batch(task, data, student, teacher, lmbda, seq_kd, temperature, batch_size, g):
    """One step's sequences and whether the student wrote them: drawn from ``data``, or the
    teacher's samples (``seq_kd``), then with probability ``lmbda`` the student's own."""
    batch = data[torch.randint(len(data), (batch_size,), generator=g)]
    if seq_kd:
        batch = task.sample(teacher, batch_size, g, temperature).to(data.device)
    on_policy = teacher is not None and float(torch.rand((), generator=g)) < lmbda
    if on_policy:
        batch = task.sample(student, batch_size, g, temperature).to(data.device)
    return batch, on_policy


def _record(history, step, sums, sched, seconds, student, evaluate) -> dict[str, Any]:
    """The history's record of the steps since the last one (``epoch``: its number)."""
    record = {"epoch": len(history.epochs) + 1, "step": step}
    record |= {"train_loss": sums["loss"] / sums["count"]}
    record |= {"on_policy": sums["on_policy"] / sums["count"]}
    record |= {"lr": sched.get_last_lr()[0], "seconds": seconds}
    if evaluate is not None:
        student.eval()
        record |= evaluate(student)
    return record


def fit_on_policy(
    student: nn.Module,
    task: SequenceTask,
    data: torch.Tensor,
    *,
    teacher: nn.Module | None = None,
    lmbda: float | None = None,
    beta: float = 0.5,
    seq_kd: bool = False,
    temperature: float = 1.0,
    steps: int = 200,
    batch_size: int = 64,
    lr: float = 3e-3,
    optimizer: str = "adamw",
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "auto",
    eval_every: int = 50,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train ``student`` for ``steps`` optimizer steps by generalised knowledge distillation.

    Introduced in notebook 16_on_policy_distillation.

    Each step takes ``batch_size`` sequences: drawn from ``data`` (off-policy, TRL's
    supervised batches); replaced by the teacher's samples when ``seq_kd`` (sequence-level KD,
    Kim & Rush 2016); then, with probability ``lmbda``, by the student's own samples
    (on-policy). The teacher scores every position and the loss is
    :func:`kdbook.losses.generalized_jsd_loss` at ``beta`` (0 forward KL, 1 reverse KL,
    TRL's convention) between the student's and the teacher's next-token distributions.
    Without a teacher the loss is next-token cross-entropy on ``data`` (the student alone, or
    the teacher's own training). ``lmbda = 1, beta = 1`` is on-policy reverse KL (MiniLLM's
    objective in its per-token form, without its policy-gradient estimator).

    As in TRL, ``temperature`` is the sampling temperature of the generated sequences; the
    divergence is taken at T = 1.

    Args:
        student: a causal model, trained in place.
        task: how to read and write sequences (:class:`SequenceTask`).
        data: ``[N, L]`` token ids, the off-policy sequences.
        teacher: scores every position (kept in eval mode, never trained); None: the student
            alone.
        lmbda: fraction of on-policy batches, in [0, 1] (TRL's ``lmbda``); None: TRL's 0.5
            with a teacher, 0 without.
        beta: of the JSD, in [0, 1] (TRL's ``beta``).
        seq_kd: off-policy batches are the teacher's samples, not ``data``.
        temperature: > 0, of the sampling.
        steps, batch_size, lr, optimizer, weight_decay, seed, device, precision: as
            :func:`kdbook.train.fit` (the learning rate follows a cosine over all steps).
        eval_every: a record every that many steps (and after the last).
        evaluate: ``evaluate(student) -> {name: value}`` added to each record (in eval mode).

    Returns:
        A History: per record (``epoch`` is its number) ``step``, ``train_loss`` (mean over
        its steps), ``on_policy`` (fraction of its batches the student wrote), ``lr``,
        ``seconds`` and ``evaluate``'s numbers. A non-finite loss stops training; the
        history's settings say ``diverged``.
    """
    if lmbda is None:
        lmbda = 0.0 if teacher is None else LMBDA
    check_on_policy(lmbda, beta, temperature, seq_kd, teacher)
    _check_run(data, steps=steps, batch_size=batch_size, eval_every=eval_every, lr=lr,
               optimizer=optimizer)  # fmt: skip
    runtime = Runtime.create(torch.device(resolve_device(device)), precision)
    models = [student, *([teacher] if teacher is not None else [])]
    runtime.prepare(*models)
    # as fit: one thread for small models (a step's forward work, about 6 flops a weight a token)
    weights = sum(p.numel() for m in models for p in m.parameters())
    threads_for_flops(student, lambda: 6 * weights * data.shape[1] * batch_size)
    if teacher is not None:
        teacher.eval()
    data = data.to(runtime.device)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = runtime.optimizer(list(student.parameters()), optimizer, lr, weight_decay, 0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    settings = {"model": getattr(student, "kdbook_name", type(student).__name__)}
    settings |= {"lmbda": lmbda, "beta": beta, "seq_kd": seq_kd, "temperature": temperature}
    settings |= {"steps": steps, "batch_size": batch_size, "lr": lr, "optimizer": optimizer}
    settings |= {"seed": seed, "teacher": teacher is not None, "precision": runtime.precision}
    history = History(settings)

    def loss_fn(x: torch.Tensor, y: torch.Tensor, idx: Any):
        logits = task.logits(student, x).float()
        if teacher is None:
            return token_cross_entropy(logits, y), logits, {}
        with torch.no_grad():
            teacher_logits = task.logits(teacher, x).float()
        return generalized_jsd_loss(logits, teacher_logits, None, beta), logits, {}

    sums = {"loss": 0.0, "on_policy": 0.0, "count": 0}
    start = time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc=desc or "on-policy", disable=not progress):
        batch, on_policy = _next_batch(
            task, data, student, teacher, lmbda, seq_kd, temperature, batch_size, g
        )
        student.train()
        result = runtime.step(student, loss_fn, (batch, batch, None), opt)
        sched.step()
        loss = result.loss / result.seen
        sums["loss"] += loss
        sums["on_policy"] += on_policy
        sums["count"] += 1
        if not math.isfinite(loss):
            history.settings["diverged"] = f"non-finite loss at step {step}"
        if step % eval_every == 0 or step == steps or not math.isfinite(loss):
            seconds = time.perf_counter() - start
            history.epochs.append(_record(history, step, sums, sched, seconds, student, evaluate))
            sums = {"loss": 0.0, "on_policy": 0.0, "count": 0}
            start = time.perf_counter()
        if not math.isfinite(loss):
            break
    student.eval()
    return history
