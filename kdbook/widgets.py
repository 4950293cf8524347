"""Slider explorers for teaching live: a pure function computes what to draw, a thin
ipywidgets wrapper draws it.

Each explorer has three parts, so that the computation is tested without a kernel:

- a ``*_view`` function: plain numbers in, plain data out (dicts of tensors, DataFrames);
- a ``draw_*`` function: a view in, a matplotlib Figure out;
- a ``*_explorer`` function: sliders wired to both with ``ipywidgets.interactive_output``.

No callback trains anything: every redraw is a few softmaxes or a table lookup.

>>> import torch
>>> view = temperature_view(torch.tensor([[4.0, 1.0, 0.0]]), None, temperature=1.0)
>>> view["teacher"].shape
torch.Size([1, 3])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from kdbook.data import UNLABELED
from kdbook.losses import soft_kd_term, soft_targets

SWEEP_COLUMNS = ("temperature", "alpha", "seed")


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy ``-sum p log p`` in nats over the last dimension (0 for one-hot)."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


# --------------------------------------------------------------------------- wiring


def show_figure(fig: Figure) -> None:
    """Display ``fig`` in the current output (the explorer's Output widget), then close it."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def explorer(
    controls: Mapping[str, Any],
    compute: Callable[..., Any],
    draw: Callable[[Any], Figure],
    describe: Callable[[Any], str] | None = None,
):
    """Sliders above an Output; each change calls ``compute``, ``draw`` and ``describe``.

    The returned box carries ``controls`` (name -> widget), ``view`` (the last computed
    view) and ``redraw_seconds`` (compute + draw time of each redraw), so that tests and
    curious readers can inspect what the sliders did.
    """
    import ipywidgets as widgets

    box = widgets.VBox()
    box.controls = dict(controls)
    box.view = None
    box.redraw_seconds = []

    def update(**values: Any) -> None:
        start = time.perf_counter()
        view = compute(**values)
        fig = draw(view)
        box.view = view
        box.redraw_seconds.append(time.perf_counter() - start)
        if describe is not None:
            print(describe(view))
        show_figure(fig)

    output = widgets.interactive_output(update, dict(controls))
    box.children = [widgets.HBox(list(controls.values())), output]
    return box


def selection_slider(name: str, values: Sequence[float], value: float, description: str):
    import ipywidgets as widgets

    if not values:
        raise ValueError(f"{name} must have at least one value on the slider, got []")
    value = min(values, key=lambda v: abs(v - value))  # start at the nearest stop
    return widgets.SelectionSlider(
        options=[(f"{v:g}", v) for v in values],
        value=value,
        description=description,
        continuous_update=True,
        layout=widgets.Layout(width="380px"),
    )


# --------------------------------------------------------------------------- temperature


def temperature_view(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor | None,
    temperature: float,
) -> dict[str, Any]:
    """The teacher's (and student's) softened distributions at ``temperature``.

    Args:
        teacher_logits: ``(N, C)`` logits of the chosen images.
        student_logits: ``(N, C)`` logits of a student on the same images, or None.
        temperature: T > 0.

    Returns:
        ``{"temperature", "teacher", "teacher_entropy", "student", "student_entropy"}``:
        probabilities ``(N, C)`` and entropies ``(N,)`` in nats (student entries None
        without a student).
    """
    teacher = soft_targets(teacher_logits.detach().float(), temperature)
    view: dict[str, Any] = {
        "temperature": float(temperature),
        "teacher": teacher,
        "teacher_entropy": entropy(teacher),
        "student": None,
        "student_entropy": None,
    }
    if student_logits is not None:
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student_logits must have the teacher's shape {tuple(teacher_logits.shape)}, "
                f"got {tuple(student_logits.shape)}"
            )
        student = soft_targets(student_logits.detach().float(), temperature)
        view["student"] = student
        view["student_entropy"] = entropy(student)
    return view


def describe_temperature(view: Mapping[str, Any]) -> str:
    """One line per image: the entropies at this T (and the maximum, log C)."""
    num_classes = view["teacher"].shape[1]
    lines = [
        f"T = {view['temperature']:g}; maximum entropy log({num_classes}) = "
        f"{math.log(num_classes):.3f} nats"
    ]
    for i, h in enumerate(view["teacher_entropy"].tolist()):
        line = f"image {i + 1}: teacher entropy {h:.3f} nats"
        if view["student_entropy"] is not None:
            line += f", student entropy {view['student_entropy'][i].item():.3f} nats"
        lines.append(line)
    return "\n".join(lines)


