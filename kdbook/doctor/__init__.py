"""The doctor: detectors for the known knowledge-distillation mistakes, with the fix for each
(a teaching aid; notebooks 04, 05, 06, 08 and 13).

- :mod:`kdbook.doctor.losses`: :func:`check_kd_loss` (and DKD's) names the bug in a
  reader's loss, against the sources' buggy variants (:mod:`kdbook.losses.buggy`, re-exported here).
- :mod:`kdbook.doctor.checks`: a reader's ``mean_ci`` and ECE, a frozen teacher, eval mode,
  no autograd graph.
- :mod:`kdbook.doctor.step`: :func:`check_kd_step` names the mistakes in a reader's
  distillation step (teacher in train mode, gradients into it, T^2, the label mask).
- :mod:`kdbook.doctor.diagnosis`: :class:`Diagnosis`, what every check returns.

The machine check (``kdbook doctor``) is :mod:`kdbook.environment`.
"""

from __future__ import annotations

from kdbook.doctor.checks import (
    ECEFn,
    batchnorm_running_means,
    check_ece,
    check_eval_mode,
    check_mean_ci,
    check_no_grad,
    check_teacher_frozen,
    saved_bytes,
)
from kdbook.doctor.diagnosis import (
    Diagnosis,
)
from kdbook.doctor.losses import (
    PROBE_ALPHA,
    PROBE_BATCH,
    PROBE_CLASSES,
    KDLossFn,
    check_kd_loss,
)
from kdbook.doctor.step import (
    KDStepFn,
    check_kd_step,
)
from kdbook.losses.buggy import (
    BUGGY_KD_LOSSES,
    kd_loss_alpha_on_ce,
    kd_loss_source3,
    kd_loss_source4,
)

__all__ = [
    "BUGGY_KD_LOSSES",
    "Diagnosis",
    "ECEFn",
    "KDLossFn",
    "KDStepFn",
    "PROBE_ALPHA",
    "PROBE_BATCH",
    "PROBE_CLASSES",
    "batchnorm_running_means",
    "check_ece",
    "check_eval_mode",
    "check_kd_loss",
    "check_kd_step",
    "check_mean_ci",
    "check_no_grad",
    "check_teacher_frozen",
    "kd_loss_alpha_on_ce",
    "kd_loss_source3",
    "kd_loss_source4",
    "saved_bytes",
]
