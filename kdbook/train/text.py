"""Training language models: :func:`fit_lm`, the sibling of :func:`kdbook.train.fit` for text.

``fit_lm`` trains a causal language model (:mod:`kdbook.transformer`) on windows of a
:class:`kdbook.text.TextData`, with next-token cross-entropy, or distilled token by token
from a teacher (:func:`kdbook.losses.kd_loss` at every position, teacher-forced), or on the
teacher's own text (sequence-level KD: pass the teacher's windows as ``windows``). It
shares :func:`fit`'s machinery rather than copying it: the step is
:meth:`kdbook.runtime.Runtime.step` (device, precision, accumulation), the run is a
:class:`kdbook.train.hooks.Loop` that the same hooks read (:class:`Checkpoint` with
``checkpoint=``: saved every epoch, resumed, weights-only loading; :class:`ClipGradNorm`,
:class:`TimeEstimate`, ...), the threads follow :func:`kdbook.runtime.threads_for_flops`,
and the seed fixes the initial shuffle as fit's does. An epoch is one pass over the windows
in a shuffled order; AdamW with a cosine schedule; the final model is kept.

Seeds train one at a time, not side by side: ``kdbook bench``'s "LM students, vmap" line
trains 4 students of 15 as one ``torch.func.vmap``-ed model, and on a 2-core CPU (shared,
load about 6) each student read 0.25 times the characters a second of one trained alone
(the transformer's batched attention and normalisation cost more under vmap than the
shared step saves). Rerun it where the answer may differ (a GPU).

Introduced in notebook 15_language_model_kd.

>>> from kdbook.text import text_data
>>> from kdbook.models import build_model
>>> data = text_data("the cat sat on the mat. " * 40)
>>> model = build_model("char_tiny", data, context=16)
>>> history = fit_lm(model, data, num_epochs=2, batch_size=8, progress=False)
>>> history.final["train_loss"] < history.epochs[0]["train_loss"] + 1
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from kdbook.checkpoint import History
from kdbook.config import resolve_device
from kdbook.evaluate import lm_logits, lm_metrics
from kdbook.io import tensor_digest
from kdbook.losses import check_temperature_alpha, kd_loss
from kdbook.runtime import Runtime, threads_for_flops
from kdbook.text import TextData, check_context, tiled_windows
from kdbook.train.hooks import Checkpoint, Hook, Loop

LM_WEIGHT_DECAY = 0.1  # AdamW's, on every weight (the book's small models need no exceptions)
VAL_WINDOWS = 256  # windows of the validation split scored after each epoch


class TokenWindows:
    """fit_lm's loader: batches ``(x, y, idx)`` of windows and their next-token targets.

    ``source`` is either fixed windows ``[P, L + 1]`` (shuffled anew each epoch; ``idx``
    says which, for a teacher's cached logits) or a 1-D split of tokens, from which each
    epoch draws ``(len - 1) // context`` windows at random starts (every character lands at
    every position of a window over the epochs: a teacher trained so reaches a lower loss
    in the same steps than on fixed windows). The draws come from the loader's own
    generator, seeded: a seed gives the same batches.
    """

    def __init__(
        self,
        source: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        context: int | None = None,
    ) -> None:
        self.source, self.batch_size, self.device = source, batch_size, device
        self.random = source.dim() == 1
        self.context = source.shape[1] - 1 if not self.random else context
        self.count = (len(source) - 1) // self.context if self.random else len(source)
        self.generator = torch.Generator().manual_seed(seed)
        self.global_size = batch_size

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        if self.random:
            starts = torch.randint(len(self.source) - self.context, (self.count,),
                                   generator=self.generator)  # fmt: skip
            windows = self.source[starts[:, None] + torch.arange(self.context + 1)]
        else:
            windows = self.source
        order = torch.randperm(self.count, generator=self.generator)
        for idx in order.split(self.batch_size):
            w = windows[idx].to(self.device)
            yield w[:, :-1], w[:, 1:], idx


class TokenObjective:
    """What a fit_lm step minimises (the role a :class:`kdbook.distill.Distiller` plays in
    fit): cross-entropy on the next tokens, or with a teacher Hinton's loss at every
    position, ``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE``, averaged over tokens.

    ``teacher``: a language model (run on each batch, no gradient) or its logits
    ``[P, L, V]`` on the training windows, computed once (:func:`kdbook.evaluate.lm_logits`).
    """

    def __init__(
        self,
        teacher: nn.Module | torch.Tensor | None,
        temperature: float | None,
        alpha: float | None,
    ) -> None:
        from kdbook.config import default

        self.teacher = teacher
        self.distilling = teacher is not None
        self.temperature = default("temperature") if temperature is None else temperature
        self.alpha = default("alpha") if alpha is None else alpha
        if self.distilling:
            check_temperature_alpha(self.temperature, self.alpha)

    def loss(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, progress: Any
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        logits = module(x)
        flat, targets = logits.flatten(0, 1).float(), y.flatten()
        if not self.distilling:
            return F.cross_entropy(flat, targets), logits, {}
        if isinstance(self.teacher, torch.Tensor):
            teacher = self.teacher[idx].to(flat.device)
        else:
            with torch.no_grad():
                teacher = self.teacher(x)
        teacher = teacher.flatten(0, 1).float()
        loss = kd_loss(flat, teacher, targets, self.temperature, self.alpha)
        return loss, logits, {}

    # what the hooks of fit ask a Distiller for
    def rng_state(self) -> dict[str, torch.Tensor]:
        return {}

    def set_rng_state(self, rng: dict[str, torch.Tensor]) -> None:
        pass

    def settings(self) -> dict[str, Any]:
        if not self.distilling:
            return {"teacher": None}
        source = "logits" if isinstance(self.teacher, torch.Tensor) else self.teacher.kdbook_name
        return {"teacher": source, "temperature": self.temperature, "alpha": self.alpha}

    def fingerprint(self) -> str | None:
        if not self.distilling:
            return None
        if isinstance(self.teacher, torch.Tensor):
            return tensor_digest([self.teacher])
        return tensor_digest(list(self.teacher.state_dict().values()))


class _Student(nn.Module):
    """The model as the hooks see it (``loop.student.terms``: a language model has none)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.terms = model, nn.ModuleList()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def check_lm(model: Any, data: Any, role: str = "model") -> None:
    """Raise, in one line, unless ``model`` is a language model over ``data``'s vocabulary
    (a :class:`kdbook.text.TextData`); ``role`` names it ("teacher", "student")."""
    if not isinstance(data, TextData):
        raise TypeError(
            f"data must be a kdbook.text.TextData (from load_text), got {type(data).__name__}"
        )
    if not isinstance(model, nn.Module) or not hasattr(model, "context"):
        raise TypeError(
            f"{role} must be a language model (kdbook.models.list_models('text')), "
            f"got {type(model).__name__}"
        )
    if model.vocab_size != data.vocab_size:
        raise ValueError(
            f"{role}'s vocabulary has {model.vocab_size} tokens, text {data.name!r} has "
            f"{data.vocab_size}: build it with build_model(name, data)"
        )