def draw_temperature(
    view: Mapping[str, Any],
    classes: Sequence[str],
    *,
    labels: Sequence[int] | None = None,
) -> Figure:
    """One panel per image: teacher's and student's probabilities per class at T."""
    n = view["teacher"].shape[0]
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False, sharey=True)
    positions = torch.arange(len(classes)).float()
    series = [("teacher", view["teacher"])]
    if view["student"] is not None:
        series.append(("student", view["student"]))
    width = 0.8 / len(series)
    for i, ax in enumerate(axes[0]):
        for k, (name, probs) in enumerate(series):
            h = view[f"{name}_entropy"][i].item()
            offsets = positions + k * width - 0.4 + width / 2
            ax.bar(offsets.tolist(), probs[i].tolist(), width, label=f"{name} (H = {h:.2f} nats)")
        ax.set_xticks(positions.tolist(), list(classes))
        true = "" if labels is None else f" (true: {classes[int(labels[i])]})"
        ax.set(xlabel=f"class{true}", ylim=(0, 1), title=f"image {i + 1}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("probability")
    fig.suptitle(f"softmax(logits / T) at T = {view['temperature']:g}")
    fig.tight_layout()
    return fig


def temperature_explorer(
    teacher_logits: torch.Tensor,
    classes: Sequence[str],
    *,
    student_logits: torch.Tensor | None = None,
    labels: Sequence[int] | None = None,
    temperatures: Sequence[float] = (0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20),
    temperature: float = 4.0,
):
    """A T slider over the teacher's (and student's) soft targets for a few images.

    Args:
        teacher_logits: ``(N, C)`` logits of the chosen images (keep N small, 1-4).
        classes: class names.
        student_logits: ``(N, C)`` logits of a student on the same images, or None.
        labels: the images' true classes, shown under each panel.
        temperatures: the slider's stops.
        temperature: the starting value (the nearest of ``temperatures``).

    Returns:
        An ipywidgets box (display it; ``.controls``, ``.view``, ``.redraw_seconds``).
    """
    temperatures = [float(t) for t in temperatures]
    return explorer(
        {"temperature": selection_slider("temperature", temperatures, float(temperature), "T")},
        lambda temperature: temperature_view(teacher_logits, student_logits, temperature),
        lambda view: draw_temperature(view, classes, labels=labels),
        describe_temperature,
    )


# --------------------------------------------------------------------------- loss


def _loss_parts(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    with_t2: bool,
) -> dict[str, float]:
    s = student_logits.detach().float().clone().requires_grad_(True)
    t = teacher_logits.detach().float()
    soft = soft_kd_term(s, t, temperature)
    if not with_t2:
        soft = soft / temperature**2
    labelled = targets != UNLABELED
    hard = F.cross_entropy(s[labelled], targets[labelled]) if labelled.any() else s.sum() * 0
    (g_soft,) = torch.autograd.grad(alpha * soft, s, retain_graph=True)
    (g_hard,) = torch.autograd.grad((1 - alpha) * hard, s)
    return {
        "soft": soft.item(),
        "hard": hard.item(),
        "weighted soft": alpha * soft.item(),
        "weighted hard": (1 - alpha) * hard.item(),
        "loss": alpha * soft.item() + (1 - alpha) * hard.item(),
        "soft grad norm": g_soft.norm().item(),
        "hard grad norm": g_hard.norm().item(),
        "grad norm": (g_soft + g_hard).norm().item(),
    }


def loss_view(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    alpha: float,
    *,
    curve_temperatures: Sequence[float] = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 20),
) -> dict[str, Any]:
    """The KD loss, its parts and its gradient on the student's logits, with and without T².

    ``loss = alpha * soft + (1 - alpha) * hard`` where ``soft`` is
    ``T² * KL(softmax(t/T) || softmax(s/T))`` ("with T^2", as :func:`kdbook.losses.kd_loss`)
    or the bare KL ("without T^2"), and ``hard`` the cross-entropy on labelled targets.

    Args:
        student_logits, teacher_logits: ``(N, C)`` logits; targets ``(N,)`` (UNLABELED allowed).
        temperature: T > 0; alpha: weight of the soft term in [0, 1].
        curve_temperatures: the temperatures of the gradient-norm curve at this alpha.

    Returns:
        ``{"temperature", "alpha", "table", "curve"}``: ``table`` a DataFrame indexed by
        ``"with T^2"``/``"without T^2"`` with columns soft, hard, weighted soft, weighted
        hard, loss, soft grad norm, hard grad norm, grad norm; ``curve`` a DataFrame indexed
        by T with the gradient norm of the whole loss for both variants.
    """
    from kdbook.losses import check_temperature_alpha

    check_temperature_alpha(temperature, alpha)
    variants = {"with T^2": True, "without T^2": False}
    args = (student_logits, teacher_logits, targets)
    table = pd.DataFrame(
        {name: _loss_parts(*args, temperature, alpha, flag) for name, flag in variants.items()}
    ).T
    curve = pd.DataFrame(
        {
            name: [_loss_parts(*args, t, alpha, flag)["grad norm"] for t in curve_temperatures]
            for name, flag in variants.items()
        },
        index=pd.Index([float(t) for t in curve_temperatures], name="T"),
    )
    return {
        "temperature": float(temperature),
        "alpha": float(alpha),
        "table": table,
        "curve": curve,
    }


