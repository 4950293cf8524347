"""Training: one loop, :func:`fit`, and the hooks around its steps.

- :mod:`kdbook.train.loop`: :func:`fit` (teacher, student alone, distilled student),
  :func:`make_loop` (what fit does before its first epoch), :func:`fit_arguments`.
- :mod:`kdbook.train.hooks`: :class:`Loop`, :class:`Hook`, :class:`BaseHook` and the hooks,
  :class:`Checkpoint` (``checkpoint=path``: saved every epoch, resumed on start) among them.

Checkpoint files are :mod:`kdbook.checkpoint`; stacked runs :mod:`kdbook.stack`; recipes
(born-again generations, teachers kept in the run folder) :mod:`kdbook.recipes`.

"""

from __future__ import annotations

from kdbook.train.hooks import (
    BaseHook,
    BestEpoch,
    Checkpoint,
    ClipGradNorm,
    FreezeHead,
    Hook,
    Loop,
    TensorBoard,
    TimeEstimate,
)
from kdbook.train.loop import (
    fit,
    fit_arguments,
    make_loop,
)

__all__ = [
    "BaseHook",
    "BestEpoch",
    "Checkpoint",
    "ClipGradNorm",
    "FreezeHead",
    "Hook",
    "Loop",
    "TensorBoard",
    "TimeEstimate",
    "fit",
    "fit_arguments",
    "make_loop",
]
