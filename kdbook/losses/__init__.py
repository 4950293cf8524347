"""Distillation losses, each function beside its training :class:`Term`, formula and paper in
the docstring.

- :mod:`kdbook.losses.base`: the term protocol (:class:`Outputs`, :class:`Term`, the registry).
- :mod:`kdbook.losses.logit`: Hinton's loss (:func:`kd_loss`, :class:`LogitKD`), soft targets,
  logit standardisation, ensembles (notebooks 04 and 05).
- :mod:`kdbook.losses.dkd`: decoupled KD (:func:`dkd_loss`, :class:`DKD`; notebook 13).
- :mod:`kdbook.losses.features`: hints, attention transfer, token alignment
  (:class:`FeatureKD`; notebooks 09 and 10).
- :mod:`kdbook.losses.tokens`: per-token forward KL, reverse KL and GKD's generalised JSD over
  ``[B, L, V]`` logits with a padding mask (:func:`token_kd_loss`, :func:`reverse_kl_loss`,
  :func:`generalized_jsd_loss`; notebooks 15 and 16).
- :mod:`kdbook.losses.buggy`: the sources' buggy variants (notebook 08; a teaching aid).
- :mod:`kdbook.losses.buggy_tokens`: token-level losses written the usual wrong ways (notebook
  16; a teaching aid).

A new loss is one class::

    @register_term("prob_l2")
    class ProbL2(Term):
        def __init__(self, weight=1.0):
            super().__init__()
            self.weight = weight

        def forward(self, out, progress):
            p, q = out.logits.softmax(1), out.teacher_logits.softmax(1)
            l2 = (p - q).pow(2).sum(1).mean()
            return self.weight * l2, {"prob_l2": l2}

and ``fit(student, data, teacher=t, terms=[ProbL2(0.5)])`` trains with it, logs it, records
its settings and resumes it; neither ``fit`` nor the checkpoint code changes.
"""

from __future__ import annotations

from kdbook.losses.base import (
    TERMS,
    Outputs,
    Schedulable,
    Term,
    check_schedule,
    list_terms,
    register_term,
    setting,
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
from kdbook.losses.dkd import (
    DKD,
    DKD_BETA,
    DKD_WARMUP,
    check_beta,
    dkd_loss,
    dkd_objective,
    dkd_terms,
    dkd_warmup_weight,
)
from kdbook.losses.features import (
    AttentionTransfer,
    FeatureAdapter,
    FeatureKD,
    HintLoss,
    SEBlock,
    TokenAlignment,
    attention_map,
    attention_transfer_loss,
    hint_loss,
    tokens_to_map,
)
from kdbook.losses.logit import (
    CrossEntropy,
    LogitKD,
    check_logit_shapes,
    check_temperature_alpha,
    ensemble_logits,
    kd_loss,
    soft_kd_term,
    soft_targets,
    standardize_logits,
)
from kdbook.losses.tokens import (
    JSD_BETA,
    TokenJSD,
    TokenKD,
    TokenReverseKL,
    TokenTerm,
    check_jsd_beta,
    check_token_inputs,
    generalized_jsd_loss,
    kept_positions,
    reverse_kl_loss,
    token_cross_entropy,
    token_kd_loss,
    token_log_probs,
    token_mask,
)

__all__ = [
    "AttentionTransfer",
    "BUGGY_KD_LOSSES",
    "BUGGY_TOKEN_LOSSES",
    "CrossEntropy",
    "DKD",
    "DKD_BETA",
    "DKD_WARMUP",
    "FeatureAdapter",
    "FeatureKD",
    "HintLoss",
    "JSD_BETA",
    "LogitKD",
    "Outputs",
    "SEBlock",
    "Schedulable",
    "TERMS",
    "Term",
    "TokenAlignment",
    "TokenJSD",
    "TokenKD",
    "TokenReverseKL",
    "TokenTerm",
    "attention_map",
    "attention_transfer_loss",
    "check_beta",
    "check_jsd_beta",
    "check_logit_shapes",
    "check_schedule",
    "check_temperature_alpha",
    "check_token_inputs",
    "dkd_loss",
    "dkd_objective",
    "dkd_terms",
    "dkd_warmup_weight",
    "ensemble_logits",
    "generalized_jsd_loss",
    "hint_loss",
    "jsd_beta_flipped",
    "kd_loss",
    "kd_loss_alpha_on_ce",
    "kd_loss_source3",
    "kd_loss_source4",
    "kept_positions",
    "list_terms",
    "register_term",
    "reverse_kl_loss",
    "setting",
    "soft_kd_term",
    "soft_targets",
    "standardize_logits",
    "token_cross_entropy",
    "token_kd_log_prob_target",
    "token_kd_loss",
    "token_kd_mask_ignored",
    "token_kd_mask_mean_over_all",
    "token_kd_reversed",
    "token_kd_temperature_student_only",
    "token_log_probs",
    "token_mask",
    "tokens_to_map",
]
