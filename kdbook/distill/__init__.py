"""What a student learns from: the teacher source and the loss terms, as one :class:`Distiller`.

- :mod:`kdbook.distill.distiller`: :class:`Distiller` (teacher, ensemble or cache; the terms).
- :mod:`kdbook.distill.cache`: :class:`LogitCache`, :func:`cache_teacher_logits`.
- :mod:`kdbook.distill.views`: what the teacher sees (:class:`IndependentViews`, :class:`Mixup`).

The loss terms live in :mod:`kdbook.losses` beside their functions; this package re-exports
them (``from kdbook.distill import DKD`` keeps working).
"""

from __future__ import annotations

from kdbook.distill.cache import (
    LogitCache,
    cache_teacher_logits,
    stored_views,
)
from kdbook.distill.distiller import (
    ALPHA,
    TEMPERATURE,
    Distiller,
)
from kdbook.distill.views import (
    IndependentViews,
    Mixup,
    View,
)
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
from kdbook.losses.dkd import (
    DKD,
)
from kdbook.losses.features import (
    FeatureKD,
)
from kdbook.losses.logit import (
    CrossEntropy,
    LogitKD,
)

__all__ = [
    "ALPHA",
    "TEMPERATURE",
    "CrossEntropy",
    "DKD",
    "Distiller",
    "FeatureKD",
    "IndependentViews",
    "LogitCache",
    "LogitKD",
    "Mixup",
    "Outputs",
    "Schedulable",
    "TERMS",
    "Term",
    "View",
    "cache_teacher_logits",
    "check_schedule",
    "list_terms",
    "register_term",
    "setting",
    "stored_views",
]