def fit_lm(
    model: nn.Module,
    data: TextData,
    *,
    windows: torch.Tensor | None = None,
    teacher: nn.Module | torch.Tensor | None = None,
    num_epochs: int = 1,
    lr: float = 3e-3,
    batch_size: int = 32,
    weight_decay: float = LM_WEIGHT_DECAY,
    temperature: float | None = None,
    alpha: float | None = None,
    precision: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool | None = None,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    desc: str | None = None,
) -> History:
    """Train the language model ``model`` on ``windows`` of ``data``; distil from ``teacher``.

    Args:
        model: a language model (``build_model("char_tiny", data)``).
        data: the corpus; its validation split is scored after every epoch.
        windows: ``[P, L + 1]`` token windows to train on (inputs and their next-token
            targets; :func:`kdbook.text.window_tensor` cuts them), the same every epoch;
            sequence-level KD passes the teacher's text. Default: each epoch draws as many
            windows as the training split holds at the model's context, at random starts
            (:class:`TokenWindows`).
        teacher: a language model, or its logits ``[P, L, V]`` on ``windows``: token-level
            KD at ``temperature`` and ``alpha`` (None: the book's 4.0 and 0.7).
        num_epochs, lr, batch_size, weight_decay: the schedule (AdamW, cosine over all steps).
        precision, device, seed, checkpoint, resume, hooks, progress, desc: as
            :func:`kdbook.train.fit` takes them.

    Every argument is checked before any work: a vocabulary that is not ``data``'s, windows
    longer than the model's context, teacher logits that do not match the windows.

    Returns:
        A :class:`kdbook.checkpoint.History`: per epoch ``train_loss`` (nats a token),
        ``train_acc`` (% of tokens), ``val_loss``, ``val_bpc``, ``val_acc``, ``lr``,
        ``seconds``.
    """
    loop, hooks = make_lm_loop(model, data, locals())
    done = max([hook.start(loop) for hook in hooks], default=0)
    try:
        bar = tqdm(range(done + 1, num_epochs + 1), desc=desc or "train", disable=not progress,
                   total=num_epochs, initial=done)  # fmt: skip
        for epoch in bar:
            record = _train_epoch(loop, epoch, hooks)
            loop.history.epochs.append(record)
            for hook in hooks:
                hook.end_epoch(loop, record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val_bpc=f"{record['val_bpc']:.3f}")
    finally:
        for hook in hooks:
            hook.end(loop)
    loop.model.eval()
    return loop.history


