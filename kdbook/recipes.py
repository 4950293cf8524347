"""Recipes built on :func:`kdbook.train.fit`: a run's teacher, born-again and mutual learning,
and the KD settings an earlier notebook chose in the run folder; the language-model teacher
of 15-16 (:func:`lm_teacher_from_run`, with :func:`kdbook.train.fit_lm`).

Each is a few calls of ``fit`` (sources 2 and 3 of the references). The multi-teacher variant needs
no function: ``fit(student, data, teacher=[t1, t2], teacher_weights=[...])``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from kdbook.checkpoint import History, is_unfinished, load_checkpoint, save_checkpoint
from kdbook.config import PRESETS, check_params, cpu_sizes, default, resolve_device
from kdbook.data import Dataset
from kdbook.io import read_json, write_json
from kdbook.models import build_model
from kdbook.train import BestEpoch, TimeEstimate, fit, fit_lm


def trained_in_run(
    cfg,
    data: Dataset,
    model: str,
    filename: str,
    *,
    resume: bool | None = None,
    progress: bool = False,
    desc: str | None = None,
    **settings: Any,
) -> tuple[nn.Module, History]:
    """A model trained with :func:`kdbook.train.fit` and kept in the run folder.

    ``model`` is built after ``torch.manual_seed(cfg.seed)`` and trained with
    ``cfg.fit_kwargs(**settings)`` (``num_epochs=...``, ``teacher=...``, ``optimizer=...``)
    at ``cfg.seed``, checkpointed in ``run_dir/filename``: a rerun, or the next notebook,
    loads the finished run (or continues an interrupted one) instead of training again.
    :func:`teacher_from_run`, :func:`vit_teacher_from_run` and notebook 14's teachers use it.

    Args:
        cfg: a :class:`kdbook.config.Config`.
        data: the data set of ``cfg.dataset``.
        model: a registered model name (:func:`kdbook.models.list_models`).
        filename: the checkpoint's name in ``cfg.run_dir``.
        resume, progress, desc: as :func:`kdbook.train.fit` takes them.

    Returns:
        The model in eval mode and its history.
    """
    torch.manual_seed(cfg.seed)
    net = build_model(model, data)
    history = fit(
        net,
        data,
        **cfg.fit_kwargs(**settings),
        seed=cfg.seed,
        checkpoint=Path(cfg.run_dir) / filename,
        resume=resume,
        progress=progress,
        desc=desc,
    )
    return net.eval(), history


def early_stopped_in_run(
    cfg, data: Dataset, model: str, filename: str, *, within: float, num_epochs: int
) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` trained on ``num_epochs``' schedule and stopped early on validation: the
    weights of its best validation epoch among the first ``within`` of training
    (:class:`kdbook.train.BestEpoch`), kept in ``run_dir/filename`` (introduced in 14).

    Returns:
        The model in eval mode and ``{"epoch", "val_acc", "within", "num_epochs"}``: the
        epoch chosen and its validation accuracy (also in ``filename`` with ``.json``). A
        rerun with the same settings loads both.
    """
    path = Path(cfg.run_dir) / filename
    settings = cfg.fit_kwargs(num_epochs=num_epochs)
    hook = BestEpoch(within)
    chosen_path = path.with_suffix(".json")
    if path.is_file() and chosen_path.is_file():
        try:
            net, meta = load_checkpoint(path, data, expect_model=model)
            saved, chosen = meta.get("settings", {}), read_json(chosen_path)
            keys = ("num_epochs", "lr", "batch_size", "seed", "best_epoch_within")
            wanted = settings | {"seed": cfg.seed} | hook.settings()
            if all(saved.get(k) == wanted[k] for k in keys):
                return net.to(resolve_device(cfg.device)).eval(), chosen
        except ValueError:
            pass  # not a checkpoint of this run's settings: trained again below
    torch.manual_seed(cfg.seed)
    net = build_model(model, data)
    history = fit(net, data, **settings, seed=cfg.seed, hooks=[hook], progress=False)
    chosen = {"epoch": hook.best_epoch, "val_acc": hook.best_val_acc, "within": within,
              "num_epochs": num_epochs}  # fmt: skip
    save_checkpoint(path, net, data, history)
    write_json(chosen_path, chosen)
    return net.eval(), chosen


