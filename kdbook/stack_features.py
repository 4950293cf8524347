"""Feature terms in a stack: runs whose distillation adds a feature loss, side by side.

A run of :func:`kdbook.train.fit` with ``feature_loss`` adds ``feature_weight * loss(f_s,
f_t)`` to its logit loss, where ``f_s`` is the student's ``forward_features`` and ``f_t`` the
teacher's (:class:`kdbook.losses.FeatureKD`). In a stack (:mod:`kdbook.stack`) the students'
features come out of the same ``vmap`` as their logits (:class:`SplitForward`); the teacher's
features are computed once per batch for every run that shares the teacher and the batch
(:meth:`FeatureTerms.teach`); each run's term is then computed with its own loss module (its
own adapter: :class:`~kdbook.losses.HintLoss`, :class:`~kdbook.losses.TokenAlignment`) and
its own weight or schedule (one ``vmap`` for the runs' attention transfer, one call per run
for an adapter). The adapters' parameters join the stack's optimizer, as fit puts them in
the run's own, and train in place.

What stacks: attention transfer (no parameters), hints (FitNets) and token alignment without
noise (:data:`STACKED_FEATURE_LOSSES`); :func:`why_feature_not_stacked` says why the rest
does not (a loss of your own, noise drawn from the global random numbers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from kdbook.losses import AttentionTransfer, FeatureKD, HintLoss, TokenAlignment
from kdbook.runtime import autocast
from kdbook.schedules import value_at
from kdbook.teacher_views import TeacherViews

# kdbook's feature losses whose forward draws no random numbers (TokenAlignment: no noise)
STACKED_FEATURE_LOSSES = (AttentionTransfer, HintLoss, TokenAlignment)


def why_feature_not_stacked(kwargs: Mapping[str, Any]) -> str | None:
    """``None`` when the run's ``feature_loss`` (a module, or a factory as
    :func:`kdbook.compare.compare_methods` takes it) can be stacked, else why not."""
    loss = kwargs.get("feature_loss")
    if loss is None:
        return None
    if not isinstance(loss, nn.Module) and callable(loss):
        with torch.random.fork_rng(devices=[]):  # the caller's random numbers stay as they are
            loss = loss()
    if not isinstance(loss, STACKED_FEATURE_LOSSES):
        return f"feature_loss {type(loss).__name__} (not one of kdbook's) is not stacked"
    if getattr(loss, "noise_std", 0.0) > 0:
        return "feature noise draws random numbers that a stack draws otherwise"
    return None


def why_adapters_not_stacked(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """``None`` unless two of these runs' fit keywords hold the same ``feature_loss``
    module with parameters: one adapter that trains on, run after run, when they train one
    at a time (give each run its own, or a factory to compare_methods)."""
    seen: set[int] = set()
    for kwargs in runs:
        loss = kwargs.get("feature_loss")
        if isinstance(loss, nn.Module) and any(True for _ in loss.parameters()):
            if id(loss) in seen:
                return "runs that share one feature_loss module (its adapter) are not stacked"
            seen.add(id(loss))
    return None


class SplitForward(nn.Module):
    """``model.forward_features`` then ``forward_head``: the features and the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(x)
        return features, self.model.forward_head(features)


