"""Seeds side by side: runs of one architecture trained together as one stacked model.

The runs of a comparison (every seed, scratch and distilled) share the model's shape and
the training recipe; only their weights, their batches and their loss differ. Their
weights are stacked (``torch.func.stack_module_state``) and one ``vmap`` of the model's
forward (``functional_call``) trains them all in each step: every run keeps its own
loader (its seed's shuffle and augmentation), its own BatchNorm statistics and its own
optimizer state (SGD and AdamW work element by element), so each run ends with the
weights it would have had trained alone by :func:`kdbook.train.fit`, up to float
round-off (``tests/test_stack.py`` checks both).

What can be stacked is a run fit trains with cross-entropy alone or with the logit KD loss
(from a teacher model, an ensemble or a logit cache; or a run's own logit term, DKD or a
standardised KD), with or without a feature term (attention transfer, hints with their
adapter, token alignment: :mod:`kdbook.stack_features`), in fp32 or bf16, on one process,
without hooks, checkpoints, accumulation, dropout, views or other loss terms
(:func:`why_not_stacked` says which). The rest trains one run at a time, with the same
result.

>>> from kdbook.data import load_dataset
>>> from kdbook.models import build_model
>>> data = load_dataset("digits")
>>> models = [build_model("tiny_cnn", data) for _ in range(2)]
>>> histories = fit_stacked(models, data, [{"seed": 0}, {"seed": 1}], num_epochs=1, progress=False)
>>> [len(h.epochs) for h in histories]
[1, 1]
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state
from tqdm.auto import tqdm

from kdbook.checkpoint import History
from kdbook.data import UNLABELED, Dataset
from kdbook.distill import LogitCache
from kdbook.io import tensor_digest
from kdbook.losses import Outputs, ensemble_logits
from kdbook.runtime import autocast
from kdbook.schedules import value_at
from kdbook.stack_features import FeatureTerms, why_adapters_not_stacked, why_feature_not_stacked
from kdbook.teacher_views import TeacherViews

# A run's own training split (e.g. the teacher's hard labels in place of the hidden ones: a
# control); its validation and test splits are the comparison's. A key of a run, not of fit.
TRAIN_DATA = "train_data"
# fit's keywords a stacked run may set; the shared ones must be equal across the stack
STACKED_KEYWORDS = frozenset(
    {"teacher", "teacher_weights", "temperature", "alpha", "seed", "progress", "desc", "terms"}
    | {"feature_loss", "feature_weight"}
    | {"num_epochs", "lr"}
    | {"batch_size", "optimizer", "momentum", "weight_decay", "augment", "precision"}
    | {"device", "channels_last", TRAIN_DATA}
)  # fmt: skip
SHARED_KEYWORDS = ("num_epochs", "lr", "batch_size", "optimizer", "momentum", "weight_decay")
SHARED_KEYWORDS += ("augment", "precision", "device", "channels_last")
MAX_PARAMS = 2_000_000  # bigger models gain nothing from sharing a step's overhead


class NotStackable(ValueError):
    """These runs cannot train side by side (the message says why)."""


def why_not_stacked(model: nn.Module, kwargs: Mapping[str, Any]) -> str | None:
    """``None`` when a run of ``model`` with these fit keywords can be stacked, else why not."""
    from kdbook.models import count_params

    other = sorted(set(kwargs) - STACKED_KEYWORDS)
    if other:
        return f"{other[0]} is not stacked"
    terms = list(kwargs.get("terms") or [])
    if terms and (reason := _why_term_not_stacked(terms, kwargs.get("teacher"))) is not None:
        return reason
    if (reason := why_feature_not_stacked(kwargs)) is not None:
        return reason
    teacher = kwargs.get("teacher")
    teachers = teacher if isinstance(teacher, list | tuple) else [teacher]
    if teacher is not None and not all(isinstance(t, nn.Module | LogitCache) for t in teachers):
        return f"a teacher given as {type(teacher).__name__} is not stacked"
    if kwargs.get("precision") == "fp16":
        return "fp16 (its gradient scaler) is not stacked"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return "dropout draws random numbers that a stack draws otherwise"
    if count_params(model) > MAX_PARAMS:
        return f"models over {MAX_PARAMS:,} parameters gain nothing from a stack"
    return None


def _why_term_not_stacked(terms: list, teacher: Any) -> str | None:
    """A run's own loss term stacks when it is the whole logit loss of one teacher (DKD,
    a standardised or otherwise set LogitKD) with no parameters of its own."""
    term = terms[0]
    name = getattr(term, "name", type(term).__name__)
    if len(terms) > 1:
        return "more than one loss term in terms is not stacked"
    if not getattr(term, "replaces_logit_kd", False) or teacher is None:
        return f"loss term {name!r} besides the logit loss is not stacked"
    if getattr(term, "needs_features", False) or any(True for _ in term.parameters()):
        return f"loss term {name!r} (features or parameters of its own) is not stacked"
    return None


def _without_data(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != TRAIN_DATA}


def stack_key(model: nn.Module, kwargs: Mapping[str, Any]) -> tuple:
    """Runs with equal keys can share a stack: same architecture and shared settings."""
    shapes = tuple((n, tuple(p.shape)) for n, p in model.state_dict().items())
    return (type(model).__name__, shapes, *(repr(kwargs.get(k)) for k in SHARED_KEYWORDS))


def fit_stacked(
    models: Sequence[nn.Module],
    data: Dataset,
    runs: Sequence[Mapping[str, Any]],
    *,
    progress: bool = True,
    desc: str | None = None,
    announce: bool = False,
    **shared: Any,
) -> list[History]:
    """Train ``models[i]`` as ``fit(models[i], data, **shared, **runs[i])`` would, all at once.

    ``runs`` holds each run's own fit keywords (``seed``, ``teacher``, ``temperature``,
    ``alpha``, ``terms``, ``feature_loss``, ``feature_weight``), ``shared`` the ones all runs
    share (``num_epochs``, ``lr``, ...). The models, and the runs' feature losses (their
    adapters), are trained in place. Each history records the run's epochs as fit's does; its
    ``seconds`` are the stack's epoch time divided by the number of runs. ``announce``:
    print, after the second epoch, the time the stack will take.

    Raises:
        NotStackable: a run that cannot be stacked (:func:`why_not_stacked`), runs that do
            not share an architecture and settings, or a model that ``vmap`` cannot run
            (raised from the first step, before any weight changed).
    """
    from kdbook.train import fit_arguments, make_loop

    if len(models) != len(runs) or not models:
        raise ValueError(f"models and runs must pair up, got {len(models)} and {len(runs)}")
    kwargs = [{**shared, **run} for run in runs]
    for model, kw in zip(models, kwargs, strict=True):
        reason = why_not_stacked(model, kw)
        if reason is not None:
            raise NotStackable(reason)
    if (reason := why_adapters_not_stacked(kwargs)) is not None:
        raise NotStackable(reason)
    if len({stack_key(m, kw) for m, kw in zip(models, kwargs, strict=True)}) > 1:
        raise NotStackable("the runs differ in architecture or in a shared setting")
    loops = [
        make_loop(m, kw.get(TRAIN_DATA, data), fit_arguments(_without_data(kw)))[0]
        for m, kw in zip(models, kwargs, strict=True)
    ]  # a run's own training split (its labels: paired_runs.TRAIN_DATA), the same val and test
    if loops[0].runtime.world > 1:
        raise NotStackable("data-parallel runs (torchrun) are not stacked")
    stack = _Stack(loops)
    epochs = loops[0].history.settings["num_epochs"]
    bar = tqdm(range(1, epochs + 1), desc=desc or "train", disable=not progress)
    first = 0.0
    for epoch in bar:
        start_time = time.perf_counter()
        stack.train_epoch(epoch)
        seconds = time.perf_counter() - start_time
        records = stack.evaluate(epoch, seconds)
        for loop, record in zip(loops, records, strict=True):
            loop.history.epochs.append(record)
        first = first or seconds  # the first epoch also asks the teacher for its views
        if announce and epoch == 2 and epochs > 2:
            total = first + seconds * (epochs - 1)
            print(f"first epochs {first:.1f} s, {seconds:.1f} s: about {total:.0f} s for the stack")
    stack.unstack()
    return [loop.history for loop in loops]


class _Stack:
    """The stacked weights, optimizer and loaders of several set-up fit runs (train.Loop)."""

    def __init__(self, loops: list) -> None:
        self.loops, self.runtime = loops, loops[0].runtime
        self.params, self.buffers = stack_module_state([loop.model for loop in loops])
        self.base = copy.deepcopy(loops[0].model).to("meta")
        self.features = FeatureTerms(loops, self.base)  # runs with a feature term
        self.forward = torch.vmap(self.features.split if self.features else self._call)
        self.evaluate_forward = torch.vmap(self._call, in_dims=(0, 0, None))
        settings = loops[0].history.settings
        self.opt = self.runtime.optimizer(
            list(self.params.values()) + self.features.parameters(),
            settings["optimizer"],
            settings["lr"],
            settings["weight_decay"],
            settings["momentum"],
        )
        self.steps_per_epoch = len(loops[0].loader)
        self.epochs = settings["num_epochs"]
        total = settings["num_epochs"] * self.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=total)
        # runs with the same seed, samples and augmentation see the same batches: one loader
        keys, self.loaders, self.loader_of = {}, [], []
        for loop in loops:
            key = (loop.history.settings["seed"], loop.loader.augment is not None)
            key += (tensor_digest([loop.loader.labels]), id(loop.distiller.source.cache))
            if key not in keys:
                keys[key] = len(self.loaders)
                self.loaders.append(loop.loader)
            self.loader_of.append(keys[key])
        self.checked = False
        self.tables: dict[tuple, TeacherViews | None] = {}
        # runs whose loss is their own term (``terms=[DKD()]``), not the Distiller's LogitKD
        self.own_terms = {i for i, loop in enumerate(loops) if loop.distiller.own_logit_term}

    def _call(self, params, buffers, x):
        return functional_call(self.base, (params, buffers), (x,))

    def train_epoch(self, epoch: int) -> None:
        """One epoch of every run; per-run sums of loss, correct, seen, labelled and KL."""
        n = len(self.loops)
        self.sums = torch.zeros(n, 5, dtype=torch.float64)
        self.extra: list[dict[str, float]] = [{} for _ in range(n)]  # own terms' other logs
        self.scheduled = [dict.fromkeys(loop.distiller.scheduled(), 0.0) for loop in self.loops]
        self.base.train()
        self.features.train()
        for i, loop in enumerate(self.loops):  # a cache of stored views replays this epoch's
            loop.distiller.start_epoch(epoch, self.loaders[self.loader_of[i]])
        step = (epoch - 1) * self.steps_per_epoch
        total = self.loops[0].history.settings["num_epochs"] * self.steps_per_epoch
        for batches in zip(*self.loaders, strict=True):
            progress = step / total
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss(batches, progress)
            loss.backward()
            self.opt.step()
            self.sched.step()
            for used, loop in zip(self.scheduled, self.loops, strict=True):
                for name, value in loop.distiller.scheduled().items():
                    used[name] += value_at(value, progress)
            step += 1

    def _loss(self, batches, progress: float) -> torch.Tensor:
        """The summed loss of every run on its batch (runs grouped by batch size)."""
        sizes: dict[int, list[int]] = {}
        for i, k in enumerate(self.loader_of):
            sizes.setdefault(len(batches[k][1]), []).append(i)
        total = None
        for rows in sizes.values():
            x = torch.stack([batches[self.loader_of[i]][0] for i in rows])
            y = torch.stack([batches[self.loader_of[i]][1] for i in rows])
            everyone = len(rows) == len(self.loops)
            index = torch.tensor(rows, device=x.device)
            params = self.params if everyone else {k: v[index] for k, v in self.params.items()}
            buffers = self.buffers if everyone else {k: v[index] for k, v in self.buffers.items()}
            try:
                with autocast(self.runtime.precision, self.runtime.device):
                    logits = self.forward(params, buffers, x)
                features, logits = logits if self.features else (None, logits)
                logits = logits.float()
            except (RuntimeError, NotImplementedError) as e:
                if self.checked:
                    raise
                raise NotStackable(f"vmap cannot run this model: {e}") from e
            self.checked = True
            if not everyone:  # BatchNorm updated the copies' running statistics
                for name, value in buffers.items():
                    self.buffers[name][index] = value
            seen = [(batches[self.loader_of[i]][2], self.loaders[self.loader_of[i]]) for i in rows]
            value = self._run_losses(rows, x, y, logits, features, seen, progress).sum()
            total = value if total is None else total + value
        return total

    def _teacher_logits(self, teacher: nn.Module, x: torch.Tensor, seen: list) -> torch.Tensor:
        """The teacher's logits for each run's batch ``x[j]``: from its table of every view
        (:class:`TeacherViews`) when that costs fewer passes than the runs make, else run."""
        loader = seen[0][1]
        key = (id(teacher), loader.images.data_ptr(), repr(loader.augment))
        if key not in self.tables:
            runs = sum(
                1
                for i, loop in enumerate(self.loops)
                if any(t is teacher for t in loop.distiller.teachers)
                and self.loaders[self.loader_of[i]].images.data_ptr() == key[1]
            )  # fmt: skip
            passes = runs * self.loops[0].history.settings["num_epochs"]
            self.tables[key] = TeacherViews.build(teacher, loader, self.runtime, passes)
        table = self.tables[key]
        if table is not None:
            return torch.stack([table.lookup(idx, ldr.views) for idx, ldr in seen])
        with torch.no_grad(), autocast(self.runtime.precision, self.runtime.device):
            return teacher(x.flatten(0, 1)).float().view(*x.shape[:2], -1)

    def _run_losses(self, rows, x, y, logits, features, seen, progress) -> torch.Tensor:
        """Each run's loss, as its Distiller's terms compute it: cross-entropy on the
        labelled samples, Hinton's KD loss at its T and alpha (or the run's own logit term)
        for distilled runs, plus a feature term where the run has one."""
        g, b, c = logits.shape
        flat = F.cross_entropy(
            logits.reshape(g * b, c), y.reshape(-1), reduction="none", ignore_index=UNLABELED
        ).view(g, b)
        labelled = y != UNLABELED
        count = labelled.sum(1)
        hard = flat.sum(1) / count.clamp(min=1)
        losses = list(hard.unbind())
        kl = torch.zeros(g)
        distilled = [j for j, i in enumerate(rows) if self.loops[i].distiller.distilling]
        teachers: dict[Any, list[int]] = {}
        t_features: dict[int, torch.Tensor] = {}  # the teacher's, for runs with a feature term
        for j in distilled:  # runs of one teacher model (or one ensemble) share its passes;
            source = self.loops[rows[j]].distiller.source  # caches look logits up per run
            if source.cache is not None:
                key: Any = ("own", j)
            elif len(source.teachers) == 1:
                key = id(source.teachers[0])
            else:
                key = ("ensemble", *(id(t) for t in source.teachers))
            teachers.setdefault(key, []).append(j)
        for key, group in teachers.items():
            temps = [value_at(self.loops[rows[j]].distiller.temperature, progress) for j in group]
            source = self.loops[rows[group[0]]].distiller.source
            wanted = self.features.wanted([rows[j] for j in group])
            if isinstance(key, tuple) and key[0] == "own":
                idx = seen[group[0]][0]
                t_logits = source.teach(x[group[0]], idx, temps[0], False)[0].unsqueeze(0)
            elif isinstance(key, tuple):  # each member's passes shared, mixed per run at its T
                members = [
                    self._teacher_logits(t, x[group], [seen[j] for j in group])
                    for t in source.teachers
                ]
                t_logits = torch.stack([
                    ensemble_logits(
                        [m[k] for m in members], temps[k], self._source(rows[j]).weights
                    )
                    for k, j in enumerate(group)
                ])  # fmt: skip
            elif wanted:  # the teacher's features and logits: a table, or one pass a batch
                teacher, batches = source.teachers[0], [self.loader_of[rows[j]] for j in group]
                passes = self.epochs * len(
                    {self.loader_of[i] for i, loop in enumerate(self.loops)
                     if loop.distiller.teachers and loop.distiller.teachers[0] is teacher}
                )  # fmt: skip
                t_logits, feats = self.features.teach(
                    teacher, x[group], batches, [seen[j] for j in group], passes
                )
                t_features |= {group[k]: feats[k] for k in wanted}
            else:
                t_logits = self._teacher_logits(
                    source.teachers[0], x[group], [seen[j] for j in group]
                )
            own = [k for k, j in enumerate(group) if rows[j] in self.own_terms]
            for k in own:  # a run's own logit term (DKD, ...): its forward, as fit calls it
                j = group[k]
                out = Outputs(logits[j], y[j], temps[k], None, t_logits[k], None)
                losses[j], logs = self._term(rows[j])(out, progress)
                kl[j] = float(logs.get("kl", 0.0))
                extra = self.extra[rows[j]]
                for name, value in logs.items():  # fit's history keeps each log's mean
                    if name != "kl":
                        extra[name] = extra.get(name, 0.0) + float(value) * b
            plain = [k for k in range(len(group)) if k not in own]
            if not plain:
                continue
            group, temps = [group[k] for k in plain], [temps[k] for k in plain]
            t_logits = t_logits[plain]
            alphas = [value_at(self._term(rows[j]).alpha, progress) for j in group]
            t = torch.tensor(temps, device=logits.device).view(-1, 1, 1)
            log_p_s = F.log_softmax(logits[group] / t, dim=-1)
            log_p_t = F.log_softmax(t_logits / t, dim=-1)
            div = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum((1, 2)) / b
            soft = t.view(-1) ** 2 * div
            for k, j in enumerate(group):
                losses[j] = alphas[k] * soft[k] + (1 - alphas[k]) * hard[j]
                kl[j] = div[k].detach().cpu()
        if t_features:  # the feature terms, added as fit adds them
            js = list(t_features)
            f_t = torch.stack([t_features[j] for j in js])
            values, logs = self.features.losses([rows[j] for j in js], features[js], f_t, progress)
            for j, value, log in zip(js, values, logs, strict=True):
                losses[j] = losses[j] + value
                extra = self.extra[rows[j]]
                extra["feature_loss"] = extra.get("feature_loss", 0.0) + log * b
        loss = torch.stack(losses)
        with torch.no_grad():
            right = ((logits.argmax(-1) == y) & labelled).sum(1)
            parts = (loss * b, right, torch.full_like(loss, b), count, kl.to(loss) * b)
            stats = torch.stack([part.detach().double().cpu() for part in parts], dim=1)
            self.sums[rows] += stats
        return loss

    def _source(self, i: int):
        return self.loops[i].distiller.source

    def _term(self, i: int):
        return self.loops[i].distiller.terms[0]

    @torch.no_grad()
    def evaluate(self, epoch: int, seconds: float) -> list[dict[str, float]]:
        """Every run's epoch record, with its validation loss and accuracy."""
        from kdbook.data import Loader

        self.base.eval()
        data = self.loops[0].data
        n = len(self.loops)
        val = torch.zeros(n, 2, dtype=torch.float64)
        for x, y, _ in Loader(data, data.val, 512, device=self.runtime.device):
            with autocast(self.runtime.precision, self.runtime.device):
                logits = self.evaluate_forward(self.params, self.buffers, x).float()
            ce = F.cross_entropy(logits.flatten(0, 1), y.repeat(n), reduction="none")
            val[:, 0] += ce.view(n, -1).sum(1).double().cpu()
            val[:, 1] += (logits.argmax(-1) == y).sum(1).double().cpu()
        records = []
        lr = self.sched.get_last_lr()[0]
        for i in range(n):
            loss, right, seen, labelled, kl = self.sums[i].tolist()
            record = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": loss / seen,
                "train_acc": 100.0 * right / max(1.0, labelled),
                "val_loss": val[i, 0].item() / len(data.val),
                "val_acc": 100.0 * val[i, 1].item() / len(data.val),
                "seconds": seconds / n,
            }
            if self.loops[i].distiller.distilling:
                record["kl"] = kl / seen
            record |= {name: total / seen for name, total in self.extra[i].items()}
            record |= {k: v / self.steps_per_epoch for k, v in self.scheduled[i].items()}
            records.append(record)
        return records

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy each run's trained weights and statistics back into its model."""
        for i, loop in enumerate(self.loops):
            for name, tensor in (*loop.model.named_parameters(), *loop.model.named_buffers()):
                source = self.params[name] if name in self.params else self.buffers[name]
                tensor.copy_(source[i])
            loop.student.eval()


def fit_side_by_side(
    models: Sequence[nn.Module],
    data: Dataset,
    runs: Sequence[Mapping[str, Any]],
    *,
    progress: bool = True,
    desc: str | None = None,
    **shared: Any,
) -> list[History]:
    """``fit(models[i], data, **shared, **runs[i])`` for every ``i``: side by side
    (:func:`fit_stacked`) when they stack, else one at a time after one line saying why. The
    same weights either way, up to float round-off; for recipes that train many seeds of one
    step at a time (born-again generations, mutual learning's turns)."""
    from kdbook.train import fit

    if len(models) > 1:
        try:
            return fit_stacked(models, data, runs, progress=progress, desc=desc, **shared)
        except NotStackable as e:  # raised before any weight changed
            if progress:
                print(f"kdbook: {len(models)} runs train one at a time instead ({e})")
    return [
        fit(model, data, progress=progress, desc=desc, **{**shared, **run})
        for model, run in zip(models, runs, strict=True)
    ]
