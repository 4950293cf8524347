"""Every figure has a title and labelled axes; save_figure writes a real PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: no display in CI

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from kdbook import plots  # noqa: E402
from kdbook.compare import summarize  # noqa: E402
from kdbook.evaluate import calibration_bins  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSES = ["cat", "dog", "fox"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def title_of(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else fig.axes[0].get_title()


def labelled_axes(fig: Figure) -> list:
    """The data axes (colour bars and image cells aside): each must have both labels."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>" and ax.axison]


def check_axes(fig: Figure) -> None:
    axes = labelled_axes(fig)
    assert axes
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax


def history_frame(offset: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"train_loss": [2.0 - offset, 1.0 - offset], "val_acc": [50.0 + offset, 70.0 + offset]},
        index=pd.Index([1, 2], name="epoch"),
    )


def test_image_grid():
    images = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    fig = plots.image_grid(images, torch.tensor([0, 1, 2, 0, 1]), CLASSES, title="digits", ncols=3)
    assert isinstance(fig, Figure) and title_of(fig) == "digits"
    assert len(fig.axes) == 6  # 2 rows of 3, the spare one blank
    assert [ax.get_title() for ax in fig.axes[:5]] == ["cat", "dog", "fox", "cat", "dog"]
    assert len(fig.axes[0].images) == 1 and not fig.axes[5].images
    rgb = plots.image_grid(
        torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8),
        torch.tensor([2, 1]),
        CLASSES,
        title="colour",
    )
    assert rgb.axes[0].images[0].get_array().shape == (8, 8, 3)


def test_history_curves():
    fig = plots.history_curves({"scratch": history_frame(0), "KD": history_frame(0.2)}, title="t")
    assert isinstance(fig, Figure) and title_of(fig) == "t"
    check_axes(fig)
    loss, acc = fig.axes
    assert loss.get_xlabel() == "epoch" and "accuracy (%)" in acc.get_ylabel()
    assert [line.get_label() for line in loss.get_lines()] == ["scratch", "KD"]
    assert list(acc.get_lines()[1].get_ydata()) == [50.2, 70.2]


def test_class_bars():
    probs = {"T=1": torch.tensor([0.7, 0.2, 0.1]), "T=4": torch.tensor([0.4, 0.3, 0.3])}
    fig = plots.class_bars(probs, CLASSES, title="soft targets", true_class=0)
    assert isinstance(fig, Figure) and title_of(fig) == "soft targets"
    check_axes(fig)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "class (true: cat)"
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES


def test_comparison_plot():
    per_seed = pd.DataFrame(
        {"student (scratch)": [80.0, 82.0], "student (KD)": [84.0, 85.0]},
        index=pd.Index([0, 1], name="seed"),
    )
    per_seed["gain (KD - scratch)"] = per_seed["student (KD)"] - per_seed["student (scratch)"]
    fig = plots.comparison_plot(per_seed, summarize(per_seed, per_seed.columns), title="KD?")
    assert isinstance(fig, Figure) and title_of(fig) == "KD?"
    check_axes(fig)
    (ax,) = fig.axes
    assert "accuracy (%)" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["student (scratch)", "student (KD)"]


def test_confusion_plot():
    matrix = torch.tensor([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    fig = plots.confusion_plot(matrix, CLASSES, title="confusion")
    assert isinstance(fig, Figure) and title_of(fig) == "confusion"
    check_axes(fig)
    ax = labelled_axes(fig)[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted(
        v for v in matrix.flatten().tolist() if v
    )


def test_reliability_plot():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 3, generator=g) * 2, torch.randint(0, 3, (40,), generator=g)
    fig = plots.reliability_plot({"student": calibration_bins(logits, labels)}, title="calib")
    assert isinstance(fig, Figure) and title_of(fig) == "calib"
    check_axes(fig)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "perfectly calibrated",
        "student",
    ]


def test_save_figure_writes_a_png(tmp_path):
    fig = plots.history_curves({"a": history_frame(0)}, title="saved")
    path = plots.save_figure(fig, tmp_path / "run", "curves")
    assert path == tmp_path / "run" / "figures" / "curves.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temp file left


def test_line_and_bar_plots():
    frame = pd.DataFrame({"with T^2": [1.0, 1.1], "without": [1.0, 0.25]}, index=[1, 2])
    fig = plots.line_plot(frame, title="grad", xlabel="T", ylabel="norm", logy=True)
    assert title_of(fig) == "grad" and fig.axes[0].get_yscale() == "log"
    check_axes(fig)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == list(frame.columns)
    values = pd.Series([0.2, 0.5, 0.9], index=["c0", "c1", "c2"])
    fig = plots.bar_plot(values, title="SE", xlabel="channel", ylabel="weight", spread=values / 10)
    assert title_of(fig) == "SE"
    check_axes(fig)
    assert [round(p.get_height(), 6) for p in fig.axes[0].patches] == values.tolist()


def test_attention_grid_normalises_each_map():
    images = torch.randint(0, 255, (2, 1, 8, 8), dtype=torch.uint8)
    maps = {"teacher": torch.rand(2, 4, 4), "student": torch.rand(2, 4, 4) * 5}
    fig = plots.attention_grid(images, maps, title="attention", captions=["a", "b"])
    assert title_of(fig) == "attention"
    shown = [im.get_array() for ax in fig.axes for im in ax.get_images()][2:]  # after images
    assert len(shown) == 4
    for array in shown:
        assert abs(float(array.sum()) - 1.0) < 1e-5, "each map shows shares that sum to 1"