def describe_loss(view: Mapping[str, Any]) -> str:
    """The loss and its parts for both variants, as text."""
    lines = [f"T = {view['temperature']:g}, alpha = {view['alpha']:g}"]
    for name, row in view["table"].iterrows():
        lines.append(
            f"{name:>12}: loss {row['loss']:.4f} = {view['alpha']:g} x soft {row['soft']:.4f}"
            f" + {1 - view['alpha']:g} x hard {row['hard']:.4f};"
            f" grad norm {row['grad norm']:.4f} (soft part {row['soft grad norm']:.4f})"
        )
    return "\n".join(lines)


def draw_loss(view: Mapping[str, Any]) -> Figure:
    """Left: the weighted soft and hard parts per variant. Right: gradient norm against T."""
    table, curve = view["table"], view["curve"]
    fig, (ax_parts, ax_grad) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    positions = list(range(len(table)))
    ax_parts.bar(positions, table["weighted soft"], 0.5, label="alpha x soft")
    ax_parts.bar(
        positions,
        table["weighted hard"],
        0.5,
        bottom=table["weighted soft"],
        label="(1 - alpha) x hard",
    )
    ax_parts.set_xticks(positions, list(table.index))
    ax_parts.set(ylabel="loss on the batch (nats)", title="the two parts of the KD loss")
    ax_parts.grid(axis="y", alpha=0.3)
    ax_parts.legend(fontsize=8)
    for name, style in zip(curve.columns, ("o-", "s--"), strict=False):
        ax_grad.plot(curve.index, curve[name], style, label=name)
        ax_grad.plot(
            [view["temperature"]],
            [table.loc[name, "grad norm"]],
            "*",
            color="black",
            markersize=12,
        )
    ax_grad.plot([], [], "*", color="black", label=f"T = {view['temperature']:g} (slider)")
    ax_grad.set_xscale("log", base=2)
    ax_grad.set_xticks(list(curve.index), [f"{t:g}" for t in curve.index], fontsize=8)
    ax_grad.set_yscale("log")
    ax_grad.set(
        xlabel="temperature T (log scale)",
        ylabel="gradient norm on the logits (log scale)",
        title=f"gradient of the whole loss, alpha = {view['alpha']:g}",
    )
    ax_grad.grid(alpha=0.3, which="both")
    ax_grad.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_explorer(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperatures: Sequence[float] = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 20),
    alphas: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0),
    temperature: float = 4.0,
    alpha: float = 0.7,
):
    """T and alpha sliders over the KD loss of one batch, with and without the T² factor.

    Returns:
        An ipywidgets box (display it; ``.controls``, ``.view``, ``.redraw_seconds``).
    """
    temperatures = [float(t) for t in temperatures]
    alphas = [float(a) for a in alphas]
    return explorer(
        {
            "temperature": selection_slider("temperature", temperatures, float(temperature), "T"),
            "alpha": selection_slider("alpha", alphas, float(alpha), "alpha"),
        },
        lambda temperature, alpha: loss_view(
            student_logits,
            teacher_logits,
            targets,
            temperature,
            alpha,
            curve_temperatures=temperatures,
        ),
        draw_loss,
        describe_loss,
    )


