"""Training: one loop, :func:`fit`, and the hooks around its steps.

- :mod:`kdbook.train.loop`: :func:`fit` (teacher, student alone, distilled student),
  :func:`make_loop` (what fit does before its first epoch), :func:`fit_arguments`.
- :mod:`kdbook.train.on_policy`: :func:`fit_on_policy`, on-policy distillation of a causal
  language model (GKD: the student's own samples scored by the teacher; TRL's knobs).
- :mod:`kdbook.train.text`: :func:`fit_lm`, fit's sibling for language models (the same
  runtime step, hooks and checkpoints; token-level and sequence-level KD).
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
from kdbook.train.on_policy import (
    SequenceTask,
    check_on_policy,
    fit_on_policy,
)
from kdbook.train.text import (
    TokenObjective,
    TokenWindows,
    check_lm,
    fit_lm,
    make_lm_loop,
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
    "SequenceTask",
    "TimeEstimate",
    "TokenObjective",
    "TokenWindows",
    "check_lm",
    "check_on_policy",
    "fit",
    "fit_arguments",
    "fit_lm",
    "fit_on_policy",
    "make_lm_loop",
    "make_loop",
]
