"""Matplotlib figures of the book: each returns its Figure; :func:`save_figure` writes a PNG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from kdbook.io import atomic_write


def save_figure(fig: Figure, run_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``run_dir/figures/<name>.png`` (atomically) and return the path."""
    path = Path(run_dir) / "figures" / f"{name}.png"
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
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


def comparison_plot(per_seed: pd.DataFrame, summary: pd.DataFrame, *, title: str) -> Figure:
    """Each seed's accuracy as a dot and the mean with its 95% interval, per method."""
    methods = [m for m in summary.index if m in per_seed.columns and not m.startswith("gain")]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, method in enumerate(methods):
        values = per_seed[method]
        ax.scatter([i] * len(values), values, alpha=0.5, label="one seed" if i == 0 else None)
        ax.errorbar(
            i + 0.15,
            summary.loc[method, "mean"],
            yerr=summary.loc[method, "ci95"],
            fmt="o",
            color="black",
            capsize=5,
            label="mean ± 95% interval" if i == 0 else None,
        )
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