def teacher_from_run(
    cfg, data: Dataset, *, num_epochs: int | None = None, progress: bool = True
) -> tuple[nn.Module, dict]:
    """The teacher of this run: loaded from ``run_dir/teacher.pt``, or trained and saved there.

    A notebook opened on its own calls this and gets the teacher 02_teacher would have
    left, with a message saying which happened. A checkpoint of another architecture or
    data set is not reused: it is retrained (and the message says why). An unfinished
    checkpoint (a training that was interrupted) is continued from its last epoch.

    A teacher trained here gets the preset's number of epochs (its CPU size on a CPU, as
    02 would train it), not ``cfg.num_epochs``: a notebook that shortens its students'
    training still gets the teacher 02 would train.

    Args:
        cfg: a :class:`kdbook.config.Config`.
        data: the data set of ``cfg.dataset``.
        num_epochs: the teacher's epochs when it must be trained (default: the preset's).

    Returns:
        The teacher in eval mode and its checkpoint metadata.
    """
    sizes = PRESETS[cfg.preset] | cpu_sizes(cfg.preset, cfg.device)  # what 02 would train
    num_epochs = num_epochs or sizes["num_epochs"]
    path = Path(cfg.run_dir) / "teacher.pt"
    unfinished = is_unfinished(path) if path.is_file() else False
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
    teacher, _ = trained_in_run(
        cfg,
        data,
        cfg.teacher,
        path.name,
        num_epochs=num_epochs,
        resume=unfinished,
        progress=progress,
        desc=f"teacher {cfg.teacher}",
        hooks=[TimeEstimate()],  # its expected time, after the first epoch
    )
    return teacher, load_checkpoint(path, data)[1]


def born_again(
    student: str,
    data: Dataset,
    *,
    generations: int = 3,
    seed: int | Sequence[int] = 0,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    **fit_kwargs: Any,
) -> list[tuple[nn.Module, History]] | dict[int, list[tuple[nn.Module, History]]]:
    """Self-distillation (born-again networks, Furlanello et al. 2018, arXiv:1805.04770).

    Generation 1 is ``student`` trained alone; generation k is the same architecture
    distilled from generation k - 1 (``fit(teacher=previous)``). Every generation starts
    from the same initial weights (the model built after ``torch.manual_seed(seed)``), so
    that what differs between them is only what they were taught.

    Args:
        student: a registered model name.
        data: the data set.
        generations: how many models to train (>= 1).
        seed: seeds the initial weights and every fit; a list of seeds trains each
            generation of every seed side by side (:func:`kdbook.stack.fit_side_by_side`).
        checkpoint_dir: when given (one seed only), generation k is checkpointed in
            ``gen{k}.pt`` there (and resumed by a rerun).
        **fit_kwargs: passed to every :func:`fit` (num_epochs, lr, temperature, alpha...).

    Returns:
        ``[(model, history), ...]``, one pair per generation, models in eval mode; for a
        list of seeds, seed -> that list.
    """
    from kdbook.stack import fit_side_by_side

    if not (isinstance(generations, int) and generations >= 1):
        raise ValueError(f"generations must be an integer >= 1, got {generations!r}")
    if "teacher" in fit_kwargs:
        raise ValueError("born_again trains its own teachers: pass no teacher")
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not seeds or (checkpoint_dir is not None and len(seeds) > 1):
        raise ValueError(
            f"seed must be one seed, or a list of seeds without checkpoint_dir, got {seed!r}"
        )
    results: dict[int, list[tuple[nn.Module, History]]] = {s: [] for s in seeds}
    for k in range(1, generations + 1):
        models = []
        for s in seeds:
            torch.manual_seed(s)
            models.append(build_model(student, data))
        runs = [{"seed": s, "teacher": results[s][-1][0] if k > 1 else None} for s in seeds]
        if checkpoint_dir is not None:
            runs[0]["checkpoint"] = Path(checkpoint_dir) / f"gen{k}.pt"
        histories = fit_side_by_side(
            models, data, runs, progress=progress, desc=f"generation {k}", **fit_kwargs
        )
        for s, model, history in zip(seeds, models, histories, strict=True):
            model.eval()
            results[s].append((model, history))
    return results[seed] if isinstance(seed, int) else results


