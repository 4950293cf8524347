"""What a check returns: a :class:`Diagnosis` (right or wrong, and why)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

REL_TOL, ABS_TOL = 1e-4, 1e-6


@dataclass
class Diagnosis:
    """Result of a check: ``ok`` when nothing is wrong, else one sentence per problem."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    summary: str = "matches kd_loss"  # what ``ok`` means, shown after the check mark

    def __str__(self) -> str:
        if self.ok:
            return f"✓ {self.summary}"
        return "\n".join(f"✗ {p}" for p in self.problems)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        if self.ok:
            text = html.escape(self.summary).replace("kd_loss", "<code>kd_loss</code>")
            return f'<p style="color:green">✓ {text}</p>'
        items = "".join(f"<li>✗ {html.escape(p)}</li>" for p in self.problems)
        return f'<ul style="color:firebrick; list-style:none; padding-left:0">{items}</ul>'


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
