"""kdbook.widgets: pure view functions, and sliders that redraw (dummy comm, no kernel)."""

from __future__ import annotations

import io
import math
import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kdbook import widgets  # noqa: E402
from kdbook.data import UNLABELED  # noqa: E402
from kdbook.losses import kd_loss  # noqa: E402

CLASSES = [str(i) for i in range(10)]


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    teacher = 4 * torch.randn(16, 10, generator=g)
    student = torch.randn(16, 10, generator=g)
    targets = torch.randint(0, 10, (16,), generator=g)
    return student, teacher, targets


@pytest.fixture
def sweep_table() -> pd.DataFrame:
    rows = []
    for t in (1.0, 2.0, 4.0):
        for a in (0.5, 0.9):
            for seed in range(3):
                scratch = 80.0 + seed
                rows.append(
                    {
                        "temperature": t,
                        "alpha": a,
                        "seed": seed,
                        "scratch_accuracy": scratch,
                        "kd_accuracy": scratch + t + 10 * a + 0.5 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_entropy_one_hot_and_uniform() -> None:
    p = torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    torch.testing.assert_close(widgets.entropy(p), torch.tensor([0.0, math.log(3)]))


def test_temperature_view_entropy_grows_with_t(logits) -> None:
    student, teacher, _ = logits
    views = [widgets.temperature_view(teacher[:3], student[:3], t) for t in (1, 2, 4, 8, 16)]
    h = torch.stack([v["teacher_entropy"] for v in views])
    assert (h[1:] > h[:-1]).all()
    assert (h <= math.log(10) + 1e-6).all()
    for view in views:
        torch.testing.assert_close(view["teacher"].sum(1), torch.ones(3))
        assert view["student"].shape == (3, 10)
    assert "T = 16" in widgets.describe_temperature(views[-1])
    with pytest.raises(ValueError, match="student_logits must have"):
        widgets.temperature_view(teacher[:3], student[:2], 2.0)


def test_temperature_view_without_student(logits) -> None:
    _, teacher, _ = logits
    view = widgets.temperature_view(teacher[:2], None, 1.0)
    assert view["student"] is None
    torch.testing.assert_close(view["teacher"], teacher[:2].softmax(1))
    fig = widgets.draw_temperature(view, CLASSES, labels=[0, 1])
    assert len(fig.axes) == 2
    plt.close(fig)


def test_loss_view_matches_kd_loss_and_t2_scales_the_soft_gradient(logits) -> None:
    student, teacher, targets = logits
    for t in (1.0, 2.0, 4.0, 8.0):
        view = widgets.loss_view(student, teacher, targets, t, 0.7)
        table = view["table"]
        with_t2, without = table.loc["with T^2"], table.loc["without T^2"]
        assert with_t2["loss"] == pytest.approx(kd_loss(student, teacher, targets, t, 0.7).item())
        assert with_t2["soft"] == pytest.approx(t**2 * without["soft"], rel=1e-5)
        assert with_t2["soft grad norm"] == pytest.approx(
            t**2 * without["soft grad norm"], rel=1e-5
        )
        assert with_t2["hard"] == pytest.approx(without["hard"])
        assert list(view["curve"].columns) == ["with T^2", "without T^2"]


def test_loss_view_alpha_ends_and_unlabelled(logits) -> None:
    student, teacher, targets = logits
    only_soft = widgets.loss_view(student, teacher, targets, 4.0, 1.0)["table"]
    assert (only_soft["hard grad norm"] == 0).all()
    only_hard = widgets.loss_view(student, teacher, targets, 4.0, 0.0)["table"]
    assert (only_hard["soft grad norm"] == 0).all()
    hidden = torch.full_like(targets, UNLABELED)
    none_labelled = widgets.loss_view(student, teacher, hidden, 4.0, 0.5)["table"]
    assert (none_labelled["hard"] == 0).all()
    with pytest.raises(ValueError, match="alpha"):
        widgets.loss_view(student, teacher, targets, 4.0, 1.5)


def test_sweep_summary_and_view_pick_the_right_cell(sweep_table) -> None:
    summary = widgets.sweep_summary(sweep_table)
    assert len(summary) == 6
    view = widgets.sweep_view(summary, 2, 0.9)
    cell = view["cell"]
    # gain per seed = 2 + 9 + 0.5 * seed -> mean 11.5 over seeds 0, 1, 2
    assert cell["gain_mean"] == pytest.approx(11.5)
    assert cell["kd_mean"] == pytest.approx(81.0 + 11.5)
    assert cell["n"] == 3
    assert cell["gain_ci95"] > 0
    assert "KD helps" in widgets.describe_sweep(view)
    with pytest.raises(ValueError, match="temperature must be one of"):
        widgets.sweep_view(summary, 3.0, 0.5)
    mean, ci = widgets.sweep_difference(sweep_table, (4.0, 0.5), (1.0, 0.5))
    assert mean == pytest.approx(3.0) and ci == pytest.approx(0.0)


def test_sweep_view_of_a_missing_cell(sweep_table) -> None:
    table = sweep_table[~((sweep_table.temperature == 4.0) & (sweep_table.alpha == 0.9))]
    summary = widgets.sweep_summary(table)
    view = widgets.sweep_view(summary, 4.0, 0.9)
    assert view["cell"] is None
    assert "no result" in widgets.describe_sweep(view)
    plt.close(widgets.draw_sweep(view))


def test_sweep_table_needs_its_columns(sweep_table) -> None:
    with pytest.raises(ValueError, match="missing"):
        widgets.sweep_summary(sweep_table.drop(columns="seed"))


def _redraw_ms(compute, draw) -> tuple[float, float]:
    """Milliseconds to compute a view, and to draw and render it as the inline backend does."""
    start = time.perf_counter()
    view = compute()
    middle = time.perf_counter()
    fig = draw(view)
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    return 1000 * (middle - start), 1000 * (time.perf_counter() - middle)


def _slowly(fn, pause_ms: float):
    """``fn`` made slower by ``pause_ms`` milliseconds."""
    return lambda *args: (time.sleep(pause_ms / 1000), fn(*args))[1]


def test_redraw_timings(logits, sweep_table) -> None:
    """Measure (no wall-clock limit asserted): print with ``pytest -s``."""
    student, teacher, targets = logits
    summary = widgets.sweep_summary(sweep_table)
    cases = {
        "temperature": (
            lambda: widgets.temperature_view(teacher[:3], student[:3], 4.0),
            lambda v: widgets.draw_temperature(v, CLASSES),
        ),
        "loss": (
            lambda: widgets.loss_view(student, teacher, targets, 4.0, 0.7),
            widgets.draw_loss,
        ),
        "sweep": (lambda: widgets.sweep_view(summary, 2.0, 0.5), widgets.draw_sweep),
    }
    for name, (compute, draw) in cases.items():
        _redraw_ms(compute, draw)  # warm-up: fonts, caches
        start = time.perf_counter()
        compute_ms, draw_ms = _redraw_ms(compute, draw)
        wall_ms = 1000 * (time.perf_counter() - start)
        print(f"{name} explorer: compute {compute_ms:.1f} ms, draw + PNG {draw_ms:.1f} ms")
        assert math.isfinite(compute_ms) and 0 < compute_ms and compute_ms + draw_ms <= wall_ms
        assert draw_ms > 0
        # each time covers its own step: a pause added to one step shows in that step's time
        pause_ms = 100
        slow_compute_ms, _ = _redraw_ms(_slowly(compute, pause_ms), draw)
        _, slow_draw_ms = _redraw_ms(compute, _slowly(draw, pause_ms))
        assert slow_compute_ms >= pause_ms and slow_draw_ms >= pause_ms


@pytest.mark.parametrize("name", ["temperature", "loss", "sweep"])
def test_moving_a_slider_redraws_with_the_new_value(name, logits, sweep_table) -> None:
    student, teacher, targets = logits
    if name == "temperature":
        box = widgets.temperature_explorer(teacher[:2], CLASSES, student_logits=student[:2])
    elif name == "loss":
        box = widgets.loss_explorer(student, teacher, targets)
    else:
        box = widgets.sweep_explorer(sweep_table)
    assert box.view is not None and len(box.redraw_seconds) == 1  # drawn once on creation
    slider = box.controls["temperature"]
    new = slider.options[-1][1]
    assert new != slider.value
    slider.value = new
    assert len(box.redraw_seconds) == 2
    assert box.view["temperature"] == new
    if name != "temperature":
        alpha = box.controls["alpha"]
        other = next(v for _, v in alpha.options if v != alpha.value)
        alpha.value = other
        assert box.view["alpha"] == other
        assert len(box.redraw_seconds) == 3
    assert plt.get_fignums() == []  # every drawn figure was closed


def test_explorer_starts_at_the_nearest_stop(logits) -> None:
    _, teacher, _ = logits
    box = widgets.temperature_explorer(
        teacher[:1], CLASSES, temperatures=(1, 2, 4), temperature=3.3
    )
    assert box.controls["temperature"].value == 4.0 == box.view["temperature"]