def _check_windows(model: nn.Module, data: TextData, windows: Any) -> torch.Tensor:
    if windows is None:
        check_context(data.train, model.context, "the training split")
        return data.train
    if not (isinstance(windows, torch.Tensor) and windows.dim() == 2 and windows.dtype == torch.long
            and len(windows) >= 1 and windows.shape[1] >= 2):  # fmt: skip
        raise ValueError(
            "windows must be a [P, L + 1] LongTensor of token ids (P >= 1, L >= 1), got "
            f"{getattr(windows, 'dtype', type(windows).__name__)} of shape "
            f"{tuple(getattr(windows, 'shape', ()))}"
        )
    context = windows.shape[1] - 1
    if context > model.context:
        raise ValueError(
            f"windows of context {context} are longer than the model's context "
            f"{model.context}: cut windows of at most {model.context} tokens"
        )
    if int(windows.max()) >= data.vocab_size or int(windows.min()) < 0:
        raise ValueError(f"windows hold token ids outside text {data.name!r}'s vocabulary "
                         f"[0, {data.vocab_size})")  # fmt: skip
    return windows


def make_lm_loop(model: nn.Module, data: TextData, a: dict[str, Any]) -> tuple[Loop, list[Hook]]:
    """What :func:`fit_lm` does before its first epoch (``a``: its arguments): every check,
    then the set-up run."""
    check_lm(model, data)
    for name, least in (("num_epochs", 1), ("batch_size", 1)):
        value = a[name]
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if not (isinstance(a["lr"], int | float) and a["lr"] > 0):
        raise ValueError(f"lr must be a number > 0, got {a['lr']!r}")
    windows = _check_windows(model, data, a["windows"])
    context = model.context if windows.dim() == 1 else windows.shape[1] - 1
    teacher = a["teacher"]
    if isinstance(teacher, torch.Tensor):
        if windows.dim() == 1:
            raise ValueError("teacher logits need the windows they were computed on: give windows=")
        want = (len(windows), context, data.vocab_size)
        if tuple(teacher.shape) != want:
            raise ValueError(f"teacher logits must be [P, L, V] = {list(want)} for these "
                             f"windows, got {list(teacher.shape)}")  # fmt: skip
    elif teacher is not None:
        check_lm(teacher, data, "teacher")
        if context > teacher.context:
            raise ValueError(f"windows of context {context} are longer than the "
                             f"teacher's context {teacher.context}")  # fmt: skip
    objective = TokenObjective(teacher, a["temperature"], a["alpha"])
    device = torch.device(resolve_device(a["device"]))
    runtime = Runtime.create(device, a["precision"], channels_last=False)
    hooks = [*a["hooks"]]
    if a["checkpoint"] is not None:
        hooks.append(Checkpoint(a["checkpoint"], a["resume"]))
    for hook in hooks:
        hook.check(model)
    runtime.prepare(model)
    if isinstance(teacher, nn.Module):
        runtime.prepare(teacher)
        teacher.eval()
    models = [model] + ([teacher] if isinstance(teacher, nn.Module) else [])
    tokens = a["batch_size"] * context
    threads_for_flops(model, lambda: 2 * tokens * sum(_count(m) for m in models))
    torch.manual_seed(a["seed"])
    loader = TokenWindows(windows, a["batch_size"], a["seed"], runtime.device, context)
    student = _Student(model)
    opt = runtime.optimizer(list(model.parameters()), "adamw", a["lr"], a["weight_decay"], 0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a["num_epochs"] * len(loader))
    settings = {"model": getattr(model, "kdbook_name", type(model).__name__),
                "dataset": data.name, "text_digest": data.digest, "train_windows": loader.count,
                "random_windows": loader.random, "context": context}  # fmt: skip
    settings |= {k: a[k] for k in ("num_epochs", "lr", "batch_size", "seed", "weight_decay")}
    settings |= {"optimizer": "adamw"} | objective.settings()
    for hook in hooks:
        settings |= hook.settings()
    settings |= {"precision": runtime.precision, "world_size": runtime.world}
    fingerprint = {"train_windows": tensor_digest([windows]), "teacher": objective.fingerprint()}
    loop = Loop(
        model, data, objective, student, student, runtime, opt, sched, loader,
        History(settings), fingerprint,
    )  # type: ignore[arg-type]  # fmt: skip
    return loop, hooks


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _train_epoch(loop: Loop, epoch: int, hooks: Sequence[Hook]) -> dict[str, float]:
    start = time.perf_counter()
    loader, runtime = loop.loader, loop.runtime
    loop.module.train()
    total_steps = loop.history.settings["num_epochs"] * len(loader)
    step = (epoch - 1) * len(loader)
    before_step = [lambda hook=hook: hook.before_step(loop) for hook in hooks]

    def loss_fn(x, y, idx):
        return loop.distiller.loss(loop.module, x, y, idx, loop.progress)

    sums = dict.fromkeys(("loss", "correct", "seen", "labelled"), 0.0)
    for batch in loader:
        loop.progress = step / total_steps
        result = runtime.step(loop.module, loss_fn, batch, loop.opt, before_step=before_step)
        sums["loss"] += result.loss
        sums["correct"] += result.correct
        sums["seen"] += result.seen
        sums["labelled"] += result.labelled
        loop.sched.step()
        step += 1
    x, y = tiled_windows(loop.data.val, loop.history.settings["context"], VAL_WINDOWS)
    val = lm_metrics(lm_logits(loop.model, x, device=str(runtime.device)), y)
    return {
        "epoch": epoch,
        "lr": loop.sched.get_last_lr()[0],
        "train_loss": sums["loss"] / sums["seen"],
        "train_acc": 100.0 * sums["correct"] / max(1.0, sums["labelled"]),
        "val_loss": val["loss"],
        "val_bpc": val["bpc"],
        "val_acc": val["acc"],
        "seconds": time.perf_counter() - start,
    }
