"""What happens around the steps of :func:`kdbook.train.fit`: the :class:`Loop` a hook reads,
the :class:`Hook` protocol and its :class:`BaseHook` no-ops, and the hooks
(:class:`FreezeHead`, :class:`ClipGradNorm`, :class:`TensorBoard`, :class:`TimeEstimate`,
:class:`BestEpoch`, :class:`Checkpoint`).

Each event is one method (miniai's callbacks): ``check`` before any work, ``start`` (the
epochs already done), ``before_step``, ``end_epoch``, ``end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from kdbook.checkpoint import (
    History,
    check_fits,
    read_checkpoint,
    settings_mismatch,
    write_checkpoint,
)
from kdbook.data import Dataset, Loader
from kdbook.distill import Distiller
from kdbook.runtime import Runtime


@dataclass
class Loop:
    """What a running :func:`fit` holds; the hooks read it."""

    model: nn.Module
    data: Dataset
    distiller: Distiller
    student: nn.Module  # the model and the loss terms (the distiller's _Student)
    module: nn.Module  # what trains: ``student``, or it wrapped in DDP
    runtime: Runtime
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loader: Loader
    history: History
    fingerprint: dict[str, str | None]
    progress: float = 0.0  # step / total steps of the step running


class Hook(Protocol):
    """What fit calls around its steps; every method is called on every hook, in order."""

    def settings(self) -> dict[str, Any]: ...  # recorded in the history, decide resuming
    def check(self, model: nn.Module) -> None: ...  # before any work
    def start(self, loop: Loop) -> int: ...  # epochs already done (a resumed checkpoint)
    def before_step(self, loop: Loop) -> None: ...  # gradients in, optimizer not yet stepped
    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None: ...
    def end(self, loop: Loop) -> None: ...


class BaseHook:
    """No-op defaults for the :class:`Hook` methods."""

    def settings(self) -> dict[str, Any]:
        return {}

    def check(self, model: nn.Module) -> None:
        pass

    def start(self, loop: Loop) -> int:
        return 0

    def before_step(self, loop: Loop) -> None:
        pass

    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None:
        pass

    def end(self, loop: Loop) -> None:
        pass


class FreezeHead(BaseHook):
    """The student's classifier (``model.head``) gets no update for the first ``fraction``
    of training (source 5's stage 1: align the features with the head frozen)."""

    def __init__(self, fraction: float) -> None:
        if not (isinstance(fraction, int | float) and 0 <= fraction < 1):
            raise ValueError(
                f"freeze_head must be a fraction of training in [0, 1), got {fraction!r}"
            )
        self.fraction = fraction

    def __repr__(self) -> str:
        return f"FreezeHead({self.fraction!r})"

    def settings(self) -> dict[str, Any]:
        return {"freeze_head": self.fraction}

    def check(self, model: nn.Module) -> None:
        if self.fraction and not isinstance(getattr(model, "head", None), nn.Module):
            raise ValueError(
                "freeze_head needs model.head (the kdbook models' classifier); this one has none"
            )

    def before_step(self, loop: Loop) -> None:
        if loop.progress < self.fraction:
            for p in loop.model.head.parameters():
                p.grad = None


class ClipGradNorm(BaseHook):
    """Clip the gradient's global norm to ``max_norm`` before each step (source 2's remedy
    for unstable steps); gradients are unscaled first under fp16."""

    def __init__(self, max_norm: float) -> None:
        if not (isinstance(max_norm, int | float) and max_norm > 0):
            raise ValueError(f"max_grad_norm must be a number > 0 or None, got {max_norm!r}")
        self.max_norm = max_norm

    def __repr__(self) -> str:
        return f"ClipGradNorm({self.max_norm!r})"

    def settings(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_norm}

    def before_step(self, loop: Loop) -> None:
        loop.runtime.scaler.unscale_(loop.opt)
        params = [p for group in loop.opt.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm)


class TensorBoard(BaseHook):
    """Every record of the history as TensorBoard scalars in ``log_dir``, per epoch
    (``tensorboard --logdir DIR`` shows them); written by rank 0 only."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir, self.writer = Path(log_dir), None

    def __repr__(self) -> str:
        return f"TensorBoard({str(self.log_dir)!r})"

    def start(self, loop: Loop) -> int:
        if loop.runtime.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.log_dir))
        return 0

    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None:
        if self.writer is not None:
            for name, value in record.items():
                if name != "epoch":
                    self.writer.add_scalar(name, value, record["epoch"])
            self.writer.flush()

    def end(self, loop: Loop) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class TimeEstimate(BaseHook):
    """After the first epoch, the time the whole training will take: ``runs`` trainings
    (default 1) of ``epochs`` epochs each (default the run's own), printed in one line."""

    def __init__(self, runs: int = 1, epochs: int | None = None) -> None:
        self.runs, self.epochs = runs, epochs

    def __repr__(self) -> str:
        return f"TimeEstimate(runs={self.runs}, epochs={self.epochs})"

    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None:
        epochs = self.epochs or loop.history.settings["num_epochs"]
        if record["epoch"] != 1 or self.runs * epochs <= 1 or loop.runtime.rank != 0:
            return
        first = record["seconds"]
        what = f"{self.runs} runs" if self.runs > 1 else f"{epochs} epochs"
        print(f"first epoch {first:.1f} s: about {first * epochs * self.runs:.0f} s for {what}")


class BestEpoch(BaseHook):
    """Keep the weights of the epoch with the best validation accuracy among the first
    ``within`` of training, and put them back in the model when ``fit`` ends (introduced in 14).

    ``BestEpoch(0.3)`` is early stopping chosen on validation at a stated fraction of the
    schedule: training runs its whole schedule (the same learning rates as a full run), and
    the model ``fit`` returns is the one of the best epoch up to 30 % of it; ``best_epoch``
    and ``best_val_acc`` say which (ties: the earliest). Use it without ``checkpoint=``,
    which saves the last epoch's weights.
    """

    def __init__(self, within: float = 1.0) -> None:
        if not (isinstance(within, (int, float)) and 0 < within <= 1):
            raise ValueError(f"within must be a fraction of training in (0, 1], got {within!r}")
        self.within = float(within)
        self.best_epoch: int | None = None
        self.best_val_acc = float("-inf")
        self._state: dict[str, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"BestEpoch(within={self.within:g})"

    def settings(self) -> dict[str, Any]:
        return {"best_epoch_within": self.within}

    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None:
        last = max(1, int(self.within * loop.history.settings["num_epochs"] + 1e-9))
        if record["epoch"] <= last and record["val_acc"] > self.best_val_acc:
            self.best_epoch, self.best_val_acc = int(record["epoch"]), float(record["val_acc"])
            self._state = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}

    def end(self, loop: Loop) -> None:
        if self._state is not None:
            loop.model.load_state_dict(self._state)


class Checkpoint(BaseHook):
    """fit's hook for ``checkpoint=path``: the run saved after every epoch, resumed on start.

    The file holds the model, the loss terms' parameters (adapters), the history, and,
    until the run finishes, the optimizer, schedule, scaler and random states. ``resume``
    (default True) continues an unfinished run of the same settings from its next epoch, or
    returns a finished one as it is; a checkpoint of other settings is overwritten, and
    the message says why.
    """

    def __init__(self, path: str | Path, resume: bool | None = None) -> None:
        self.path, self.resume = Path(path), resume is not False

    def say(self, loop: Loop, message: str) -> None:
        if loop.runtime.rank == 0:
            print(message)

    def start(self, loop: Loop) -> int:
        """Restore a matching run; return its epochs done (0: start afresh)."""
        if not (self.resume and self.path.exists()):
            return 0
        try:
            blob = read_checkpoint(self.path)
            run = blob.get("run")
            if not isinstance(run, dict):
                raise ValueError("it holds no training run (saved by save_checkpoint)")
            mismatch = settings_mismatch(blob["meta"].get("settings", {}), loop.history.settings)
            if mismatch:
                raise ValueError(f"its settings differ: {mismatch}")
            if run.get("fingerprint") != loop.fingerprint:
                raise ValueError("its training labels or teacher weights differ")
            check_fits(blob["state_dict"], loop.model)
            terms = loop.student.terms
            if len(terms.state_dict()):
                check_fits(run["terms"], terms)
            if not run["finished"]:  # load nothing until every check has passed
                loop.opt.load_state_dict(run["optimizer"])
                loop.sched.load_state_dict(run["scheduler"])
                if "scaler" in run:
                    loop.runtime.scaler.load_state_dict(run["scaler"])
            loop.model.load_state_dict(blob["state_dict"])
            if len(terms.state_dict()):
                terms.load_state_dict(run["terms"])
        except (ValueError, RuntimeError, KeyError) as e:
            self.say(loop, f"checkpoint {self.path}: not resuming ({e}); training from epoch 1")
            return 0
        loop.history.epochs[:] = run["history"]
        done = run["epoch"]
        if run["finished"]:
            self.say(
                loop,
                f"checkpoint {self.path}: this run already finished ({done} epochs); not training",
            )
            return done
        self._set_rng(loop, run["rng"])
        total = loop.history.settings["num_epochs"]
        self.say(loop, f"checkpoint {self.path}: resuming after epoch {done} of {total}")
        return done

    def end_epoch(self, loop: Loop, record: dict[str, float]) -> None:
        if loop.runtime.rank != 0:
            return
        finished = record["epoch"] == loop.history.settings["num_epochs"]
        run: dict[str, Any] = {
            "epoch": len(loop.history.epochs),
            "finished": finished,
            "history": [dict(e) for e in loop.history.epochs],
            "fingerprint": loop.fingerprint,
        }
        terms = loop.student.terms.state_dict()
        if terms:
            run["terms"] = {k: v.detach().cpu() for k, v in terms.items()}
        if not finished:  # what continuing needs; a finished run keeps only its result
            run["optimizer"] = loop.opt.state_dict()
            run["scheduler"] = loop.sched.state_dict()
            if loop.runtime.scaler.is_enabled():
                run["scaler"] = loop.runtime.scaler.state_dict()
            run["rng"] = self._rng(loop)
        write_checkpoint(self.path, loop.model, loop.data, loop.history, run)

    @staticmethod
    def _rng(loop: Loop) -> dict[str, torch.Tensor]:
        rng = {"torch": torch.get_rng_state(), "loader": loop.loader.generator.get_state()}
        rng |= loop.distiller.rng_state()
        device = loop.runtime.device
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        return rng

    @staticmethod
    def _set_rng(loop: Loop, rng: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(rng["torch"])
        loop.loader.generator.set_state(rng["loader"])
        loop.distiller.set_rng_state(rng)
        device = loop.runtime.device
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
