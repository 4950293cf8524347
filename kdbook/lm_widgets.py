"""A temperature slider over a language model's next-character distribution.

As in :mod:`kdbook.widgets`: a pure ``*_view`` function (numbers in, a dict out), a
``draw_*`` function (a view in, a Figure out) and a thin ipywidgets wrapper. The model reads
the context once, when the explorer is built; each slider change is one softmax.

Introduced in notebook 15_language_model_kd.

>>> view = next_char_view(torch.tensor([2.0, 1.0, 0.0]), ("a", "b", " "), temperature=1.0)
>>> [row["character"] for row in view["top"]], round(view["entropy_bits"], 2)
(['a', 'b', "' '"], 1.2)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import nn


def shown(character: str) -> str:
    """A character as a label: letters as they are, whitespace and quotes by ``repr``."""
    return character if character.isprintable() and character not in " '\"" else repr(character)


def next_char_view(
    logits: torch.Tensor, classes: Sequence[str], temperature: float, top: int = 10
) -> dict[str, Any]:
    """The next-character distribution ``softmax(logits / temperature)`` of one position.

    Returns:
        ``{"temperature", "top": [{"character", "probability"}] (the ``top`` most likely,
        most likely first), "entropy_bits", "top_mass"}`` (the probability of those shown).
    """
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if logits.dim() != 1 or len(logits) != len(classes):
        raise ValueError(f"logits must be one position's [V] with V = {len(classes)} classes, "
                         f"got shape {tuple(logits.shape)}")  # fmt: skip
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    entropy = -(probs * probs.clamp_min(1e-12).log2()).sum().item()
    values, ids = probs.topk(min(top, len(probs)))
    rows = [{"character": shown(classes[int(i)]), "probability": float(v)}
            for v, i in zip(values, ids, strict=True)]  # fmt: skip
    return {"temperature": float(temperature), "top": rows, "entropy_bits": entropy,
            "top_mass": float(values.sum())}  # fmt: skip


def describe_next_char(view: Mapping[str, Any]) -> str:
    """One line: the temperature, the most likely character and the spread in bits."""
    first = view["top"][0]
    return (
        f"T = {view['temperature']:g}: most likely next character {first['character']} "
        f"({first['probability']:.0%}); entropy {view['entropy_bits']:.2f} bits (as uncertain "
        f"as a fair choice among {2 ** view['entropy_bits']:.1f} characters); the "
        f"{len(view['top'])} shown hold {view['top_mass']:.0%}"
    )


def draw_next_char(view: Mapping[str, Any], context: str = "") -> Figure:
    """A bar per character shown, most likely first."""
    fig, ax = plt.subplots(figsize=(7, 3))
    names = [row["character"] for row in view["top"]]
    ax.bar(range(len(names)), [row["probability"] for row in view["top"]], color="tab:blue")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1)
    ax.set_xlabel("next character")
    ax.set_ylabel("probability")
    tail = f" after …{context[-30:]!r}" if context else ""
    ax.set_title(f"The teacher's next character{tail} at T = {view['temperature']:g}", fontsize=9)
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


def next_char_explorer(
    model: nn.Module,
    data: Any,
    context: str,
    *,
    temperatures: Sequence[float] = (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8),
    temperature: float = 1.0,
    top: int = 10,
):
    """A T slider over ``model``'s next-character distribution after ``context`` (text).

    Returns:
        An ipywidgets box (display it); ``.controls``, ``.view`` (the last view) and
        ``.redraw_seconds`` let tests and readers inspect what the slider did.
    """
    import ipywidgets as widgets
    from IPython.display import display

    logits = last_position_logits(model, data.encode(context))
    values = [float(t) for t in temperatures]
    start = min(values, key=lambda v: abs(v - temperature))
    slider = widgets.SelectionSlider(
        options=[(f"{v:g}", v) for v in values], value=start, description="T",
        continuous_update=True, layout=widgets.Layout(width="380px"),
    )  # fmt: skip
    box = widgets.VBox()
    box.controls, box.view, box.redraw_seconds = {"temperature": slider}, None, []

    def update(temperature: float) -> None:
        began = time.perf_counter()
        view = next_char_view(logits, data.classes, temperature, top)
        fig = draw_next_char(view, context)
        box.view = view
        box.redraw_seconds.append(time.perf_counter() - began)
        print(describe_next_char(view))
        display(fig)
        plt.close(fig)

    output = widgets.interactive_output(update, {"temperature": slider})
    box.children = [slider, output]
    return box
