"""Slider explorers for the language-model chapters: beta on the 1-D mode-seeking picture, and
temperature and beta on a teacher's and a student's next-token distributions.

Same three parts as :mod:`kdbook.widgets`: a pure ``*_view``, a ``draw_*`` and a thin
``*_explorer`` (its :func:`kdbook.widgets.explorer` wiring). Introduced in notebook
16_on_policy_distillation.

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

from kdbook.losses import generalized_jsd_loss, reverse_kl_loss, token_kd_loss
from kdbook.mode_seeking import BIMODAL, Mixture1D, describe_mode_view, draw_mode_view, mode_view
from kdbook.widgets import explorer, selection_slider

BETAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TEMPERATURES = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


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
    student_logits: torch.Tensor,
    temperature: float,
    beta: float,
    top: int = 12,
) -> dict[str, Any]:
    """What the student is asked to match at one position, at ``temperature`` and ``beta``.

    Args:
        teacher_logits, student_logits: ``[V]`` next-token logits of the same context.
        temperature: T > 0 on both sides.
        beta: GKD's JSD weight (TRL's convention: 0 forward KL, 1 reverse KL).
        top: how many tokens to show (the teacher's and student's most likely, merged).

    Returns:
        ``tokens`` (the ids shown), ``teacher``, ``student`` and ``mixture`` probabilities at T
        over them, ``push`` (minus the loss's gradient on the student's logits: the tokens the
        step raises are positive), and the numbers ``forward_kl``, ``reverse_kl`` and
        ``divergence`` (the JSD at beta, TRL's, no T^2), all over the whole vocabulary.
    """
    if teacher_logits.dim() != 1 or teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher_logits and student_logits must be two [V] vectors of one size, got "
            f"{tuple(teacher_logits.shape)} and {tuple(student_logits.shape)}"
        )
    t = teacher_logits.detach().double()[None]
    s = student_logits.detach().double()[None].requires_grad_(True)
    jsd = generalized_jsd_loss(s, t, None, beta, temperature)
    (grad,) = torch.autograd.grad(jsd, s)
    p_t, p_s = F.softmax(t[0] / temperature, -1), F.softmax(s[0].detach() / temperature, -1)
    mixture = beta * p_t + (1 - beta) * p_s
    k = min(top, len(p_t))
    shown = torch.cat([p_t.topk(k).indices, p_s.topk(k).indices]).unique()
    shown = shown[p_t[shown].argsort(descending=True)][:k]
    return {
        "temperature": float(temperature),
        "beta": float(beta),
        "tokens": shown,
        "teacher": p_t[shown],
        "student": p_s[shown],
        "mixture": mixture[shown],
        "push": -grad[0][shown],
        "forward_kl": token_kd_loss(s.detach(), t, None, temperature).item() / temperature**2,
        "reverse_kl": reverse_kl_loss(s.detach(), t, None, temperature).item() / temperature**2,
        "divergence": jsd.item(),
    }


def describe_next_token(view: Mapping[str, Any]) -> str:
    return (
        f"T = {view['temperature']:g}, beta = {view['beta']:g}: JSD_beta = "
        f"{view['divergence']:.4f} nats (forward KL {view['forward_kl']:.4f}, reverse KL "
        f"{view['reverse_kl']:.4f}, both at T without T^2)"
    )


def draw_next_token(view: Mapping[str, Any], labels: Sequence[str]) -> Figure:
    """Left: teacher, student and mixture probabilities. Right: where the step pushes."""
    names = [repr(labels[i])[1:-1] or " " for i in view["tokens"].tolist()]
    x = torch.arange(len(names)).float()
    fig, (ax_p, ax_g) = plt.subplots(1, 2, figsize=(11, 3.4))
    for k, name in enumerate(("teacher", "student", "mixture")):
        ax_p.bar((x + (k - 1) * 0.27).tolist(), view[name].tolist(), 0.27, label=name)
    ax_p.set_xticks(x.tolist(), names)
    ax_p.set(xlabel="next character", ylabel=f"probability at T = {view['temperature']:g}",
             title=f"what the student matches (beta = {view['beta']:g})")  # fmt: skip
    ax_p.legend(fontsize=8)
    ax_p.grid(axis="y", alpha=0.3)
    push = view["push"]
    ax_g.bar(x.tolist(), push.tolist(), 0.6,
             color=["tab:green" if v >= 0 else "tab:red" for v in push.tolist()])  # fmt: skip
    ax_g.axhline(0, color="black", lw=0.8)
    ax_g.set_xticks(x.tolist(), names)
    ax_g.set(xlabel="next character", ylabel="- d loss / d student logit",
             title="the step raises green, lowers red")  # fmt: skip
    ax_g.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def next_token_explorer(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    labels: Sequence[str],
    *,
    temperatures: Sequence[float] = TEMPERATURES,
    temperature: float = 1.0,
    betas: Sequence[float] = BETAS,
    beta: float = 0.5,
):
    """Temperature and beta sliders over one position's next-token distributions.

    ``labels``: the vocabulary (id -> character) for the axis.
    """
    return explorer(
        {
            "temperature": selection_slider(
                "temperature", [float(t) for t in temperatures], float(temperature), "T"
            ),
            "beta": selection_slider("beta", [float(b) for b in betas], float(beta), "beta"),
        },
        lambda temperature, beta: next_token_view(
            teacher_logits, student_logits, temperature, beta
        ),
        lambda view: draw_next_token(view, labels),
        describe_next_token,
    )