def restart_peak(lr: float, epoch: int, num_epochs: int) -> float:
    """The peak learning rate of epoch ``epoch`` (1-based) of :func:`mutual_learning`'s and
    :func:`warm_restarts`' one-epoch turns: a cosine from ``lr`` over ``num_epochs``.

    >>> [round(restart_peak(0.1, e, 4), 4) for e in (1, 2, 3, 4)]
    [0.1, 0.0854, 0.05, 0.0146]
    """
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / num_epochs))


def _record_turn(
    histories: Sequence[History],
    turns: Sequence[History],
    seeds: Sequence[int],
    epoch: int,
    seconds: float,
    **settings: Any,
) -> None:
    """Append one one-epoch turn (a ``fit`` history per model) to each run's own history,
    as epoch ``epoch``, with the run's whole settings (``settings``: lr, num_epochs)."""
    for history, turn, s in zip(histories, turns, seeds, strict=True):
        history.settings |= turn.settings | settings | {"seed": s}
        history.epochs.append({**turn.final, "epoch": epoch, "seconds": seconds})


def warm_restarts(
    models: Sequence[nn.Module],
    data: Dataset,
    *,
    num_epochs: int = 10,
    lr: float = 0.05,
    seed: Sequence[int] = (0,),
    progress: bool = True,
    **fit_kwargs: Any,
) -> list[History]:
    """:func:`mutual_learning`'s schedule with no peer: the control that tells what its
    approximation costs a student on its own.

    Every epoch is its own one-epoch ``fit`` call from the labels alone, at the peak
    :func:`restart_peak` gives (momentum reset, the cosine restarted), shuffled with
    ``seed + epoch``, exactly as each turn of :func:`mutual_learning`; the models (one per
    seed) train side by side. Set beside the student trained alone and beside mutual
    learning, it splits mutual learning's difference from the student alone into what its
    restarts do and what the peer does.

    Returns:
        One history per model, one record per epoch (epochs numbered 1..num_epochs).
    """
    from kdbook.stack import fit_side_by_side

    models, seeds = list(models), list(seed)
    if not len(models) == len(seeds) >= 1:
        raise ValueError(f"models and seed must pair up, got {len(models)} and {len(seeds)}")
    check_params({"num_epochs": num_epochs, "lr": lr})
    for s in seeds:
        check_params({"seed": s})
    if fit_kwargs.get("teacher") is not None:
        raise ValueError("warm_restarts trains without a teacher, got teacher=...")
    histories = [History(settings={"mode": "warm restarts"}) for _ in seeds]
    for epoch in tqdm(range(1, num_epochs + 1), desc="warm restarts", disable=not progress):
        start = time.perf_counter()
        turns = fit_side_by_side(
            models,
            data,
            [{"seed": s + epoch} for s in seeds],
            progress=False,
            num_epochs=1,
            lr=restart_peak(lr, epoch, num_epochs),
            **fit_kwargs,
        )
        seconds = (time.perf_counter() - start) / len(models)
        _record_turn(histories, turns, seeds, epoch, seconds, lr=lr, num_epochs=num_epochs)
    return histories


