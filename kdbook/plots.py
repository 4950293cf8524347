"""Matplotlib figures of the book: each returns its Figure; :func:`save_figure` writes a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from kdbook.io import atomic_write


def figure_title(fig: Figure) -> str:
    """What a figure shows, in words: its suptitle, else its axes' titles joined by "; "."""
    suptitle = fig.get_suptitle()
    if suptitle:
        return suptitle
    return "; ".join(t for t in (ax.get_title() for ax in fig.axes) if t)


def save_figure(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``run_dir/figures/<name>.png`` (atomically) and return the path.

    The PNG carries the figure's title (:func:`figure_title`) as its ``Title`` text, which
    the HTML book uses as the image's alt text (:func:`kdbook.io.png_title` reads it back).
    """
    path = Path(run_dir) / "figures" / f"{name}.png"
    metadata = {"Title": figure_title(fig)}
    atomic_write(
        path,
        lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight", metadata=metadata),
    )
    return path


def image_grid(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[str],
    *,
    title: str,
    ncols: int = 10,
) -> Figure:
    """A grid of uint8 images ``(N, C, H, W)`` with their class names."""
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.2 * ncols, 1.35 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, images, labels, strict=False):
        pixels = img.permute(1, 2, 0).numpy()
        ax.imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray_r")
        ax.set_title(classes[int(label)], fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_curves(histories: Mapping[str, pd.DataFrame], *, title: str) -> Figure:
    """Training loss and validation accuracy per epoch, one line per run."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, frame in histories.items():
        ax_loss.plot(frame.index, frame["train_loss"], label=name)
        ax_acc.plot(frame.index, frame["val_acc"], label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_bars(
    probs: Mapping[str, torch.Tensor], classes: Sequence[str], *, title: str, true_class=None
) -> Figure:
    """Side-by-side bars of several probability vectors over the classes (e.g. one per T)."""
    fig, ax = plt.subplots(figsize=(9, 3.6))
    width = 0.8 / max(1, len(probs))
    positions = torch.arange(len(classes)).float()
    for i, (name, p) in enumerate(probs.items()):
        ax.bar(positions + i * width - 0.4 + width / 2, p.tolist(), width, label=name)
    ax.set_xticks(positions.tolist(), list(classes))
    label = "class" if true_class is None else f"class (true: {classes[true_class]})"
    ax.set(xlabel=label, ylabel="probability", title=title, ylim=(0, 1))
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _seeds_and_intervals(
    ax, per_seed: pd.DataFrame, summary: pd.DataFrame, methods: list[str], *, horizontal: bool
) -> None:
    """Per method, each seed's value as a dot and the mean with its 95% interval beside it."""
    for i, method in enumerate(methods):
        values, at = per_seed[method], [i] * len(per_seed[method])
        mean, ci95 = summary.loc[method, "mean"], summary.loc[method, "ci95"]
        label = "one seed" if i == 0 else None
        interval = "mean ± 95% interval" if i == 0 else None
        style = {"fmt": "o", "color": "black", "label": interval}
        if horizontal:
            ax.scatter(values, at, alpha=0.5, color="tab:blue", label=label)
            ax.errorbar(mean, i + 0.2, xerr=ci95, capsize=4, **style)
        else:
            ax.scatter(at, values, alpha=0.5, label=label)
            ax.errorbar(i + 0.15, mean, yerr=ci95, capsize=5, **style)


def comparison_plot(per_seed: pd.DataFrame, summary: pd.DataFrame, *, title: str) -> Figure:
    """Each seed's accuracy as a dot and the mean with its 95% interval, per method."""
    methods = [m for m in summary.index if m in per_seed.columns and not m.startswith("gain")]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    _seeds_and_intervals(ax, per_seed, summary, methods, horizontal=False)
    ax.set_xticks(range(len(methods)), methods)
    ax.set(xlabel="model", ylabel="test accuracy (%)", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def confusion_plot(matrix: torch.Tensor, classes: Sequence[str], *, title: str) -> Figure:
    """A confusion matrix as a heat map with counts."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    im = ax.imshow(matrix.numpy(), cmap="Blues")
    ticks = range(len(classes))
    ax.set_xticks(ticks, list(classes))
    ax.set_yticks(ticks, list(classes))
    for (r, c), v in zip(
        [(r, c) for r in ticks for c in ticks], matrix.flatten().tolist(), strict=True
    ):
        if v:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(im, ax=ax, label="test images")
    fig.tight_layout()
    return fig


def reliability_plot(bins: Mapping[str, pd.DataFrame], *, title: str) -> Figure:
    """Accuracy against confidence per bin, one line per model; the diagonal is calibrated."""
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    for name, frame in bins.items():
        filled = frame[frame["count"] > 0]
        ax.plot(filled["confidence"], filled["accuracy"], "o-", label=name)
    ax.set(xlabel="confidence (max probability)", ylabel="accuracy", title=title)
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, torch.Tensor], *, title: str) -> Figure:
    """Rows of uint8 images ``(N, C, H, W)``, each row named on its left (e.g. one per draw)."""
    ncols = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(1.1 * ncols + 1.2, 1.15 * len(rows)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a thin frame makes shifts visible
            spine.set_color("0.75")
    for r, (name, images) in enumerate(rows.items()):
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for ax, img in zip(axes[r], images, strict=False):
            pixels = img.permute(1, 2, 0).numpy()
            ax.imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray_r")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grouped_bars(
    panels: Mapping[str, pd.DataFrame],
    *,
    title: str,
    xlabel: str,
    ylabels: Mapping[str, str],
    log: Sequence[str] = (),
) -> Figure:
    """One panel per frame: a group of bars per row, one bar per column (with a legend).

    Args:
        panels: panel title -> DataFrame (index: the groups on the x axis; columns: the bars).
        title: the figure's title.
        xlabel: label of every x axis.
        ylabels: panel title -> y-axis label (with its unit).
        log: panel titles whose y axis is logarithmic.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (name, frame) in zip(axes[0], panels.items(), strict=True):
        width = 0.8 / max(1, frame.shape[1])
        positions = torch.arange(len(frame)).float()
        for i, column in enumerate(frame.columns):
            offsets = positions + i * width - 0.4 + width / 2
            ax.bar(offsets.tolist(), frame[column].tolist(), width, label=str(column))
        ax.set_xticks(positions.tolist(), [str(i) for i in frame.index], rotation=30, ha="right")
        ax.set(xlabel=xlabel, ylabel=ylabels[name], title=name)
        if name in log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        if frame.shape[1] > 1:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def line_plot(
    frame: pd.DataFrame,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    styles: Mapping[str, str] | None = None,
) -> Figure:
    """One line per column of ``frame`` against its index (e.g. a measure per T or per epoch).

    Args:
        frame: index on the x axis, one column per line (the column name is its legend).
        title, xlabel, ylabel: texts of the figure (put units in the labels).
        logx, logy: logarithmic axes (for quantities that scale like a power).
        styles: column -> matplotlib format string ("o-", "--", ...); "o-" by default.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for column in frame.columns:
        fmt = (styles or {}).get(column, "o-")
        ax.plot(frame.index, frame[column], fmt, label=str(column))
    if logx:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(frame.index), [f"{v:g}" for v in frame.index])
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both" if logy else "major")
    ax.legend()
    fig.tight_layout()
    return fig


def sweep_heatmap(
    summary: pd.DataFrame,
    value: str,
    ci: str | None = None,
    *,
    title: str,
    ax=None,
    highlight: tuple[float, float] | None = None,
    cmap: str | None = None,
    label: str | None = None,
) -> Figure:
    """A (temperature x alpha) grid as a heat map, each cell annotated "mean ± 95% CI".

    Args:
        summary: indexed by (temperature, alpha), e.g. :func:`kdbook.widgets.sweep_summary`.
        value: the column coloured and written (e.g. ``"gain_mean"``, in points or %).
        ci: the column of its 95% half-width, written under it (or None).
        title: the panel's title (say the unit).
        ax: draw into this Axes instead of a new figure.
        highlight: a (temperature, alpha) cell to frame in red.
        cmap: the colour map; default a diverging one centred on 0 when the values change
            sign (a gain that is sometimes negative), else a sequential one.
        label: the colour bar's label (default: ``value``).
    """
    from matplotlib.patches import Rectangle

    grid = summary[value].unstack("temperature").sort_index()
    spread = summary[ci].unstack("temperature").reindex_like(grid) if ci else None
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 2.2, 0.9 * grid.shape[0] + 1.6))
    fig = ax.figure
    values = grid.to_numpy(dtype=float)
    finite = values[~pd.isna(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    signed = low < 0 < high
    if signed:
        bound = max(-low, high)
        low, high = -bound, bound
    im = ax.imshow(
        values,
        cmap=cmap or ("RdBu" if signed else "viridis"),
        vmin=low,
        vmax=high,
        aspect="auto",
        origin="lower",
    )
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            v = values[r, c]
            if pd.isna(v):
                ax.text(c, r, "failed", ha="center", va="center", fontsize=8, color="gray")
                continue
            text = f"{v:+.1f}" if signed else f"{v:.1f}"
            if spread is not None and not pd.isna(spread.iat[r, c]):
                text += f"\n± {spread.iat[r, c]:.1f}"
            red, green, blue, _ = im.cmap(im.norm(v))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(
                c, r, text, ha="center", va="center", fontsize=9, color="white" if dark else "black"
            )
    ax.set_xticks(range(grid.shape[1]), [f"{t:g}" for t in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{a:g}" for a in grid.index])
    ax.set(xlabel="temperature T", ylabel="alpha (weight of the soft term)", title=title)
    if highlight is not None:
        t, a = highlight
        if t in list(grid.columns) and a in list(grid.index):
            c, r = list(grid.columns).index(t), list(grid.index).index(a)
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=3, color="red"))
    fig.colorbar(im, ax=ax, label=label or value)
    return fig


def interval_plot(
    per_seed: pd.DataFrame, summary: pd.DataFrame, *, title: str, xlabel: str
) -> Figure:
    """Many methods as horizontal rows: each seed as a dot, the mean with its 95% interval.

    Like :func:`comparison_plot`, for more (or longer-named) methods than fit side by side.

    Args:
        per_seed: one column per method, one row per seed.
        summary: indexed by method, with ``mean`` and ``ci95`` (``kdbook.compare.summarize``).
        title, xlabel: texts of the figure (put the unit in ``xlabel``).
    """
    methods = [m for m in per_seed.columns if m in summary.index]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(methods) + 1.4))
    _seeds_and_intervals(ax, per_seed, summary, methods, horizontal=True)
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def bar_plot(
    values: pd.Series,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    spread: pd.Series | None = None,
    max_ticks: int = 16,
) -> Figure:
    """One bar per entry of ``values`` (e.g. a weight per channel), with optional error bars.

    Args:
        values: the bar heights, indexed by what the x axis names (channel, class...).
        title, xlabel, ylabel: texts of the figure (put units in the labels).
        spread: per-entry half-widths drawn as error bars (e.g. the spread over a batch).
        max_ticks: at most this many x tick labels, evenly spaced, so that long series stay
            readable.
    """
    fig, ax = plt.subplots(figsize=(min(12.0, 3.0 + 0.12 * len(values)), 3.6))
    positions = list(range(len(values)))
    yerr = None if spread is None else spread.reindex(values.index).tolist()
    ax.bar(positions, values.tolist(), yerr=yerr, color="tab:blue", ecolor="gray", capsize=0)
    step = max(1, -(-len(values) // max_ticks))
    ax.set_xticks(positions[::step], [str(i) for i in values.index[::step]])
    ax.set_xlim(-0.8, len(values) - 0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def attention_grid(
    images: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    title: str,
    captions: Sequence[str] | None = None,
) -> Figure:
    """Input images in the first row, then one row of spatial attention maps per model.

    Each map is divided by its sum, so that a cell shows the share of the image's attention
    it holds, and every map shares one colour scale: rows of different models compare.

    Args:
        images: uint8 images ``(N, C, H, W)``.
        maps: row name -> attention maps ``(N, h, w)`` (``kdbook.losses.attention_map``).
        title: the figure's title.
        captions: one text per column (e.g. the true class), shown above the images.
    """
    shares = {
        name: m / m.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12) for name, m in maps.items()
    }
    top = max(s.max().item() for s in shares.values())
    ncols = len(images)
    fig, axes = plt.subplots(
        1 + len(shares),
        ncols,
        figsize=(1.15 * ncols + 2.6, 1.2 * (1 + len(shares)) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("image", rotation=0, ha="right", va="center", fontsize=9)
    for c, img in enumerate(images):
        pixels = img.permute(1, 2, 0).numpy()
        axes[0, c].imshow(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, cmap="gray_r")
        if captions is not None:
            axes[0, c].set_title(str(captions[c]), fontsize=9)
    im = None
    for r, (name, share) in enumerate(shares.items(), start=1):
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for c in range(ncols):
            im = axes[r, c].imshow(share[c].numpy(), cmap="magma", vmin=0.0, vmax=top)
    if im is not None:
        fig.colorbar(im, ax=axes[1:, :].ravel().tolist(), label="share of attention", shrink=0.9)
    fig.suptitle(title)
    return fig


def scatter_panels(
    frame: pd.DataFrame,
    *,
    x: Mapping[str, str],
    y: str,
    hue: str,
    title: str,
    muted: Sequence[str] = (),
) -> Figure:
    """One scatter panel per ``x`` column against ``y``, one colour per value of ``hue``.

    Args:
        frame: one row per point (e.g. one trained student), with the columns named here.
        x: column -> x-axis label (with its unit), one panel each.
        y: the column on every y axis (its name is the label: put the unit in it).
        hue: the column whose values get a colour each and a legend entry.
        title: the figure's title.
        muted: values of ``hue`` drawn in grey (a reference, such as the student alone).
    """
    fig, axes = plt.subplots(1, len(x), figsize=(5.6 * len(x) + 2.2, 4.0), squeeze=False)
    groups = list(dict.fromkeys(frame[hue]))
    colours = plt.get_cmap("tab10")
    for ax, (column, label) in zip(axes[0], x.items(), strict=True):
        for i, group in enumerate(groups):
            part = frame[frame[hue] == group]
            style = (
                {"color": "grey", "marker": "x"} if group in muted else {"color": colours(i % 10)}
            )
            ax.scatter(part[column], part[y], alpha=0.75, label=str(group), **style)
        ax.set(xlabel=label, ylabel=y)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    return fig