# --------------------------------------------------------------------------- sweep


def _check_sweep_table(table: pd.DataFrame, kd: str, scratch: str) -> None:
    missing = [c for c in (*SWEEP_COLUMNS, kd, scratch) if c not in table.columns]
    if missing:
        raise ValueError(
            f"table must have the columns {[*SWEEP_COLUMNS, kd, scratch]}, missing {missing}"
        )


def sweep_summary(
    table: pd.DataFrame, *, kd: str = "kd_accuracy", scratch: str = "scratch_accuracy"
) -> pd.DataFrame:
    """Mean and 95% interval over seeds per (temperature, alpha) cell of a sweep table.

    Args:
        table: one row per cell and seed, with columns temperature, alpha, seed and the
            accuracies (%) of the distilled student (``kd``) and of the same student trained
            alone from the same weights (``scratch``).

    Returns:
        A DataFrame indexed by (temperature, alpha) with kd_mean, kd_ci95, scratch_mean,
        scratch_ci95, gain_mean, gain_ci95 (the paired gain kd - scratch, per seed) and n
        (the distilled runs that did not diverge).
    """
    from kdbook.stats import finite_mean_ci

    _check_sweep_table(table, kd, scratch)
    rows = {}
    for key, cell in table.groupby(["temperature", "alpha"], sort=True):
        row: dict[str, float] = {}
        for name, values in (
            ("kd", cell[kd]),
            ("scratch", cell[scratch]),
            ("gain", cell[kd] - cell[scratch]),
        ):  # a diverged run (NaN) is left out of the cell's mean and counted below
            row[f"{name}_mean"], row[f"{name}_ci95"] = finite_mean_ci(values.tolist())
        row["n"] = int(cell[kd].notna().sum())
        rows[key] = row
    summary = pd.DataFrame(rows).T
    summary.index = summary.index.set_names(["temperature", "alpha"])
    return summary.astype({"n": int})


def sweep_difference(
    table: pd.DataFrame,
    first: tuple[float, float],
    second: tuple[float, float],
    *,
    kd: str = "kd_accuracy",
) -> tuple[float, float]:
    """Mean and 95% half-width of ``kd(first) - kd(second)``, paired by seed.

    Args:
        first, second: ``(temperature, alpha)`` cells of the table.

    Returns:
        ``(mean, ci95)`` in percentage points over the seeds both cells have.
    """
    from kdbook.stats import finite_mean_ci

    _check_sweep_table(table, kd, kd)
    by_seed = []
    for temperature, alpha in (first, second):
        cell = table[(table["temperature"] == temperature) & (table["alpha"] == alpha)]
        if cell.empty:
            raise ValueError(
                f"cell (temperature, alpha) must be in the table, got {(temperature, alpha)}"
            )
        by_seed.append(cell.set_index("seed")[kd])
    return finite_mean_ci((by_seed[0] - by_seed[1]).tolist())  # NaN where a run diverged


def sweep_view(summary: pd.DataFrame, temperature: float, alpha: float) -> dict[str, Any]:
    """Pick one (temperature, alpha) cell of a :func:`sweep_summary`.

    Returns:
        ``{"temperature", "alpha", "cell", "summary"}``: the cell's row (a Series with
        kd_mean, kd_ci95, scratch_mean, scratch_ci95, gain_mean, gain_ci95, n; None when
        the grid has no result there) and the whole summary (for the heat map).
    """
    key = (float(temperature), float(alpha))
    temps = summary.index.get_level_values("temperature")
    alphas = summary.index.get_level_values("alpha")
    if key[0] not in temps or key[1] not in alphas:
        raise ValueError(
            f"temperature must be one of {sorted(set(temps))} and alpha one of "
            f"{sorted(set(alphas))}, got {key}"
        )
    cell = summary.loc[key] if key in summary.index else None  # None: a point that failed
    return {"temperature": key[0], "alpha": key[1], "cell": cell, "summary": summary}