class FeatureTerms:
    """The feature terms of a stack's runs (set-up fit loops), by run index.

    Runs whose losses are alike (one class, the same settings and shapes) form a group.
    ``split(params, buffers, x)`` is the stacked model's forward that also returns the
    features (call it under ``vmap``); :meth:`parameters` the adapters' parameters, which
    join the stack's optimizer and train in place.
    """

    def __init__(self, loops: Sequence[Any], base: nn.Module) -> None:
        self.terms: dict[int, FeatureKD] = {}
        for i, loop in enumerate(loops):
            for term in loop.distiller.terms:
                if isinstance(term, FeatureKD):
                    self.terms[i] = term
        self.runtime = loops[0].runtime
        self.base = SplitForward(base)
        self.tables: dict[tuple, TeacherViews | None] = {}
        kinds: dict[tuple, list[int]] = {}
        for i, term in self.terms.items():
            shapes = tuple((n, tuple(t.shape)) for n, t in term.loss.state_dict().items())
            kinds.setdefault((repr(term.loss), shapes), []).append(i)
        self.groups = [_Group([self.terms[i].loss for i in runs], runs) for runs in kinds.values()]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def split(self, params, buffers, x):
        """The features and logits of one run's weights (``functional_call``, vmap-able)."""
        weights = {f"model.{k}": v for k, v in params.items()}
        weights |= {f"model.{k}": v for k, v in buffers.items()}
        return functional_call(self.base, weights, (x,))

    def parameters(self) -> list[torch.Tensor]:
        """The runs' adapter parameters (none for attention transfer)."""
        return [p for g in self.groups for p in g.parameters()]

    def train(self) -> None:
        """Training mode for the adapters (BatchNorm), as fit's ``module.train()`` sets it."""
        for group in self.groups:
            group.train()

    def wanted(self, runs: Sequence[int]) -> list[int]:
        """Positions in ``runs`` (run indices) of the runs with a feature term."""
        return [j for j, i in enumerate(runs) if i in self.terms]

    @torch.no_grad()
    def teach(
        self, teacher: nn.Module, x: torch.Tensor, batches: Sequence[int], seen: list, passes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's logits and features for each run's batch ``x[j]``: from its table
        of every view (:class:`TeacherViews`, built when that costs fewer than the ``passes``
        over the images the stack would make), else from one pass over the distinct batches
        (``batches[j]``: which loader's batch run j sees; ``seen[j]``: its sample indices
        and loader)."""
        loader = seen[0][1]
        key = (id(teacher), loader.images.data_ptr(), repr(loader.augment))
        if key not in self.tables:
            self.tables[key] = TeacherViews.build(teacher, loader, self.runtime, passes, True)
        table = self.tables[key]
        if table is not None:
            logits = torch.stack([table.lookup(idx, ldr.views) for idx, ldr in seen])
            return logits, torch.stack([table.lookup_features(i, ldr.views) for i, ldr in seen])
        distinct = sorted(set(batches))
        where = torch.tensor([distinct.index(k) for k in batches], device=x.device)
        first = [list(batches).index(k) for k in distinct]
        images = x[first].flatten(0, 1)
        with autocast(self.runtime.precision, self.runtime.device):
            features = teacher.forward_features(images)
            logits = teacher.forward_head(features).float()
        features = features.float()
        logits = logits.view(len(distinct), x.shape[1], -1)[where]
        return logits, features.view(len(distinct), x.shape[1], *features.shape[1:])[where]

    def losses(
        self,
        runs: Sequence[int],
        features: torch.Tensor,
        teacher_features: torch.Tensor,
        progress: float,
    ) -> tuple[list[torch.Tensor], list[float]]:
        """Runs ``runs``' weighted feature terms, as fit computes them (``features[k]`` and
        ``teacher_features[k]`` are run ``runs[k]``'s), and their unweighted logs."""
        values: list[Any] = [None] * len(runs)
        logs: list[float] = [0.0] * len(runs)
        for group in self.groups:
            mine = [k for k, i in enumerate(runs) if i in group.runs]
            if not mine:
                continue
            with autocast(self.runtime.precision, self.runtime.device):
                got = group([runs[k] for k in mine], features[mine], teacher_features[mine])
            for k, value, log in zip(mine, got, got.detach().cpu().tolist(), strict=True):
                values[k] = value_at(self.terms[runs[k]].weight, progress) * value.float()
                logs[k] = log
        return values, logs


class _Group:
    """Alike loss modules of several runs. Without parameters (attention transfer) one
    ``vmap`` computes their values; with them (an adapter) each run calls its own module,
    which trains in place: on a CPU a ``vmap`` of six hint adapters (1x1 convolution and
    BatchNorm, 4 to 128 channels, batches of 64 maps of 4 x 4) took 2.5-3x the time of six
    calls (forward and backward), while six attention transfers took 0.75x under vmap."""

    def __init__(self, losses: list[nn.Module], runs: list[int]) -> None:
        self.losses, self.runs = losses, runs
        batched = not any(True for _ in (*losses[0].parameters(), *losses[0].buffers()))
        self.forward = torch.vmap(losses[0]) if batched else None

    def parameters(self) -> list[nn.Parameter]:
        return [p for loss in self.losses for p in loss.parameters()]

    def train(self) -> None:
        for loss in self.losses:
            loss.train()

    def __call__(self, runs: list[int], features, teacher_features) -> torch.Tensor:
        if self.forward is not None:
            return self.forward(features, teacher_features)
        values = [
            self.losses[self.runs.index(i)](features[k], teacher_features[k])
            for k, i in enumerate(runs)
        ]
        return torch.stack(values)