def mutual_learning(
    model_a: nn.Module | Sequence[nn.Module],
    model_b: nn.Module | Sequence[nn.Module],
    data: Dataset,
    *,
    num_epochs: int = 10,
    lr: float = 0.05,
    temperature: float = 1.0,
    alpha: float = 0.5,
    seed: int | Sequence[int] = 0,
    progress: bool = True,
    **fit_kwargs: Any,
) -> tuple[History, History] | list[tuple[History, History]]:
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

    Lists of models (and of seeds, one per pair) train every pair's turn side by side
    (:func:`kdbook.stack.fit_side_by_side`); each record's seconds is then its share.

    Returns:
        The two histories, one record per epoch each (epochs numbered 1..num_epochs); for
        lists, one such pair per pair of models.
    """
    from kdbook.stack import fit_side_by_side

    pairs = isinstance(model_a, nn.Module)
    models_a = [model_a] if pairs else list(model_a)
    models_b = [model_b] if pairs else list(model_b)
    seeds = [seed] if isinstance(seed, int) else list(seed)
    if not (len(models_a) == len(models_b) == len(seeds) >= 1):
        raise ValueError(
            f"model_a, model_b and seed must pair up, got {len(models_a)}, {len(models_b)} "
            f"and {len(seeds)}"
        )
    check_params({"num_epochs": num_epochs, "lr": lr})
    for s in seeds:
        check_params({"seed": s})
    histories = [
        (History(settings={"mode": "mutual"}), History(settings={"mode": "mutual"})) for _ in seeds
    ]
    for epoch in tqdm(range(1, num_epochs + 1), desc="mutual", disable=not progress):
        peak = restart_peak(lr, epoch, num_epochs)
        for side, (students, peers) in enumerate(((models_a, models_b), (models_b, models_a))):
            start = time.perf_counter()
            turns = fit_side_by_side(
                students,
                data,
                [{"teacher": p, "seed": s + epoch} for p, s in zip(peers, seeds, strict=True)],
                progress=False,
                num_epochs=1,
                lr=peak,
                temperature=temperature,
                alpha=alpha,
                **fit_kwargs,
            )
            # the whole turn, set-up included (a fresh optimizer and checks every epoch)
            seconds = (time.perf_counter() - start) / len(students)
            sides = [pair[side] for pair in histories]
            _record_turn(sides, turns, seeds, epoch, seconds, lr=lr, num_epochs=num_epochs)
    return histories[0] if pairs else histories


def vit_teacher_from_run(
    cfg,
    data: Dataset,
    *,
    lr: float,
    weight_decay: float,
    num_epochs: int | None = None,
    progress: bool = True,
) -> tuple[nn.Module, History]:
    """The ViT teacher of notebooks 10 and 11, trained once and kept in ``run_dir``.

    ``vit_tiny`` built after ``torch.manual_seed(cfg.seed)`` and trained with AdamW (a ViT
    needs it: SGD at the CNN's settings barely moves it) at ``lr`` and ``weight_decay`` for
    ``num_epochs`` (None: ``cfg``'s; the notebooks pass the book teacher's, so that their
    students' epochs do not change the teacher), the rest from ``cfg``. Checkpointed in
    ``run_dir/vit_teacher.pt``, so the second notebook, or a rerun, loads the finished run
    (or continues an interrupted one).

    Returns:
        The ViT in eval mode and its history.
    """
    return trained_in_run(
        cfg,
        data,
        "vit_tiny",
        "vit_teacher.pt",
        optimizer="adamw",
        lr=lr,
        weight_decay=weight_decay,
        **({} if num_epochs is None else {"num_epochs": num_epochs}),
        progress=progress,
        desc="teacher vit_tiny",
        hooks=[TimeEstimate()],  # its expected time, after the first epoch
    )


TUNED_KD_NOTEBOOK = "07_tuning"  # the notebook whose validation-chosen (T, alpha) later ones use
SOURCES_DEFAULT_KD = {k: default(k) for k in ("temperature", "alpha")}  # the sources' start


def kd_settings_from_run(cfg: Any, temperature: float | None, alpha: float | None) -> Any:
    """``cfg`` with the KD loss's T and alpha this notebook should use, saying where they
    come from (introduced in 09).

    A value given (not None) is used as given. One left at None takes what
    :data:`TUNED_KD_NOTEBOOK` chose on the validation split in this run folder
    (``metrics/07_tuning.json``, its ``"best"``), so that no winner is discarded; where 07 has
    not run there, the sources' starting point, T 4 and alpha 0.7.

    Args:
        cfg: a :class:`kdbook.config.Config` (its ``run_dir`` is read).
        temperature, alpha: the notebook's parameters (None: 07's choice).

    Returns:
        The configuration with ``temperature`` and ``alpha`` set; one line is printed.
    """
    given = {"temperature": temperature, "alpha": alpha}
    check_params({k: v for k, v in given.items() if v is not None})
    path = Path(cfg.run_dir) / "metrics" / f"{TUNED_KD_NOTEBOOK}.json"
    chosen, origin = (
        dict(SOURCES_DEFAULT_KD),
        f"the sources' starting point ({TUNED_KD_NOTEBOOK} has not run in this run folder)",
    )
    if path.is_file():
        metrics = read_json(path)
        best, run_cfg = metrics.get("best") or {}, metrics.get("config") or {}
        if set(SOURCES_DEFAULT_KD) <= set(best):
            chosen = {k: float(best[k]) for k in SOURCES_DEFAULT_KD}
            origin = (
                f"chosen on validation by {TUNED_KD_NOTEBOOK} in this run folder (its setting: "
                f"{run_cfg.get('label_fraction', 0):.0%} of the labels, "
                f"{run_cfg.get('num_epochs')} epochs, {run_cfg.get('num_seeds')} seeds a cell)"
            )
    values = {k: chosen[k] if v is None else float(v) for k, v in given.items()}
    if all(v is not None for v in given.values()):
        origin = "as given"
    elif any(v is not None for v in given.values()):
        origin = (
            f"{', '.join(k for k, v in given.items() if v is not None)} as given, the rest {origin}"
        )
    print(f"KD settings: T {values['temperature']:g}, alpha {values['alpha']:g}: {origin}")
    return dataclasses.replace(cfg, **values)


LM_TEACHER_FILE = "lm_teacher.pt"


def lm_teacher_from_run(cfg, data: Any, *, progress: bool = True) -> tuple[nn.Module, History]:
    """The language-model teacher of this run: ``cfg.lm_teacher`` at context
    ``cfg.lm_context``, trained ``cfg.lm_teacher_epochs`` passes over the training text at
    ``cfg.lm_lr`` (:func:`kdbook.train.fit_lm`, seed ``cfg.seed``) and kept in
    ``run_dir/lm_teacher.pt``: the first notebook that needs it (15 or 16) trains it, with a
    message; the next loads it, or continues it when it was interrupted.

    Introduced in notebook 15_language_model_kd.

    Args:
        cfg: a :class:`kdbook.config.Config`.
        data: the corpus (:func:`kdbook.text.load_text`).

    Returns:
        The teacher in eval mode and its history (``history.final["val_bpc"]``).
    """
    path = Path(cfg.run_dir) / LM_TEACHER_FILE
    if not path.is_file():
        print(
            f"language-model teacher: training {cfg.lm_teacher} ({cfg.lm_teacher_epochs} passes "
            f"over the text, context {cfg.lm_context}), saving to {path}"
        )
    torch.manual_seed(cfg.seed)
    teacher = build_model(cfg.lm_teacher, data, context=cfg.lm_context)
    history = fit_lm(
        teacher,
        data,
        num_epochs=cfg.lm_teacher_epochs,
        lr=cfg.lm_lr,
        device=cfg.device,
        seed=cfg.seed,
        checkpoint=path,
        progress=progress,
        desc=f"teacher {cfg.lm_teacher}",
        hooks=[TimeEstimate()],
    )
    return teacher.eval(), history
