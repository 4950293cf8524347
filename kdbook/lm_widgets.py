"""Sliders over a language model's next token: the teacher's distribution at a temperature
(chapter 15) and, given a student, what GKD's beta asks it to match (chapter 16); and beta on
the 1-D mode-seeking picture.

Same three parts as :mod:`kdbook.widgets`: a pure ``*_view``, a ``draw_*`` and a thin
``*_explorer`` (its :func:`kdbook.widgets.explorer` wiring). The models read the context
once, before the explorer is built; each slider change is a few softmaxes.

Introduced in notebook 15_language_model_kd; notebook 16_on_policy_distillation adds the
student and beta.

>>> view = next_token_view(torch.tensor([2.0, 1.0, 0.0]), None, 1.0, labels=("a", "b", " "))
>>> view["labels"], round(view["entropy_bits"], 2)
(['a', 'b', "' '"], 1.2)
>>> view = next_token_view(torch.tensor([3.0, 1.0, 0.0]), torch.zeros(3), 1.0, 0.0)
>>> round(view["divergence"], 4) == round(view["forward_kl"], 4)
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from kdbook.losses import generalized_jsd_loss, reverse_kl_loss, token_kd_loss
from kdbook.mode_seeking import BIMODAL, Mixture1D, describe_mode_view, draw_mode_view, mode_view
from kdbook.widgets import explorer, selection_slider

BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TEMPERATURES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def shown(character: str) -> str:
    """A character as a label: letters as they are, whitespace and quotes by ``repr``."""
    return character if character.isprintable() and character not in " '\"" else repr(character)


def mode_explorer(mixture: Mixture1D = BIMODAL, *, betas: Sequence[float] = BETAS, beta=0.5):
    """A beta slider over the Gaussian fitted to ``mixture`` (:mod:`kdbook.mode_seeking`)."""
    return explorer(
        {"beta": selection_slider("beta", [float(b) for b in betas], float(beta), "beta")},
        lambda beta: mode_view(mixture, beta),
        draw_mode_view,
        describe_mode_view,
    )


def next_token_view(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor | None,
    temperature: float,
    beta: float = 0.0,
    top: int = 12,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The teacher's next-token distribution at one position and temperature and, given the
    student's logits of the same context, what the student is asked to match at ``beta``.

    Args:
        teacher_logits, student_logits: ``[V]`` next-token logits (``student_logits`` None:
            the teacher alone).
        temperature: T > 0 on both sides.
        beta: GKD's JSD weight (TRL's convention: 0 forward KL, 1 reverse KL).
        top: how many tokens to show (the teacher's most likely, merged with the student's).
        labels: the vocabulary (id -> text); None names a token by its id.

    Returns:
        ``temperature``, ``beta``, ``tokens`` (the ids shown, the teacher's most likely first),
        their ``labels``, the ``teacher``'s probabilities at T over them, its
        ``entropy_bits`` and ``top_mass`` (the probability of those shown); with a student
        also ``student`` and ``mixture`` probabilities, ``push`` (minus the loss's gradient on
        the student's logits: the tokens the step raises are positive) and ``forward_kl``,
        ``reverse_kl`` and ``divergence`` (the JSD at beta, TRL's, no T^2), all over the whole
        vocabulary.
    """
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if teacher_logits.dim() != 1 or (
        student_logits is not None and teacher_logits.shape != student_logits.shape
    ):
        raise ValueError(
            f"teacher_logits and student_logits must be two [V] vectors of one size, got "
            f"{tuple(teacher_logits.shape)} and "
            f"{None if student_logits is None else tuple(student_logits.shape)}"
        )
    if labels is not None and len(labels) != len(teacher_logits):
        raise ValueError(
            f"labels must name the V = {len(teacher_logits)} tokens, got {len(labels)}"
        )
    t = teacher_logits.detach().double()[None]
    p_t = F.softmax(t[0] / temperature, -1)
    k = min(top, len(p_t))
    ids = p_t.topk(k).indices
    view: dict[str, Any] = {"temperature": float(temperature), "beta": float(beta)}
    if student_logits is not None:
        s = student_logits.detach().double()[None].requires_grad_(True)
        jsd = generalized_jsd_loss(s, t, None, beta, temperature)
        (grad,) = torch.autograd.grad(jsd, s)
        p_s = F.softmax(s[0].detach() / temperature, -1)
        ids = torch.cat([ids, p_s.topk(k).indices]).unique()
        ids = ids[p_t[ids].argsort(descending=True)][:k]
        view |= {
            "student": p_s[ids],
            "mixture": (beta * p_t + (1 - beta) * p_s)[ids],
            "push": -grad[0][ids],
            "forward_kl": token_kd_loss(s.detach(), t, None, temperature).item() / temperature**2,
            "reverse_kl": reverse_kl_loss(s.detach(), t, None, temperature).item() / temperature**2,
            "divergence": jsd.item(),
        }
    names = [shown(labels[i]) if labels is not None else str(i) for i in ids.tolist()]
    entropy = -(p_t * p_t.clamp_min(1e-12).log2()).sum().item()
    return view | {"tokens": ids, "labels": names, "teacher": p_t[ids],
                   "entropy_bits": entropy, "top_mass": float(p_t[ids].sum())}  # fmt: skip


