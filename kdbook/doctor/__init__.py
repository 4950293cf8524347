"""The doctor: detectors for the known knowledge-distillation mistakes, with the fix for each
(a teaching aid; notebooks 04, 05, 06, 08 and 13).

- :mod:`kdbook.doctor.losses`: :func:`check_kd_loss` (and DKD's) names the bug in a
  reader's loss, against the sources' buggy variants (:mod:`kdbook.losses.buggy`, re-exported here).
- :mod:`kdbook.doctor.checks`: a reader's ``mean_ci`` and ECE, a frozen teacher, eval mode,
  no autograd graph.
- :mod:`kdbook.doctor.step`: :func:`check_kd_step` names the mistakes in a reader's
  distillation step (teacher in train mode, gradients into it, T^2, the label mask).
- :mod:`kdbook.doctor.token_losses`: :func:`check_token_loss` names the mistakes in a reader's
  token-level loss (KL direction, padding mask, temperature on one side, log-probability
  targets), against :mod:`kdbook.losses.buggy_tokens` (re-exported here).
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
from kdbook.doctor.token_losses import (
    DIVERGENCES,
    TokenLossFn,
    check_kl_direction,
    check_log_prob_targets,
    check_padding_mask,
    check_temperature_sides,
    check_token_loss,
    diagnose_token_loss,
)
from kdbook.losses.buggy import (
    BUGGY_KD_LOSSES,
    kd_loss_alpha_on_ce,
    kd_loss_source3,
    kd_loss_source4,
)
from kdbook.losses.buggy_tokens import (
    BUGGY_TOKEN_LOSSES,
    jsd_beta_flipped,
    token_kd_log_prob_target,
    token_kd_mask_ignored,
    token_kd_mask_mean_over_all,
    token_kd_reversed,
    token_kd_temperature_student_only,
)

__all__ = [
    "BUGGY_KD_LOSSES",
    "BUGGY_TOKEN_LOSSES",
    "DIVERGENCES",
    "Diagnosis",
    "ECEFn",
    "KDLossFn",
    "KDStepFn",
    "PROBE_ALPHA",
    "PROBE_BATCH",
    "PROBE_CLASSES",
    "TokenLossFn",
    "batchnorm_running_means",
    "check_ece",
    "check_eval_mode",
    "check_kd_loss",
    "check_kd_step",
    "check_kl_direction",
    "check_log_prob_targets",
    "check_mean_ci",
    "check_no_grad",
    "check_padding_mask",
    "check_teacher_frozen",
    "check_temperature_sides",
    "check_token_loss",
    "diagnose_token_loss",
    "jsd_beta_flipped",
    "kd_loss_alpha_on_ce",
    "kd_loss_source3",
    "kd_loss_source4",
    "saved_bytes",
    "token_kd_log_prob_target",
    "token_kd_mask_ignored",
    "token_kd_mask_mean_over_all",
    "token_kd_reversed",
    "token_kd_temperature_student_only",
]