def describe_sweep(view: Mapping[str, Any]) -> str:
    """The chosen cell in words: KD, scratch, the gain with its interval, and a verdict."""
    from kdbook.stats import ACCURACY_RANGE, format_interval, verdict

    c = view["cell"]
    if c is None:
        return f"T = {view['temperature']:g}, alpha = {view['alpha']:g}: no result in the sweep"
    return (
        f"T = {view['temperature']:g}, alpha = {view['alpha']:g} ({int(c['n'])} seeds): "
        f"KD {format_interval(c['kd_mean'], c['kd_ci95'], within=ACCURACY_RANGE)}, "
        f"scratch {format_interval(c['scratch_mean'], c['scratch_ci95'], within=ACCURACY_RANGE)}, "
        f"gain {format_interval(c['gain_mean'], c['gain_ci95'], signed=True, unit=' points')}"
        f" -> {verdict(c['gain_mean'], c['gain_ci95'])}"
    )


def draw_sweep(view: Mapping[str, Any], *, label: str = "accuracy (%)") -> Figure:
    """Left: the gain heat map with the chosen cell framed. Right: KD and scratch against T
    at the chosen alpha, with 95% intervals."""
    from kdbook.plots import sweep_heatmap

    summary = view["summary"]
    fig, (ax_map, ax_line) = plt.subplots(1, 2, figsize=(11, 3.8))
    sweep_heatmap(
        summary,
        "gain_mean",
        "gain_ci95",
        ax=ax_map,
        title="gain KD - alone (points, mean ± 95% CI)",
        highlight=(view["temperature"], view["alpha"]),
        label="gain (points)",
    )
    at_alpha = summary.xs(view["alpha"], level="alpha")
    temps = at_alpha.index.tolist()
    for name, fmt in (("kd", "o-"), ("scratch", "s--")):
        ax_line.errorbar(
            temps,
            at_alpha[f"{name}_mean"],
            yerr=at_alpha[f"{name}_ci95"].fillna(0),
            fmt=fmt,
            capsize=4,
            label="student (KD)" if name == "kd" else "student (scratch)",
        )
    cell = view["cell"]
    if cell is not None:
        ax_line.plot(
            [view["temperature"]],
            [cell["kd_mean"]],
            "*",
            color="black",
            markersize=14,
            label=f"T = {view['temperature']:g} (slider)",
        )
    ax_line.set_xscale("log", base=2)
    ax_line.set_xticks(temps, [f"{t:g}" for t in temps])
    ax_line.set(
        xlabel="temperature T (log scale)",
        ylabel=label,
        title=f"alpha = {view['alpha']:g}: mean ± 95% CI over seeds",
    )
    ax_line.grid(alpha=0.3)
    ax_line.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def sweep_explorer(
    table: pd.DataFrame,
    *,
    kd: str = "kd_accuracy",
    scratch: str = "scratch_accuracy",
    label: str = "accuracy (%)",
    temperature: float | None = None,
    alpha: float | None = None,
):
    """T and alpha sliders over a precomputed sweep table (no training in the callback).

    Args:
        table: one row per (temperature, alpha, seed) with the accuracies in ``kd`` and
            ``scratch`` (e.g. a ``kdbook sweep`` CSV, or a grid computed in the notebook).
        label: the y-axis label of the accuracies (say which split).
        temperature, alpha: the starting cell (default: the first of the grid).

    Returns:
        An ipywidgets box (display it; ``.controls``, ``.view``, ``.redraw_seconds``).
    """
    summary = sweep_summary(table, kd=kd, scratch=scratch)
    temps = sorted({float(t) for t in summary.index.get_level_values("temperature")})
    alphas = sorted({float(a) for a in summary.index.get_level_values("alpha")})
    return explorer(
        {
            "temperature": selection_slider(
                "temperature", temps, temps[0] if temperature is None else float(temperature), "T"
            ),
            "alpha": selection_slider(
                "alpha", alphas, alphas[0] if alpha is None else float(alpha), "alpha"
            ),
        },
        lambda temperature, alpha: sweep_view(summary, temperature, alpha),
        lambda view: draw_sweep(view, label=label),
        describe_sweep,
    )