def describe_next_token(view: Mapping[str, Any]) -> str:
    """One line: the temperature, the teacher's most likely token and its spread in bits, and
    with a student the divergence at beta."""
    line = (
        f"T = {view['temperature']:g}: most likely next token {view['labels'][0]} "
        f"({float(view['teacher'][0]):.0%}); entropy {view['entropy_bits']:.2f} bits (as "
        f"uncertain as a fair choice among {2 ** view['entropy_bits']:.1f} tokens); the "
        f"{len(view['tokens'])} shown hold {view['top_mass']:.0%}"
    )
    if "divergence" not in view:
        return line
    return (
        f"{line}; beta = {view['beta']:g}: JSD_beta = {view['divergence']:.4f} nats (forward "
        f"KL {view['forward_kl']:.4f}, reverse KL {view['reverse_kl']:.4f}, both at T "
        f"without T^2)"
    )


def draw_next_token(view: Mapping[str, Any], context: str = "") -> Figure:
    """The teacher's probabilities (with a student: beside the student's and the mixture, and
    on the right where the step pushes), a bar per token shown."""
    names, student = view["labels"], "student" in view
    x = torch.arange(len(names)).float()
    fig, axes = plt.subplots(1, 2 if student else 1, figsize=(11, 3.4) if student else (7, 3))
    ax_p = axes[0] if student else axes
    parts = ("teacher", "student", "mixture") if student else ("teacher",)
    width = 0.27 if student else 0.8
    for k, name in enumerate(parts):
        offset = (k - 1) * width if student else 0.0
        ax_p.bar((x + offset).tolist(), view[name].tolist(), width, label=name)
    ax_p.set_xticks(x.tolist(), names)
    tail = f" after …{context[-30:]!r}" if context else ""
    ax_p.set(xlabel="next token", ylabel=f"probability at T = {view['temperature']:g}",
             title=f"what the student matches (beta = {view['beta']:g})" if student
             else f"the teacher's next token{tail} at T = {view['temperature']:g}")  # fmt: skip
    ax_p.set_ylim(0, 1)
    ax_p.grid(axis="y", alpha=0.3)
    if student:
        ax_p.legend(fontsize=8)
        push, ax_g = view["push"], axes[1]
        ax_g.bar(x.tolist(), push.tolist(), 0.6,
                 color=["tab:green" if v >= 0 else "tab:red" for v in push.tolist()])  # fmt: skip
        ax_g.axhline(0, color="black", lw=0.8)
        ax_g.set_xticks(x.tolist(), names)
        ax_g.set(xlabel="next token", ylabel="- d loss / d student logit",
                 title="the step raises green, lowers red")  # fmt: skip
        ax_g.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


@torch.no_grad()
def last_position_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``model``'s logits ``[V]`` for the token after ``ids`` (its last ``context`` read)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return model(ids[-model.context :][None].to(device))[0, -1].float().cpu()
    finally:
        model.train(was_training)


def next_token_explorer(
    teacher_logits: torch.Tensor,
    labels: Sequence[str],
    student_logits: torch.Tensor | None = None,
    *,
    temperatures: Sequence[float] = TEMPERATURES,
    temperature: float = 1.0,
    betas: Sequence[float] = BETAS,
    beta: float = 0.5,
    top: int = 12,
    context: str = "",
):
    """A temperature slider over one position's next-token distribution (and, given the
    student's logits, a beta slider over what it is asked to match). ``labels``: the
    vocabulary (id -> text); ``context``: the text read, for the title."""
    next_token_view(teacher_logits, student_logits, 1.0, top=top, labels=labels)  # checks
    controls = {"temperature": selection_slider(
        "temperature", [float(t) for t in temperatures], float(temperature), "T")}  # fmt: skip
    if student_logits is not None:
        controls["beta"] = selection_slider("beta", [float(b) for b in betas], float(beta), "beta")
    return explorer(
        controls,
        lambda temperature, beta=0.0: next_token_view(
            teacher_logits, student_logits, temperature, beta, top, labels
        ),
        lambda view: draw_next_token(view, context),
        describe_next_token,
    )
